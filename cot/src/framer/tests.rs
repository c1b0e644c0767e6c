use std::path::PathBuf;

use super::*;

mod properties;
mod proto;
mod trusted;
mod xml;

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

fn proto_framer(max_frame: usize, policy: MalformedPolicy) -> Framer {
    let mut f = framer(max_frame, policy);
    f.switch_to_protobuf();
    assert!(f.is_protobuf());
    f
}

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
