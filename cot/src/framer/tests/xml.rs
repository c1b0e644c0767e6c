//! XML edge cases and refused input.

use super::*;

// --- XML edge cases ---

/// `case` is refused as malformed, for good, whole and byte by byte.
fn assert_malformed(case: &[u8]) {
    for size in [1, case.len()] {
        let out = run_chunked(case, size, DEFAULT_MAX_FRAME, MalformedPolicy::Close);
        assert!(
            matches!(
                out.as_slice(),
                [Outcome::Error(FrameErrorKind::Malformed, _, true)]
            ),
            "{}: {out:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn a_root_end_tag_with_space_before_its_gt_is_refused() {
    // `</event >` is valid XML, but OTS splits streams on the literal `</event>`.
    assert_malformed(b"<event type='a-f'><detail></detail ></event\n>");
    assert_malformed(b"<auth><cot uid='x'/></auth >");
    // Inside the root it does not matter.
    let ok = b"<event type='a-f'><detail></detail \t></event>";
    assert_eq!(single(ok).bytes().as_ref(), ok);
}

#[test]
fn a_raw_lt_in_an_attribute_value_is_refused() {
    // Not well-formed XML, though quick-xml reads it; OTS and other clients split on `</event>`.
    assert_malformed(
        b"<event type='a-f' how='</event><event type=\"t-x-takp-r\">'><detail/></event>",
    );
    assert_malformed(b"<event type='a-f'><detail><contact callsign=\"a<b\"/></detail></event>");
}

#[test]
fn a_raw_lt_in_a_tag_name_is_refused() {
    // quick-xml takes `<x</event>` for a start tag named `x</event`, closed by `</x</event>`:
    // the frame is one element to it, two messages to whoever splits on `</event>` (found by
    // the framer_differential fuzz target).
    assert_malformed(
        b"<event type='a-f'><detail><x</event><event type='t-x-takp-r'><TakResponse           status='true'/></event>></x</event>></detail></event>",
    );
    assert_malformed(b"<event type='a-f'><detail><a<b/></detail></event>");
    assert_malformed(b"<event type='a-f'><detail><a b<c='1'/></detail></event>");
}

#[test]
fn end_event_inside_cdata_comment_and_text_does_not_split() {
    let cases: &[&[u8]] = &[
        b"<event type='a-f'><detail><![CDATA[</event><event>]]]]></detail></event>",
        b"<event type='a-f'><detail><!-- </event> <event> --></detail></event>",
        b"<event type='a-f' how='m-g' remarks=\"a > b\"><detail x='>'/></event>",
        b"<event type='a-f'><remarks>a &gt; b &lt;/event&gt; &#x41;&#66;&amp;</remarks></event>",
    ];
    for case in cases {
        for size in [1, 2, 5, case.len()] {
            assert_eq!(
                run_chunked(case, size, DEFAULT_MAX_FRAME, MalformedPolicy::Close),
                vec![frame_outcome(case, FrameKind::Event, "a-f")],
                "{} in chunks of {size}",
                String::from_utf8_lossy(case)
            );
        }
    }
}

#[test]
fn self_closing_event_and_nested_elements() {
    let empty = b"<event version='2.0' uid='x' type='b-t-f'/>";
    assert_eq!(single(empty).class().as_str(), "b-t");
    let nested = b"<event type='a-h'><detail><a><b><c/></b></a><a/></detail></event>";
    assert_eq!(single(nested).bytes().as_ref(), nested);
}

#[test]
fn whitespace_between_frames_belongs_to_none_but_prolog_whitespace_is_kept() {
    let one = b"<event type='a-f'/>";
    let two = b"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n<!-- c -->\r\n<event type='b-m'>\n</event>";
    let three = b"<!-- prolog comment --><auth><cot username='u'/></auth>";
    let mut input = b" \r\n\t".to_vec();
    input.extend_from_slice(one);
    input.extend_from_slice(b"\n\n  ");
    input.extend_from_slice(two);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(three);
    input.extend_from_slice(b"\n  \n");
    let expected = vec![
        frame_outcome(one, FrameKind::Event, "a-f"),
        frame_outcome(two, FrameKind::Event, "b-m"),
        frame_outcome(three, FrameKind::Auth, "other"),
    ];
    for size in [1, 3, input.len()] {
        let mut f = framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close);
        assert_eq!(
            run(&mut f, input.chunks(size)),
            expected,
            "chunks of {size}"
        );
        assert_eq!(f.buffered_len(), 0, "trailing whitespace is dropped");
    }
}

#[test]
fn multibyte_utf8_split_at_every_offset() {
    let event = "<?xml version='1.0'?>\n<event type='a-f' uid='日本-𝄞'><detail><contact callsign='Zoë 🚁'/>\
                 <remarks>déjà vu — 𝄞 日本語 \u{FEFF}</remarks></detail></event>"
        .as_bytes();
    for split in 0..=event.len() {
        let (a, b) = event.split_at(split);
        // The empty chunk asks for a frame again with nothing new: the scanner must not lose
        // its place (just after a `?`, say).
        let got = run(
            &mut framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close),
            [a, b"", b],
        );
        assert_eq!(
            got,
            vec![frame_outcome(event, FrameKind::Event, "a-f")],
            "split at {split}"
        );
    }
    assert_eq!(single(event).uid(), Some("日本-𝄞"));
}

#[test]
fn byte_order_mark_in_text_does_not_shift_error_offsets() {
    // quick-xml strips a BOM at the start of what it is given without counting it.
    let input = "<event type='a-f'><a>\u{FEFF}</b></event>".as_bytes();
    let err = first_error(input, MalformedPolicy::Close);
    assert!(
        matches!(err.reason(), Reason::MismatchedEnd { .. }),
        "{err}"
    );
    let at = input.windows(4).position(|w| w == b"</b>").unwrap() as u64;
    assert_eq!(err.offset(), at);
}

// --- refused input ---

#[test]
fn doctype_is_refused_anywhere() {
    for input in [
        &b"<?xml version='1.0'?><!DOCTYPE event><event/>"[..],
        b"<!doctype event SYSTEM 'file:///etc/passwd'><event/>",
        b"<event type='a-f'><detail><!DOCTYPE x></detail></event>",
        b"<!D",
    ] {
        let err = first_error(input, MalformedPolicy::Close);
        assert_eq!(
            err.kind(),
            FrameErrorKind::Doctype,
            "{}",
            String::from_utf8_lossy(input)
        );
        assert!(err.is_terminal());
    }
    let err = first_error(b"<!ELEMENT x ANY><event/>", MalformedPolicy::Close);
    assert_eq!(err.kind(), FrameErrorKind::Malformed);
}

#[test]
fn raw_control_characters_are_malformed_but_tab_cr_lf_are_not() {
    for input in [
        &b"<event type='a-f'><detail>\x00</detail></event>"[..],
        b"<event type='a-f' uid='a\x01b'/>",
        b"<event type='a-f'><!-- \x1b[2J --></event>",
        b"<event type='a-f'><![CDATA[\x08]]></event>",
    ] {
        let err = first_error(input, MalformedPolicy::Drop);
        assert!(
            matches!(err.reason(), Reason::ControlChar(_)),
            "{}: {err}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(err.kind(), FrameErrorKind::Malformed);
        let at = input.iter().position(|&b| b < 0x20).unwrap() as u64;
        assert_eq!(err.offset(), at);
    }
    // Between prolog and root the scanner already refuses anything but whitespace.
    let prolog = first_error(b"<?xml version='1.0'?>\x0c<event/>", MalformedPolicy::Drop);
    assert_eq!(prolog.kind(), FrameErrorKind::Malformed);
    let fine = b"<event type='a-f'>\t<detail>a\r\nb</detail>\n</event>";
    for size in [1, 3, fine.len()] {
        assert_eq!(
            run_chunked(fine, size, DEFAULT_MAX_FRAME, MalformedPolicy::Close),
            vec![frame_outcome(fine, FrameKind::Event, "a-f")]
        );
    }
}

#[test]
fn billion_laughs_is_a_doctype_error_not_an_expansion() {
    let mut bomb =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    let mut previous = String::from("lol");
    for i in 1..=9 {
        let refs = format!("&{previous};").repeat(10);
        bomb.push_str(&format!(" <!ENTITY lol{i} \"{refs}\">\n"));
        previous = format!("lol{i}");
    }
    bomb.push_str("]>\n<event type='a-f'><remarks>&lol9;</remarks></event>");
    let mut f = framer(DEFAULT_MAX_FRAME, MalformedPolicy::Drop);
    let out = run(&mut f, bomb.as_bytes().chunks(7));
    let doctype_at = bomb.find("<!DOCTYPE").unwrap() as u64;
    // Then the resynchronised event fails on its undeclared entity: nothing was expanded.
    assert_eq!(
        out,
        vec![
            Outcome::Error(FrameErrorKind::Doctype, doctype_at, false),
            Outcome::Error(
                FrameErrorKind::Malformed,
                bomb.find("&lol9;").unwrap() as u64,
                false
            ),
        ]
    );
    assert!(f.buffered_len() < 16);
}

#[test]
fn undeclared_entities_are_errors_in_text_and_attributes() {
    let err = first_error(
        b"<event><remarks>&xxe;</remarks></event>",
        MalformedPolicy::Close,
    );
    assert!(
        matches!(err.reason(), Reason::UnknownEntity(name) if name == "xxe"),
        "{err}"
    );
    let err = first_error(b"<event type='&xxe;'/>", MalformedPolicy::Close);
    assert_eq!(err.kind(), FrameErrorKind::Malformed);
    let err = first_error(
        b"<event><remarks>a & b</remarks></event>",
        MalformedPolicy::Close,
    );
    assert_eq!(err.kind(), FrameErrorKind::Malformed);
}

#[test]
fn malformed_structures_have_their_reasons() {
    type IsReason = fn(&Reason) -> bool;
    let cases: &[(&[u8], IsReason)] = &[
        (b"<event><a></b></event>", |r| {
            matches!(r, Reason::MismatchedEnd { .. })
        }),
        (b"<event></a>", |r| {
            matches!(r, Reason::MismatchedEnd { .. })
        }),
        (b"</event>", |r| matches!(r, Reason::UnmatchedEnd(_))),
        (
            b"<html><body/></html>",
            |r| matches!(r, Reason::UnexpectedRoot(name) if name == "html"),
        ),
        (b"hello<event/>", |r| {
            matches!(r, Reason::TextOutsideElement)
        }),
        (b"<![CDATA[x]]><event/>", |r| {
            matches!(r, Reason::TextOutsideElement)
        }),
        (b"<!-- c --><?xml version='1.0'?><event/>", |r| {
            matches!(r, Reason::MisplacedDecl)
        }),
        (b"<event><?xml version='1.0'?></event>", |r| {
            matches!(r, Reason::MisplacedDecl)
        }),
        (b"<event a='1' a='2'/>", |r| matches!(r, Reason::Xml(_))),
        (b"<event><!-- a -- b --></event>", |r| {
            matches!(r, Reason::Xml(_))
        }),
        (b"<event>\xff\xfe</event>", |r| matches!(r, Reason::Xml(_))),
        (b"<event type='\xc3'/>", |r| matches!(r, Reason::Xml(_))),
        (b"<!x>", |r| matches!(r, Reason::Xml(_))),
    ];
    for (input, check) in cases {
        let err = first_error(input, MalformedPolicy::Close);
        assert_eq!(
            err.kind(),
            FrameErrorKind::Malformed,
            "{}",
            String::from_utf8_lossy(input)
        );
        assert!(
            check(err.reason()),
            "{}: {err}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn garbage_then_event_under_drop_and_close() {
    let event = b"<?xml version='1.0'?><event type='a-f'/>";
    let mut input = b"\x00\x01garbage </event> more <eventually".to_vec();
    input.extend_from_slice(event);
    let drop = vec![
        Outcome::Error(FrameErrorKind::Malformed, 0, false),
        frame_outcome(event, FrameKind::Event, "a-f"),
    ];
    for size in [1, 4, input.len()] {
        assert_eq!(
            run_chunked(&input, size, DEFAULT_MAX_FRAME, MalformedPolicy::Drop),
            drop
        );
    }

    let mut f = framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close);
    let out = run(&mut f, [input.as_slice()]);
    assert_eq!(
        out,
        vec![Outcome::Error(FrameErrorKind::Malformed, 0, true)]
    );
    f.push(event);
    assert_eq!(f.buffered_len(), 0);
    for _ in 0..3 {
        let err = f.next_frame().unwrap_err();
        assert!(err.is_terminal() && err.offset() == 0);
    }
}

#[test]
fn drop_resumes_after_a_bad_frame_in_the_middle() {
    let good = b"<event type='a-f'/>";
    let mut input = good.to_vec();
    input.extend_from_slice(b"<event type='a-h'><a></b></event>");
    input.extend_from_slice(good);
    let bad_at = input.windows(4).position(|w| w == b"</b>").unwrap() as u64;
    let expected = vec![
        frame_outcome(good, FrameKind::Event, "a-f"),
        Outcome::Error(FrameErrorKind::Malformed, bad_at, false),
        frame_outcome(good, FrameKind::Event, "a-f"),
    ];
    for size in [1, 9, input.len()] {
        assert_eq!(
            run_chunked(&input, size, DEFAULT_MAX_FRAME, MalformedPolicy::Drop),
            expected
        );
    }

    // A message cut short by the next one: the resumed frame keeps its declaration.
    let next = b"<?xml version='1.0'?><event type='b-t'/>";
    let mut input = b"<event type='a-f'><detail>".to_vec();
    input.extend_from_slice(next);
    let expected = vec![
        Outcome::Error(FrameErrorKind::Malformed, 26, false),
        frame_outcome(next, FrameKind::Event, "b-t"),
    ];
    for size in [1, input.len()] {
        assert_eq!(
            run_chunked(&input, size, DEFAULT_MAX_FRAME, MalformedPolicy::Drop),
            expected
        );
    }
}

#[test]
fn frame_larger_than_max_is_terminal_and_exact_size_passes() {
    let max = 100;
    let fits = {
        let mut e = b"<event type='a-f'><remarks>".to_vec();
        let tail = b"</remarks></event>";
        e.resize(max - tail.len(), b'x');
        e.extend_from_slice(tail);
        e
    };
    assert_eq!(fits.len(), max);
    assert_eq!(
        run_chunked(&fits, 1, max, MalformedPolicy::Drop),
        vec![frame_outcome(&fits, FrameKind::Event, "a-f")]
    );

    let mut open = b"<event type='a-f'><remarks>".to_vec();
    open.resize(max + 1, b'x');
    for size in [1, 10, open.len()] {
        let mut f = framer(max, MalformedPolicy::Drop);
        assert_eq!(
            run(&mut f, open[..max].chunks(size)),
            vec![],
            "nothing yet at {max} bytes"
        );
        assert_eq!(f.buffered_len(), max);
        f.push(&open[max..]);
        let err = f.next_frame().unwrap_err();
        assert_eq!(err.kind(), FrameErrorKind::TooLarge);
        assert!(err.is_terminal());
        assert_eq!(f.buffered_len(), 0);
    }

    // A huge tag never completes a token, and is caught all the same.
    let mut tag = b"<event type='".to_vec();
    tag.resize(10 * max, b'a');
    let out = run_chunked(&tag, 7, max, MalformedPolicy::Close);
    assert_eq!(out, vec![Outcome::Error(FrameErrorKind::TooLarge, 0, true)]);
}

#[test]
fn binary_junk_is_refused_without_panicking() {
    let mut junk = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let close = run_chunked(&junk, 1460, DEFAULT_MAX_FRAME, MalformedPolicy::Close);
    assert!(
        matches!(
            close.as_slice(),
            [Outcome::Error(FrameErrorKind::Malformed, _, true)]
        ),
        "{close:?}"
    );

    let mut f = framer(4096, MalformedPolicy::Drop);
    let drop = run(&mut f, junk.chunks(1460));
    assert!(!drop.is_empty());
    assert!(drop
        .iter()
        .all(|o| matches!(o, Outcome::Error(k, _, false) if *k != FrameErrorKind::TooLarge)));
    f.push(PING);
    let mut out = Vec::new();
    drain(&mut f, &mut out);
    assert_eq!(
        out.last(),
        Some(&frame_outcome(PING, FrameKind::Event, "t-x"))
    );
}

#[test]
fn deep_nesting_is_iterative_and_linear() {
    for (depth, chunk) in [(10_000, 1), (140_000, 16 * 1024)] {
        let mut event = b"<event type='a-f'><detail>".to_vec();
        event.extend(b"<a>".repeat(depth));
        event.extend(b"</a>".repeat(depth));
        event.extend_from_slice(b"</detail></event>");
        assert!(event.len() <= DEFAULT_MAX_FRAME);
        assert_eq!(
            run_chunked(&event, chunk, DEFAULT_MAX_FRAME, MalformedPolicy::Close),
            vec![frame_outcome(&event, FrameKind::Event, "a-f")]
        );
    }
}

#[test]
fn read_buf_is_an_append_only_view() {
    let mut f = Framer::new(FramerConfig::default());
    for chunk in PING.chunks(10) {
        let buf = f.read_buf(chunk.len());
        assert!(buf.capacity() - buf.len() >= chunk.len());
        buf.extend_from_slice(chunk);
    }
    assert_eq!(
        f.next_frame().unwrap().map(Frame::into_bytes).as_deref(),
        Some(PING)
    );

    f.push(b"<event");
    assert!(f.next_frame().unwrap().is_none());
    f.read_buf(0).clear();
    let err = f.next_frame().unwrap_err();
    assert!(matches!(err.reason(), Reason::BufferShrunk) && err.is_terminal());
}
