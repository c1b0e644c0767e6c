//! TAK protocol version 1 framing.

use super::*;

// --- TAK protocol version 1 ---

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
