//! 100 MB each way through takgate with bounded memory: bodies stream, they are never held
//! whole. One test in its own binary, so no other test's allocations blur the RSS reading.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use takgate_tests::client::{send, send_streaming, within};
use takgate_tests::proxy::{web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;

const TOTAL: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// The process's peak resident set since the last reset, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn current_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the peak to the current RSS (`clear_refs` value 5).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_megabytes_each_way_with_bounded_memory() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let addr = proxy.http("web");
    // Warm up allocator and pools, then measure from here.
    let _ = send(
        addr,
        Request::post("/api/upload")
            .body(Full::new(Bytes::from(vec![0u8; CHUNK])))
            .unwrap(),
    )
    .await;
    reset_peak();
    let base = current_rss();

    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    let n = TOTAL / CHUNK as u64;
    let upload = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let resp = send_streaming(
        addr,
        Request::post("/api/upload")
            .header("content-length", TOTAL.to_string())
            .body(StreamBody::new(upload))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = within(resp.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(body, TOTAL.to_string());
    assert_eq!(up.uploaded().last(), Some(&TOTAL));

    let resp = send_streaming(
        addr,
        Request::get(format!("/api/download?bytes={TOTAL}"))
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = within(body.frame()).await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, TOTAL);

    let growth = peak_rss().saturating_sub(base);
    assert!(
        growth < 32 * 1024 * 1024,
        "peak RSS grew by {} MiB while moving 2 x 100 MiB: bodies are being buffered",
        growth / (1024 * 1024)
    );
}
