//! Property tests over generated events and arbitrary bytes.

use proptest::prelude::*;

use super::trusted::SMUGGLED_GRANTS;
use super::*;

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
