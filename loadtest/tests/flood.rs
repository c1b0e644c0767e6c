//! One device flooding OTS (issue 13): a client sending 20,000 events/s through takgate's
//! plain CoT listener, with the default `[stream.limits]`, is held to its limit, and 100
//! normal clients beside it keep their relay latency: their p99 is compared with a run without
//! the flooder, in the same test, as a ratio.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use takgate_tests::process::{takgate_release_with_hooks, TakgateProcess};
use takgate_tests::proxy::base_config;

mod common;

use common::{run, run_ok, sink};

const ROUNDS: usize = 5;
/// Seconds the normal clients send in each run.
const SECONDS: u64 = 5;
const NORMAL_CLIENTS: u64 = 100;
const NORMAL_RATE: u64 = 10;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_held_to_its_limit_and_the_others_keep_their_latency() {
    let echo = sink("--echo").await;
    let config = format!(
        "{}\n[[stream]]\nname = \"cot\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\nmode = \"plain\"\n",
        base_config("http://127.0.0.1:1"),
        echo.addr
    );
    // The optimised binary, in a process of its own: a debug build's parse of a flooder's
    // batch would hold a worker for milliseconds, and an in-process takgate would share the
    // load generator's threads.
    let proxy = TakgateProcess::start_bin(&takgate_release_with_hooks(), &[], &config).await;
    let cot = proxy.stream("cot");
    let normal = format!(
        "cot --target {cot} --plain -n {NORMAL_CLIENTS} --rate-per-client {NORMAL_RATE} \
         --duration {SECONDS}s -q"
    );
    // Floods before the normal clients start and until after they end; its echoes come back
    // at the limit's pace, so it does not wait for them.
    let flood = format!(
        "cot --target {cot} --plain -n 1 --rate-per-client 20000 --payload pli --size 1024 \
         --duration {}s --drain 0s -q",
        SECONDS + 4
    );
    let to_upstream = [("listener", "cot"), ("direction", "to_upstream")];
    let delayed = [("listener", "cot"), ("action", "delayed")];

    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let r = run_ok(&normal).await;
        assert_eq!(r.errors_total, 0, "{}", r.table());
        alone.push(r.latency.unwrap().p99_ms);

        let frames_before = proxy.metric("takgate_cot_frames_total", &to_upstream).await;
        let delayed_before = proxy
            .metric("takgate_stream_rate_limited_total", &delayed)
            .await;
        let flood_started = tokio::time::Instant::now();
        let flooder = tokio::spawn({
            let flood = flood.clone();
            async move { run(&flood).await }
        });
        // The flood is on once takgate has held the flooder back a few times (its first burst
        // written, into the sockets' buffers).
        proxy
            .wait_metric(
                "takgate_stream_rate_limited_total",
                &delayed,
                "the flooder held back",
                |v| v >= delayed_before + 3.0,
            )
            .await;
        let r = run_ok(&normal).await;
        let f = flooder.await.unwrap().unwrap();
        // The flooder's connection lasted no longer than this.
        let flood_s = flood_started.elapsed().as_secs_f64();
        assert_eq!(r.errors_total, 0, "{}", r.table());
        assert_eq!(r.ops.received, r.ops.sent, "every normal event came back");
        beside.push(r.latency.unwrap().p99_ms);
        // Everything relayed to OTS in the run, less the normal clients' events, is the
        // flooder's: no more than its burst, its rate for as long as it was connected, and what
        // takgate has read when it pauses (a 16 KiB read completes at most 17 of its 1 KiB
        // events: 16 and the one the read before began; twice that as the margin).
        let relayed = proxy.metric("takgate_cot_frames_total", &to_upstream).await - frames_before;
        let flooder = relayed - r.ops.sent as f64;
        let allowed = 200.0 + 50.0 * flood_s + 34.0;
        eprintln!(
            "round {round}: normal p99 {:.3} ms alone, {:.3} ms beside the flooder; the flooder \
             wrote {} events in {flood_s:.1} s, {flooder} reached OTS (allowed {allowed:.0})",
            alone[round], beside[round], f.ops.sent
        );
        assert!(
            flooder <= allowed,
            "the flooder got {flooder} events to OTS"
        );
        assert!(
            f.ops.sent as f64 > 4.0 * allowed,
            "the flooder did not flood: {} events written",
            f.ops.sent
        );
        assert!(
            proxy
                .metric("takgate_stream_rate_limited_total", &delayed)
                .await
                > delayed_before
        );
    }
    let (alone, beside) = (median(alone), median(beside));
    eprintln!(
        "median normal p99: {alone:.3} ms alone, {beside:.3} ms beside the flooder ({:+.3} ms, \
         ratio {:.2})",
        beside - alone,
        beside / alone
    );
    assert!(
        beside <= alone * 1.5,
        "the flooder slowed the others: p99 {beside:.3} ms against {alone:.3} ms alone"
    );
}
