//! The trusted (OTS-to-client) framer.

use super::*;

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
pub(super) const SMUGGLED_GRANTS: [&str; 4] = [
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
