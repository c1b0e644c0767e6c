use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

/// The ATAK samples copied from the public ATAK-CIV repository, with the class of each type.
const FIXTURES: &[(&str, &[u8], &str)] = &[
    (
        "drawing-circle",
        include_bytes!("../../tests/fixtures/cot/drawing-circle.cot"),
        "u-d",
    ),
    (
        "drawing-free-form",
        include_bytes!("../../tests/fixtures/cot/drawing-free-form.cot"),
        "u-d",
    ),
    (
        "drawing-rectangle",
        include_bytes!("../../tests/fixtures/cot/drawing-rectangle.cot"),
        "u-d",
    ),
    (
        "geo-fence",
        include_bytes!("../../tests/fixtures/cot/geo-fence.cot"),
        "u-d",
    ),
    (
        "marker-2525",
        include_bytes!("../../tests/fixtures/cot/marker-2525.cot"),
        "a-u",
    ),
    (
        "marker-icon-set",
        include_bytes!("../../tests/fixtures/cot/marker-icon-set.cot"),
        "a-u",
    ),
    (
        "marker-spot",
        include_bytes!("../../tests/fixtures/cot/marker-spot.cot"),
        "b-m",
    ),
    (
        "range-bearing-bullseye",
        include_bytes!("../../tests/fixtures/cot/range-bearing-bullseye.cot"),
        "u-r",
    ),
    (
        "range-bearing-circle",
        include_bytes!("../../tests/fixtures/cot/range-bearing-circle.cot"),
        "u-r",
    ),
    // `u-rb-a`: a two-letter second atom is outside the closed label set.
    (
        "range-bearing-line",
        include_bytes!("../../tests/fixtures/cot/range-bearing-line.cot"),
        "other",
    ),
    (
        "route",
        include_bytes!("../../tests/fixtures/cot/route.cot"),
        "b-m",
    ),
    (
        "telestration",
        include_bytes!("../../tests/fixtures/cot/telestration.cot"),
        "u-d",
    ),
];

const PING: &[u8] =
    b"<event version=\"2.0\" uid=\"ANDROID-1-ping\" type=\"t-x-c-t\" how=\"h-g-i-g-o\" \
time=\"2024-01-01T00:00:00Z\" start=\"2024-01-01T00:00:00Z\" stale=\"2024-01-01T00:00:10Z\">\
<point lat=\"0.0\" lon=\"0.0\" hae=\"0.0\" ce=\"9999999\" le=\"9999999\"/><detail/></event>";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Frame(Vec<u8>, FrameKind, &'static str),
    Error(FrameErrorKind, u64, bool),
}

fn framer(max_frame: usize, malformed: MalformedPolicy) -> Framer {
    Framer::new(FramerConfig {
        max_frame,
        malformed,
    })
}

/// Drains the framer like the relay does; stops after a terminal error.
fn drain(f: &mut Framer, out: &mut Vec<Outcome>) -> bool {
    loop {
        match f.next_frame() {
            Ok(Some(frame)) => out.push(Outcome::Frame(
                frame.bytes().to_vec(),
                frame.kind(),
                frame.class().as_str(),
            )),
            Ok(None) => return false,
            Err(e) => {
                out.push(Outcome::Error(e.kind(), e.offset(), e.is_terminal()));
                if e.is_terminal() {
                    return true;
                }
            }
        }
    }
}

/// Feeds `chunks` one by one, checking the memory bound after every push and drain.
fn run<'a>(f: &mut Framer, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for chunk in chunks {
        let before = f.buffered_len();
        f.push(chunk);
        assert!(f.buffered_len() <= before + chunk.len());
        if drain(f, &mut out) {
            break;
        }
        let bound = f.max_frame.max(RESYNC_HOLD);
        assert!(f.buffered_len() <= bound, "{} held", f.buffered_len());
    }
    out
}

fn run_whole(bytes: &[u8], max_frame: usize, policy: MalformedPolicy) -> Vec<Outcome> {
    run(&mut framer(max_frame, policy), [bytes])
}

fn run_chunked(
    bytes: &[u8],
    size: usize,
    max_frame: usize,
    policy: MalformedPolicy,
) -> Vec<Outcome> {
    run(&mut framer(max_frame, policy), bytes.chunks(size.max(1)))
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut f = Framer::new(FramerConfig::default());
    f.push(bytes);
    let mut out = Vec::new();
    while let Some(frame) = f.next_frame().expect("well-formed input") {
        out.push(frame);
    }
    out
}

fn single(bytes: &[u8]) -> Frame {
    let mut all = frames(bytes);
    assert_eq!(all.len(), 1, "{:?}", String::from_utf8_lossy(bytes));
    all.remove(0)
}

fn first_error(bytes: &[u8], policy: MalformedPolicy) -> FrameError {
    let mut f = framer(DEFAULT_MAX_FRAME, policy);
    f.push(bytes);
    loop {
        match f.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error for {:?}", String::from_utf8_lossy(bytes)),
            Err(e) => return e,
        }
    }
}

fn frame_outcome(bytes: &[u8], kind: FrameKind, class: &'static str) -> Outcome {
    Outcome::Frame(bytes.to_vec(), kind, class)
}

fn proto_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![PROTO_MAGIC];
    let mut n = payload.len() as u64;
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(payload);
    out
}

// --- samples ---

#[test]
fn each_fixture_is_one_frame_with_its_class() {
    for (name, bytes, class) in FIXTURES {
        let frame = single(bytes);
        assert_eq!(frame.bytes().as_ref(), *bytes, "{name}");
        assert_eq!(frame.kind(), FrameKind::Event, "{name}");
        assert_eq!(frame.class().as_str(), *class, "{name}");
        assert!(!frame.is_ping() && frame.negotiation().is_none(), "{name}");
    }
    let spot = single(FIXTURES[6].1);
    assert_eq!(spot.uid(), Some("9405e320-9356-41c4-8449-f46990aa17f8"));
}

#[test]
fn concatenated_fixtures_come_out_in_order_under_any_chunk_size() {
    let all: Vec<u8> = FIXTURES
        .iter()
        .flat_map(|(_, b, _)| b.iter().copied())
        .collect();
    let expected: Vec<Outcome> = FIXTURES
        .iter()
        .map(|(_, b, class)| frame_outcome(b, FrameKind::Event, class))
        .collect();
    for size in [1, 2, 3, 7, 64, 1460, 16 * 1024, all.len()] {
        assert_eq!(
            run_chunked(&all, size, DEFAULT_MAX_FRAME, MalformedPolicy::Close),
            expected,
            "chunks of {size}"
        );
    }
}

#[test]
fn shared_samples_frame_whole_when_present() {
    let dir = std::env::var_os("COT_SAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cot-samples")
        });
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipping: no CoT samples at {} (set COT_SAMPLES_DIR)",
            dir.display()
        );
        return;
    };
    let mut seen = 0;
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == "cot") {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                single(&bytes).bytes().as_ref(),
                bytes.as_slice(),
                "{}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no .cot file in {}", dir.display());
}

// --- classes and control messages ---

#[test]
fn class_is_the_first_two_atoms_from_a_closed_set() {
    for (t, class) in [
        ("a-f-G-U-C", "a-f"),
        ("b-t-f", "b-t"),
        ("t-x-c-t", "t-x"),
        ("y-z", "y-z"),
        ("c-a", "c-a"),
        ("u-rb-a", "other"),
        ("a-F-G", "other"),
        ("A-f", "other"),
        ("x-f-G", "other"),
        ("a", "other"),
        ("a-", "other"),
        ("a-f-", "a-f"),
        ("", "other"),
        ("a-é", "other"),
    ] {
        assert_eq!(CotClass::from_type(t).as_str(), class, "{t}");
    }
    let labels: Vec<&str> = CotClass::all().map(CotClass::as_str).collect();
    assert_eq!(labels.len(), 157);
    assert_eq!(labels[0], "other");
    let distinct: std::collections::HashSet<&str> = labels.iter().copied().collect();
    assert_eq!(distinct.len(), 157);
    for class in CotClass::all().skip(1) {
        assert_eq!(CotClass::from_type(class.as_str()), class);
    }
}

#[test]
fn ping_and_negotiation_messages_are_recognised() {
    let ping = single(PING);
    assert!(ping.is_ping());
    assert_eq!(ping.class().as_str(), "t-x");
    assert_eq!(ping.uid(), Some("ANDROID-1-ping"));

    let pong = single(b"<event uid='takPong' type='t-x-c-t-r'/>");
    assert!(!pong.is_ping());

    let v = single(
        b"<event version='2.0' uid='protouid' type='t-x-takp-v' how='m-g'><point lat='0' lon='0'/>\
          <detail><TakControl><TakProtocolSupport version='1'/></TakControl></detail></event>",
    );
    assert_eq!(v.negotiation(), Some(Negotiation::Support));
    assert_eq!(
        v.negotiation().map(Negotiation::cot_type),
        Some("t-x-takp-v")
    );

    let q = single(b"<event type=\"t-x-takp-q\"><detail><TakControl><TakRequest version=\"1\"/></TakControl></detail></event>");
    assert_eq!(q.negotiation(), Some(Negotiation::Request));

    let yes = single(b"<event type=\"t-x-takp-r\"><detail><TakControl><TakResponse status=\"true\"/></TakControl></detail></event>");
    assert_eq!(
        yes.negotiation(),
        Some(Negotiation::Response { accepted: true })
    );

    let no = single(b"<event type=\"t-x-takp-r\"><detail><TakControl><TakResponse status=\"false\"/></TakControl></detail></event>");
    assert_eq!(
        no.negotiation(),
        Some(Negotiation::Response { accepted: false })
    );

    let bare = single(b"<event type=\"t-x-takp-r\"><detail/></event>");
    assert_eq!(
        bare.negotiation(),
        Some(Negotiation::Response { accepted: false })
    );

    // A TakResponse inside some other event says nothing about negotiation.
    let other =
        single(b"<event type=\"a-f-G\"><detail><TakResponse status=\"true\"/></detail></event>");
    assert_eq!(other.negotiation(), None);
}

#[test]
fn auth_frames_are_their_own_kind() {
    let auth = b"<auth><cot username=\"u\" password=\"p\" uid=\"x\"/></auth>";
    let frame = single(auth);
    assert_eq!(frame.kind(), FrameKind::Auth);
    assert_eq!(frame.class(), CotClass::OTHER);
    assert_eq!(frame.bytes().as_ref(), auth);
    assert_eq!(frame.uid(), None);
}

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

// --- TAK protocol version 1 ---

fn proto_framer(max_frame: usize, policy: MalformedPolicy) -> Framer {
    let mut f = framer(max_frame, policy);
    f.switch_to_protobuf();
    assert!(f.is_protobuf());
    f
}

#[test]
fn protobuf_frames_split_at_every_offset() {
    let frames: Vec<Vec<u8>> = vec![
        proto_frame(b""),
        proto_frame(&[0x0a, 0x03, b'a', b'b', b'c']),
        proto_frame(&[0x5a; 300]),
        proto_frame(&[0xbf; 20_000]),
    ];
    let stream: Vec<u8> = frames.concat();
    let expected: Vec<Outcome> = frames
        .iter()
        .map(|f| frame_outcome(f, FrameKind::Proto, "other"))
        .collect();
    for split in 0..=stream.len() {
        let (a, b) = stream.split_at(split);
        let got = run(
            &mut proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close),
            [a, b],
        );
        assert_eq!(got, expected, "split at {split}");
    }
    assert_eq!(
        run(
            &mut proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close),
            stream.chunks(1)
        ),
        expected
    );
}

#[test]
fn protobuf_bad_magic_length_and_varint() {
    let good = proto_frame(b"\x0a\x01x");

    let mut bad_magic = b"\n".to_vec();
    bad_magic.extend_from_slice(&good);
    let err = first_error(&bad_magic, MalformedPolicy::Close);
    assert_eq!(err.kind(), FrameErrorKind::Malformed);

    let mut f = proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close);
    let close = run(&mut f, [bad_magic.as_slice()]);
    assert_eq!(
        close,
        vec![Outcome::Error(FrameErrorKind::Malformed, 0, true)]
    );
    let mut f = proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Drop);
    let drop = run(&mut f, bad_magic.chunks(1));
    assert_eq!(
        drop,
        vec![
            Outcome::Error(FrameErrorKind::Malformed, 0, false),
            frame_outcome(&good, FrameKind::Proto, "other"),
        ]
    );

    // Declared length over the limit: refused from the header, before any payload.
    let mut f = proto_framer(1000, MalformedPolicy::Drop);
    f.push(&[PROTO_MAGIC, 0xe8, 0x07]);
    let err = f.next_frame().unwrap_err();
    assert_eq!(
        (err.kind(), err.is_terminal()),
        (FrameErrorKind::TooLarge, true)
    );
    // Header plus payload exactly at the limit passes.
    let exact = proto_frame(&vec![1u8; 1000 - 3]);
    assert_eq!(exact.len(), 1000);
    assert_eq!(
        run(
            &mut proto_framer(1000, MalformedPolicy::Close),
            exact.chunks(100)
        ),
        vec![frame_outcome(&exact, FrameKind::Proto, "other")]
    );

    // u64::MAX is a valid ten-byte varint, and far too large.
    let mut max = vec![PROTO_MAGIC];
    max.extend_from_slice(&[0xff; 9]);
    max.push(0x01);
    let err = run(
        &mut proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Drop),
        [max.as_slice()],
    );
    assert_eq!(err, vec![Outcome::Error(FrameErrorKind::TooLarge, 0, true)]);

    for bad in [
        [&[PROTO_MAGIC][..], &[0xff; 9], &[0x02]].concat(),
        [&[PROTO_MAGIC][..], &[0x80; 10], &[0x00]].concat(),
    ] {
        let mut f = proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Drop);
        let mut input = bad.clone();
        input.extend_from_slice(&good);
        let out = run(&mut f, input.chunks(1));
        assert_eq!(
            out,
            vec![
                Outcome::Error(FrameErrorKind::Malformed, 0, false),
                frame_outcome(&good, FrameKind::Proto, "other"),
            ],
            "{bad:x?}"
        );
    }
}

#[test]
fn switch_after_negotiation_reads_the_rest_as_protobuf() {
    let response = b"<event type='t-x-takp-r'><detail><TakControl><TakResponse status='true'/></TakControl></detail></event>";
    let proto = proto_frame(b"\x0a\x02hi");
    let mut input = response.to_vec();
    input.extend_from_slice(&proto);

    let mut f = Framer::new(FramerConfig::default());
    f.push(&input);
    let first = f.next_frame().unwrap().unwrap();
    assert_eq!(
        first.negotiation(),
        Some(Negotiation::Response { accepted: true })
    );
    f.switch_to_protobuf();
    let second = f.next_frame().unwrap().unwrap();
    assert_eq!(
        (second.kind(), second.bytes().as_ref()),
        (FrameKind::Proto, proto.as_slice())
    );
    assert!(f.next_frame().unwrap().is_none());
}

// --- trusted mode ---

fn trusted(max_frame: usize) -> Framer {
    Framer::trusted(FramerConfig {
        max_frame,
        malformed: MalformedPolicy::Close,
    })
}

/// Feeds `chunks` to a trusted framer; every frame it returns, and the error that ended it.
fn run_trusted<'a>(
    max_frame: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Frame>, Option<FrameError>) {
    let mut f = trusted(max_frame);
    let mut out = Vec::new();
    for chunk in chunks {
        f.push(chunk);
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        assert!(f.buffered_len() <= max_frame, "{} held", f.buffered_len());
    }
    (out, None)
}

fn fixture_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    for (_, bytes, _) in FIXTURES {
        stream.extend_from_slice(bytes);
        stream.extend_from_slice(b"\n");
    }
    stream.extend_from_slice(PING);
    stream
}

#[test]
fn trusted_frames_are_the_fixtures_under_any_chunk_size_with_their_classes() {
    let stream = fixture_stream();
    let mut expected: Vec<&str> = FIXTURES.iter().map(|(_, _, class)| *class).collect();
    expected.push("t-x");
    for size in [1, 2, 3, 7, 8, 9, 64, 777, stream.len()] {
        let (frames, err) = run_trusted(DEFAULT_MAX_FRAME, stream.chunks(size));
        assert!(err.is_none(), "chunk size {size}: {err:?}");
        let classes: Vec<&str> = frames.iter().map(|f| f.class().as_str()).collect();
        assert_eq!(classes, expected, "chunk size {size}");
        // The frames are the events, byte for byte: only the newlines between them dropped.
        let relayed: Vec<&[u8]> = frames.iter().map(|f| f.bytes().as_ref()).collect();
        let mut events: Vec<&[u8]> = FIXTURES.iter().map(|(_, bytes, _)| *bytes).collect();
        events.push(PING);
        assert_eq!(relayed, events, "chunk size {size}");
        assert!(frames.last().is_some_and(Frame::is_ping));
    }
}

#[test]
fn trusted_frames_read_type_and_uid_however_the_start_tag_is_written() {
    let (frames, err) = run_trusted(
        DEFAULT_MAX_FRAME,
        [
            &b"<?xml version='1.0'?>\n<event how=\"a>b\" uid = 'u-1'\n type=\"a-f-G\">\
            <detail/></event><event><detail/></event>"[..],
        ],
    );
    assert!(err.is_none());
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].class().as_str(), "a-f");
    assert_eq!(frames[0].uid(), Some("u-1"));
    assert_eq!(frames[0].kind(), FrameKind::Event);
    assert_eq!(
        (frames[1].class(), frames[1].uid()),
        (CotClass::OTHER, None)
    );
}

#[test]
fn trusted_frames_read_the_root_as_the_parser_does() {
    for event in [
        &b"<event version='2=' a/b='1' type='t-x-c-t' uid='u'><detail/></event>"[..],
        b"<event =ed='u' type='y-p' uid='x'/>",
        b"<event uid='x>y' how='a/>' type = \"b-t-f\"\n><detail/></event>",
        b"<event uid='u'\ttype='a-f-G'/>",
        b"<event type='t-x-takp-r'><TakControl><TakResponse x/y='1' status='true'/></TakControl></event>",
    ] {
        let mut validating = framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close);
        validating.push(event);
        let parsed = validating.next_frame().unwrap().expect("a valid event");
        let (frames, err) = run_trusted(DEFAULT_MAX_FRAME, [event]);
        assert!(err.is_none());
        let read = |f: &Frame| (f.class(), f.negotiation(), f.uid().map(str::to_owned));
        assert_eq!(read(&frames[0]), read(&parsed), "{}", String::from_utf8_lossy(event));
    }
}

#[test]
fn trusted_negotiation_switches_at_the_frame_boundary_byte_by_byte() {
    let support = b"<event type='t-x-takp-v'><detail><TakControl><TakProtocolSupport version='1'/></TakControl></detail></event>";
    let refused = b"<event type=\"t-x-takp-r\"><detail><TakControl><TakResponse status=\"false\"/></TakControl></detail></event>";
    let granted = b"<event type=\"t-x-takp-r\"><detail><TakControl><TakResponse status=\"true\"/></TakControl></detail></event>";
    let protos = [proto_frame(b"\x0a\x02hi"), proto_frame(&[b'<'; 300])];
    let mut input = [&support[..], refused, granted].concat();
    for p in &protos {
        input.extend_from_slice(p);
    }
    for size in [1, 5, input.len()] {
        let mut f = trusted(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for chunk in input.chunks(size) {
            f.push(chunk);
            while let Some(frame) = f.next_frame().unwrap() {
                // What the relay does: switch before asking for the frame after the grant.
                if frame.negotiation() == Some(Negotiation::Response { accepted: true }) {
                    f.switch_to_protobuf();
                }
                got.push((frame.negotiation(), frame.kind(), frame.bytes().to_vec()));
            }
        }
        let expected = vec![
            (
                Some(Negotiation::Support),
                FrameKind::Event,
                support.to_vec(),
            ),
            (
                Some(Negotiation::Response { accepted: false }),
                FrameKind::Event,
                refused.to_vec(),
            ),
            (
                Some(Negotiation::Response { accepted: true }),
                FrameKind::Event,
                granted.to_vec(),
            ),
            (None, FrameKind::Proto, protos[0].clone()),
            (None, FrameKind::Proto, protos[1].clone()),
        ];
        assert_eq!(got, expected, "chunk size {size}");
    }
}

#[test]
fn trusted_frames_are_bounded_by_max_frame() {
    let frame = b"<event type='a-f-G'><detail/></event>";
    // Exactly the limit passes, whole or byte by byte.
    for size in [1, frame.len()] {
        let (frames, err) = run_trusted(frame.len(), frame.chunks(size));
        assert!(err.is_none());
        assert_eq!(frames.len(), 1);
    }
    // One byte more is refused, for good, without holding more than the limit.
    for size in [1, 4, frame.len()] {
        let (frames, err) = run_trusted(frame.len() - 1, frame.chunks(size));
        let err = err.expect("too large");
        assert!(frames.is_empty());
        assert_eq!(err.kind(), FrameErrorKind::TooLarge);
        assert!(err.is_terminal());
    }
    // A stream that never ends a frame fails once it holds more than the limit.
    let mut f = trusted(64);
    f.push(&[b'x'; 64]);
    assert!(f.next_frame().unwrap().is_none());
    f.push(b"x");
    assert_eq!(f.next_frame().unwrap_err().kind(), FrameErrorKind::TooLarge);
    assert_eq!(f.buffered_len(), 0);
}

#[test]
fn trusted_mode_delimits_events_without_validating_and_parses_other_roots() {
    // Not XML the validating framer would take; the event still comes out whole.
    let event = &b"<event type='b-t'>\x01&nope;</event>"[..];
    let auth = &b"<auth><cot username='u' password='p' uid='x'/></auth>"[..];
    for (rest, error) in [
        // OTS never sends `<auth>`, but it is CoT: framed as the validating mode frames it.
        (auth, None),
        // Anything else rooted elsewhere is refused as the validating mode refuses it.
        (
            &b" junk <auth/></event>"[..],
            Some(FrameErrorKind::Malformed),
        ),
        (&b"</event>"[..], Some(FrameErrorKind::Malformed)),
    ] {
        let input = [event, rest].concat();
        for size in [1, input.len()] {
            let (frames, err) = run_trusted(DEFAULT_MAX_FRAME, input.chunks(size));
            assert_eq!(err.map(|e| e.kind()), error, "{rest:?}");
            let bytes: Vec<&[u8]> = frames.iter().map(|f| f.bytes().as_ref()).collect();
            let expected: &[&[u8]] = if error.is_none() {
                &[event, auth]
            } else {
                &[event]
            };
            assert_eq!(bytes, expected, "{rest:?}, chunk size {size}");
            assert_eq!(frames[0].class().as_str(), "b-t");
        }
    }
}

#[test]
fn trusted_frames_end_at_a_self_closing_root_without_waiting_for_more() {
    let frames: [&[u8]; 5] = [
        b"<event/>",
        b"<?xml version='1.0'?><!-- a comment: parsed --><event type='a-f-G'/>",
        b"<?xml version='1.0'?>\n<event type='a-f-G' how=\"a/>b\" uid='x>/'\n/>",
        b"<event uid=\"u\" type=\"b-t-f\" ></event>",
        b"<event type='t-x-c-t'\t/>",
    ];
    let stream = frames.join(&b"\n"[..]);
    for size in [1, 2, 5, stream.len()] {
        let mut f = trusted(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for chunk in stream.chunks(size) {
            f.push(chunk);
            while let Some(frame) = f.next_frame().unwrap() {
                got.push(frame.bytes().to_vec());
            }
        }
        // The last frame is out as soon as its `/>` is: nothing waits behind it.
        assert_eq!(got, frames, "chunk size {size}");
        assert_eq!(f.buffered_len(), 0);
    }
    let (frames, _) = run_trusted(DEFAULT_MAX_FRAME, [&b"<event uid='x' type='a-h-G'/>"[..]]);
    assert_eq!(frames[0].class().as_str(), "a-h");
}

/// The framer fuzz target's checks on one trusted stream, under both policies: the same outcome
/// whole and byte by byte, and every frame read back on its own is itself again.
fn assert_trusted_stable(stream: &[u8]) {
    for malformed in [MalformedPolicy::Close, MalformedPolicy::Drop] {
        let config = FramerConfig {
            max_frame: DEFAULT_MAX_FRAME,
            malformed,
        };
        let whole = run(&mut Framer::trusted(config), [stream]);
        let bytes = run(&mut Framer::trusted(config), stream.chunks(1));
        assert_eq!(whole, bytes, "{}", String::from_utf8_lossy(stream));
        for outcome in &whole {
            if let Outcome::Frame(frame, ..) = outcome {
                let again = run(&mut Framer::trusted(config), [frame.as_slice()]);
                assert_eq!(
                    again,
                    std::slice::from_ref(outcome),
                    "{}",
                    String::from_utf8_lossy(frame)
                );
            }
        }
    }
}

#[test]
fn trusted_framing_of_the_fuzz_findings_is_stable() {
    for stream in [
        // A self-closing root after a parsed frame.
        &b"junk <?xml version='0-0'?><event />pk <?xml version='0.0'?></event>\n<archive/>"[..],
        // A root closed twice.
        b"\n<event uid='u' type='t-x-c-t' ail/></event>",
        // A parsed frame followed by one to delimit.
        b"<event type='a'><detail><!-- </event> --></detail></event></event>",
        // `<auth>`, which only the parser frames.
        b"<event type='a'/><auth><cot username='u'/></auth> junk",
        // Names quick-xml reads that the attribute reader used to stop at.
        b"<event version='2=' a/b='1' type='t-x-c-t'><detail/></event>",
        b"<event =ed='u' type='y-p' uid='x'/>",
        // A raw `<` in a value, and a root end tag with space.
        b"<event how='h-g-i-g-detail/></event>\n<auth><cot'><detail/></event>",
        b"<event\r></event\n><event/>",
        // Markup in the declaration.
        b"<?xml version='1.K'?K0><event version=\"?xml '?><event version=\"\"/>",
    ] {
        assert_trusted_stable(stream);
    }
}

/// What a client may write in an event that OTS relays to the others, with a `</event>` in it
/// that is not the end of the event, followed by a grant of the protobuf protocol.
const SMUGGLED_GRANTS: [&str; 4] = [
    "<remarks><![CDATA[</event><event type='t-x-takp-r'><TakResponse status='true'/></event>]]></remarks>",
    "<!-- </event><event type='t-x-takp-r'><TakResponse status='true'/></event> -->",
    "<?note </event><event type='t-x-takp-r'><TakResponse status='true'/></event>?>",
    "<event type='a-f-G'></event><event type='t-x-takp-r'><TakResponse status='true'/></event>",
];

#[test]
fn trusted_mode_parses_frames_whose_end_tag_could_be_smuggled() {
    for smuggled in SMUGGLED_GRANTS {
        let event = format!("<event type='b-t-f' uid='x'><detail>{smuggled}</detail></event>");
        // Delimited again right after: a control character the parser would refuse goes through.
        let next = "<event type='t-x-c-t'>\u{1}</event>";
        let stream = format!("{event}\n{next}");
        for size in [1, 3, stream.len()] {
            let (frames, err) = run_trusted(DEFAULT_MAX_FRAME, stream.as_bytes().chunks(size));
            assert!(err.is_none(), "{smuggled}: {err:?}");
            let got: Vec<_> = frames
                .iter()
                .map(|f| (f.bytes().as_ref(), f.class().as_str(), f.negotiation()))
                .collect();
            assert_eq!(
                got,
                [
                    (event.as_bytes(), "b-t", None),
                    (next.as_bytes(), "t-x", None)
                ],
                "{smuggled}, chunk size {size}"
            );
        }
    }
    // Nor in what looks like a declaration.
    let forged = b"<?xml </event><event type='t-x-takp-r'><TakResponse status='true'/></event>?>\
        <event type='b-t-f'/>";
    for size in [1, forged.len()] {
        let (frames, _) = run_trusted(DEFAULT_MAX_FRAME, forged.chunks(size));
        assert!(
            frames.iter().all(|f| f.negotiation().is_none()),
            "{frames:?}"
        );
    }
    // Parsed frames are validated like the client's: a DOCTYPE is refused.
    let (frames, err) = run_trusted(DEFAULT_MAX_FRAME, [&b"<!DOCTYPE x><event/></event>"[..]]);
    assert!(frames.is_empty());
    assert_eq!(err.map(|e| e.kind()), Some(FrameErrorKind::Doctype));
}

// --- properties ---

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,:éü日本𝄞🚁\t\n]{0,24}"
}

fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

fn detail_part() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|t| format!("<contact callsign='{}'/>", escaped(&t))),
        text().prop_map(|t| format!("<remarks>{}</remarks>", escaped(&t))),
        "[a-z<>/é ]{0,20}".prop_map(|t| format!("<![CDATA[{t}]]>")),
        "[a-z<>/é ]{0,20}".prop_map(|t| format!("<!--{t} -->")),
        Just("<link uid='x' relation='p-p' remarks='a&amp;b &#x3c;/event&#62;'/>".to_owned()),
        prop::sample::select(SMUGGLED_GRANTS.to_vec()).prop_map(str::to_owned),
        (1usize..20).prop_map(|d| format!("{}{}", "<n>".repeat(d), "</n>".repeat(d))),
    ]
}

/// A valid event and the class label it must report.
fn generated_event() -> impl Strategy<Value = (Vec<u8>, &'static str)> {
    let types = prop::sample::select(vec![
        ("a-f-G-U-C", "a-f"),
        ("b-t-f", "b-t"),
        ("t-x-c-t", "t-x"),
        ("u-d-f", "u-d"),
        ("y-z-Z", "y-z"),
        ("x-custom", "other"),
        ("a-", "other"),
    ]);
    (
        any::<bool>(),
        types,
        "[a-zA-Z0-9-]{1,36}",
        prop::collection::vec(detail_part(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(decl, (t, class), uid, parts, empty)| {
            let mut s = String::new();
            if decl {
                s.push_str("<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n");
            }
            s.push_str(&format!(
                "<event version=\"2.0\" uid=\"{uid}\" type=\"{t}\" how=\"m-g\""
            ));
            if empty && parts.is_empty() {
                s.push_str("/>");
            } else {
                s.push_str("><point lat='1.5' lon='-2' hae='0' ce='9' le='9'/><detail>");
                s.extend(parts);
                s.push_str("</detail></event>");
            }
            (s.into_bytes(), class)
        })
}

fn any_event() -> impl Strategy<Value = (Vec<u8>, &'static str)> {
    prop_oneof![
        prop::sample::select(FIXTURES.to_vec()).prop_map(|(_, b, c)| (b.to_vec(), c)),
        generated_event(),
    ]
}

/// Splits `bytes` at the given cut points (taken modulo the length).
fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for p in points {
        out.push(&bytes[from..p]);
        from = p;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (a) + (b): any events, any whitespace between them, any chunking: the same frames, in
    /// order, as one push, and each is exactly the event's bytes.
    #[test]
    fn events_frame_the_same_under_any_chunking(
        events in prop::collection::vec((any_event(), "[ \t\r\n]{0,3}"), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for ((bytes, class), gap) in &events {
            stream.extend_from_slice(gap.as_bytes());
            stream.extend_from_slice(bytes);
            expected.push(frame_outcome(bytes, FrameKind::Event, class));
        }
        let whole = run_whole(&stream, DEFAULT_MAX_FRAME, MalformedPolicy::Close);
        prop_assert_eq!(&whole, &expected);
        let chunked = run(&mut framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close), cut(&stream, &cuts));
        prop_assert_eq!(chunked, expected);
    }

    /// (c): arbitrary bytes, chunking, limit and policy: no panic, the buffer stays within the
    /// limit plus one chunk (checked inside `run`), and the outcome does not depend on chunking.
    #[test]
    fn arbitrary_input_is_bounded_and_chunking_invariant(
        pieces in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            any_event().prop_map(|(b, _)| b),
            prop::sample::select(vec![
                &b"<event"[..], b"</event>", b"<auth>", b"<?xml version='1.0'?>", b"<!--", b"-->",
                b"<![CDATA[", b"]]>", b"'", b"\"", b">", b"<", b"<!D", b"&", b"\xbf", b"\n",
                b"/>", b"<event/>", b"<event a='/>'",
            ]).prop_map(<[u8]>::to_vec),
        ], 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
        max_frame in 0usize..3000,
        drop in any::<bool>(),
        proto in any::<bool>(),
        trusted in any::<bool>(),
    ) {
        let stream = pieces.concat();
        let policy = if drop { MalformedPolicy::Drop } else { MalformedPolicy::Close };
        let make = || {
            let config = FramerConfig { max_frame, malformed: policy };
            let mut f = if trusted { Framer::trusted(config) } else { Framer::new(config) };
            if proto {
                f.switch_to_protobuf();
            }
            f
        };
        let whole = run(&mut make(), [stream.as_slice()]);
        let chunked = run(&mut make(), cut(&stream, &cuts));
        prop_assert_eq!(whole, chunked);
    }

    /// (e): on what a validating framer accepts, the trusted framer returns the same frames,
    /// read the same way, under any chunking.
    #[test]
    fn trusted_frames_are_the_validated_frames(
        events in prop::collection::vec((any_event(), "[ \t\r\n]{0,3}"), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut stream = Vec::new();
        for ((bytes, _), gap) in &events {
            stream.extend_from_slice(gap.as_bytes());
            stream.extend_from_slice(bytes);
        }
        let read = |frames: Vec<Frame>| -> Vec<_> {
            frames
                .iter()
                .map(|f| (f.bytes().to_vec(), f.class(), f.negotiation(), f.uid().map(str::to_owned)))
                .collect()
        };
        let mut validating = framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close);
        validating.push(&stream);
        let mut expected = Vec::new();
        while let Some(frame) = validating.next_frame().unwrap() {
            expected.push(frame);
        }
        let (frames, err) = run_trusted(DEFAULT_MAX_FRAME, cut(&stream, &cuts));
        prop_assert!(err.is_none());
        prop_assert_eq!(read(frames), read(expected));
    }

    /// (d): protobuf frames under any chunking.
    #[test]
    fn protobuf_frames_the_same_under_any_chunking(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 1..10),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let frames: Vec<Vec<u8>> = payloads.iter().map(|p| proto_frame(p)).collect();
        let stream = frames.concat();
        let expected: Vec<Outcome> =
            frames.iter().map(|f| frame_outcome(f, FrameKind::Proto, "other")).collect();
        let chunked = run(&mut proto_framer(DEFAULT_MAX_FRAME, MalformedPolicy::Close), cut(&stream, &cuts));
        prop_assert_eq!(chunked, expected);
    }
}
