//! Framer throughput: frames/s and bytes/s for a ping, a typical position report, the largest
//! ATAK sample and protobuf frames, read in 1-byte, one-segment (1460) and 16 KiB chunks; and
//! two 1 MiB events fed one byte at a time, to show the cost stays linear. The `trusted_*`
//! benches frame the same XML as the OTS-to-client direction does (`Framer::trusted`).
//!
//! `cargo bench -p takgate-cot --bench framer` (add `-- --sample-count 10` for a quick run).

use cot::framer::{Framer, FramerConfig};
use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;

const CHUNKS: [usize; 3] = [1, 1460, 16 * 1024];
// Messages per measured stream: enough that per-stream setup does not show.
const MESSAGES: usize = 64;

const PING: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<event version=\"2.0\" uid=\"ANDROID-589520ccfcd20f01-ping\" type=\"t-x-c-t\" how=\"h-g-i-g-o\" \
time=\"2024-05-01T12:00:00.000Z\" start=\"2024-05-01T12:00:00.000Z\" stale=\"2024-05-01T12:00:10.000Z\">\
<point lat=\"0.0\" lon=\"0.0\" hae=\"0.0\" ce=\"9999999\" le=\"9999999\"/><detail/></event>";

// What ATAK sends every few seconds for its own position.
const POSITION: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<event version=\"2.0\" uid=\"ANDROID-589520ccfcd20f01\" type=\"a-f-G-U-C\" how=\"m-g\" \
time=\"2024-05-01T12:00:00.000Z\" start=\"2024-05-01T12:00:00.000Z\" stale=\"2024-05-01T12:06:00.000Z\">\
<point lat=\"38.85606343062312\" lon=\"-77.0563755018233\" hae=\"21.3\" ce=\"4.9\" le=\"9999999.0\"/>\
<detail><takv os=\"34\" version=\"4.10.0.57 (civ)\" device=\"GOOGLE PIXEL 7\" platform=\"ATAK-CIV\"/>\
<contact endpoint=\"*:-1:stcp\" phone=\"\" callsign=\"HOPE\"/><uid Droid=\"HOPE\"/>\
<precisionlocation altsrc=\"GPS\" geopointsrc=\"GPS\"/><__group role=\"Team Member\" name=\"Cyan\"/>\
<status battery=\"87\"/><track course=\"112.5\" speed=\"1.2\"/></detail></event>";

const LARGEST: &[u8] = include_bytes!("../tests/fixtures/cot/telestration.cot");

fn main() {
    divan::main();
}

fn repeated(message: &[u8]) -> Vec<u8> {
    message.repeat(MESSAGES)
}

fn proto_stream() -> Vec<u8> {
    // 300-byte payloads: a two-byte length varint, like most position reports in protobuf.
    let mut frame = vec![0xbf, 0xac, 0x02];
    frame.resize(3 + 300, 0x5a);
    repeated(&frame)
}

/// One event of about 1 MiB whose whole body is a single attribute value: the token that never
/// ends until the last byte, the worst case for re-scanning.
fn huge_attribute() -> Vec<u8> {
    let mut event = b"<event type='u-d-f-m' uid='big'><detail><link line='".to_vec();
    event.resize(1000 * 1024, b'x');
    event.extend_from_slice(b"'/></detail></event>");
    event
}

/// One event of about 1 MiB made of many small elements.
fn huge_detail() -> Vec<u8> {
    let mut event = b"<event type='b-m-r' uid='big'><detail>".to_vec();
    while event.len() < 1000 * 1024 {
        event.extend_from_slice(b"<link point='38.84335305982451,-77.05440032542333'/>\n");
    }
    event.extend_from_slice(b"</detail></event>");
    event
}

#[derive(Clone, Copy)]
enum Mode {
    Validating,
    Trusted,
    Protobuf,
}

/// Frames the whole stream in `chunk`-sized reads; returns the frame count.
fn frame_all(stream: &[u8], chunk: usize, mode: Mode, messages: usize) -> usize {
    let mut framer = match mode {
        Mode::Trusted => Framer::trusted(FramerConfig::default()),
        Mode::Validating | Mode::Protobuf => Framer::new(FramerConfig::default()),
    };
    if let Mode::Protobuf = mode {
        framer.switch_to_protobuf();
    }
    let mut frames = 0;
    for read in stream.chunks(chunk) {
        framer.push(read);
        while let Ok(Some(frame)) = framer.next_frame() {
            frames += 1;
            divan::black_box(frame);
        }
    }
    assert_eq!(frames, messages, "every message framed");
    frames
}

fn bench_n(bencher: Bencher<'_, '_>, stream: &[u8], chunk: usize, mode: Mode, messages: usize) {
    bencher
        .counter(BytesCount::new(stream.len()))
        .counter(ItemsCount::new(messages))
        .bench_local(|| frame_all(divan::black_box(stream), chunk, mode, messages));
}

fn bench(bencher: Bencher<'_, '_>, stream: &[u8], chunk: usize, mode: Mode) {
    bench_n(bencher, stream, chunk, mode, MESSAGES);
}

#[divan::bench(args = CHUNKS)]
fn ping(bencher: Bencher<'_, '_>, chunk: usize) {
    bench(bencher, &repeated(PING), chunk, Mode::Validating);
}

#[divan::bench(args = CHUNKS)]
fn position(bencher: Bencher<'_, '_>, chunk: usize) {
    bench(bencher, &repeated(POSITION), chunk, Mode::Validating);
}

#[divan::bench(args = CHUNKS)]
fn largest_sample(bencher: Bencher<'_, '_>, chunk: usize) {
    bench(bencher, &repeated(LARGEST), chunk, Mode::Validating);
}

#[divan::bench(args = CHUNKS)]
fn protobuf(bencher: Bencher<'_, '_>, chunk: usize) {
    bench(bencher, &proto_stream(), chunk, Mode::Protobuf);
}

#[divan::bench(args = [1, 16 * 1024])]
fn one_mib_attribute(bencher: Bencher<'_, '_>, chunk: usize) {
    bench_n(bencher, &huge_attribute(), chunk, Mode::Validating, 1);
}

#[divan::bench(args = [1, 16 * 1024])]
fn one_mib_of_elements(bencher: Bencher<'_, '_>, chunk: usize) {
    bench_n(bencher, &huge_detail(), chunk, Mode::Validating, 1);
}

#[divan::bench(args = CHUNKS)]
fn trusted_position(bencher: Bencher<'_, '_>, chunk: usize) {
    bench(bencher, &repeated(POSITION), chunk, Mode::Trusted);
}

#[divan::bench(args = CHUNKS)]
fn trusted_largest_sample(bencher: Bencher<'_, '_>, chunk: usize) {
    bench(bencher, &repeated(LARGEST), chunk, Mode::Trusted);
}
