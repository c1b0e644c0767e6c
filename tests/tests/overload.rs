//! Protecting OTS and the pod (issue 13): an OTS that stops reading, and thousands of sessions
//! trickling frames they never finish, cost takgate no more memory than its budget; every
//! frame that does not reach OTS is counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use takgate_tests::client::get;
use takgate_tests::cot::{stream_config, CotUpstream};
use takgate_tests::process::{raise_fd_limit, takgate_release_with_hooks, TakgateProcess};
use takgate_tests::proxy::base_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;
/// What the process itself may grow by besides the sessions' memory, which the budget bounds:
/// code paths run for the first time, the runtime's tables, the allocator's own records.
const PROCESS_GROWTH: u64 = 8 * MIB;

/// takgate's RSS grew by no more than the budget (and the process's own growth) from `before`
/// to its peak.
fn assert_within_budget(before: u64, peak: u64, budget: u64) {
    assert!(
        peak - before <= budget + PROCESS_GROWTH,
        "RSS grew by {} MiB, past the {} MiB budget and {} MiB for the process itself",
        (peak - before) / MIB,
        budget / MIB,
        PROCESS_GROWTH / MIB
    );
}

/// A position report of about 1 KiB, numbered.
fn report(client: usize, seq: usize) -> Vec<u8> {
    format!(
        "<event version=\"2.0\" uid=\"eud{client}\" type=\"a-f-G-U-C\" how=\"m-g\" \
time=\"2026-12-07T10:00:00Z\" start=\"2026-12-07T10:00:00Z\" stale=\"2026-12-07T10:05:00Z\">\
<point lat=\"0\" lon=\"0\" hae=\"0\" ce=\"9\" le=\"9\"/><detail><remarks>{seq} {}</remarks>\
</detail></event>",
        "x".repeat(800)
    )
    .into_bytes()
}

/// The plain CoT listener of these tests: framed, no TLS, no rate limits (the clients here
/// are meant to be fast), in front of `upstream`, with the memory budget `budget`.
fn config(upstream: SocketAddr, budget: &str, extra: &str) -> String {
    let pki = takgate_tests::certs::TestPki::new();
    format!(
        "{}\n[memory]\nstream_budget = \"{budget}\"\n{}",
        base_config("http://127.0.0.1:1"),
        stream_config(
            "cot",
            upstream,
            "plain",
            &pki,
            &format!(
                "max_connections = 20000\nupstream_send_buffer = \"4KiB\"\n{extra}\n[stream.limits]\nevents_per_second = 0\n\
                 bytes_per_second = 0\nupstream_queue = \"64KiB\"\n"
            ),
        )
    )
}

async fn shed_total(gate: &TakgateProcess) -> f64 {
    let mut total = 0.0;
    for reason in ["session_queue", "memory_budget", "session_end"] {
        total += gate
            .metric(
                "takgate_stream_frames_shed_total",
                &[("listener", "cot"), ("reason", reason)],
            )
            .await;
    }
    total
}

const CLIENTS: usize = 1000;
const FRAMES: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_stops_reading_costs_no_more_than_the_budget_and_every_shed_frame_is_counted(
) {
    raise_fd_limit(2 * CLIENTS);
    // OTS that accepts and never reads, with the smallest receive buffer the kernel allows,
    // so that what takgate writes stops being taken at once.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(2048).unwrap();
    let upstream = listener.local_addr().unwrap();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let holder = {
        let held = held.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                held.lock().unwrap().push(conn);
            }
        })
    };
    let budget = 64 * MIB;
    let gate = TakgateProcess::start_bin(
        &takgate_release_with_hooks(),
        &[],
        &config(upstream, "64MiB", ""),
    )
    .await;
    let addr = gate.stream("cot");
    let (rss_before, _) = gate.memory();

    // Every client writes all of its reports: takgate keeps reading while OTS does not.
    let clients = join_all((0..CLIENTS).map(|client| async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        for seq in 0..FRAMES {
            conn.write_all(&report(client, seq)).await.unwrap();
        }
        conn
    }));
    let clients = tokio::time::timeout(WAIT, clients)
        .await
        .expect("clients blocked: takgate stopped reading");
    let sent = (CLIENTS * FRAMES) as f64;
    let labels = [("listener", "cot"), ("direction", "to_upstream")];
    gate.wait_metric(
        "takgate_cot_frames_total",
        &labels,
        "every frame read",
        |v| v >= sent,
    )
    .await;
    let (_, peak) = gate.memory();
    let used = gate.metric("takgate_stream_memory_used_bytes", &[]).await;
    eprintln!(
        "{CLIENTS} clients x {FRAMES} frames, OTS not reading: RSS {} MiB before, peak {} MiB; \
         budget {} MiB, charged now {:.1} MiB",
        rss_before / MIB,
        peak / MIB,
        budget / MIB,
        used / MIB as f64
    );
    assert_within_budget(rss_before, peak, budget);
    assert!(used <= budget as f64);
    // What waited past each session's share of the budget (a quarter of it, split among the
    // 1,000 sessions: 16 KiB, less than the 64 KiB `upstream_queue`) was shed.
    let shed_for_budget = gate
        .metric(
            "takgate_stream_frames_shed_total",
            &[("listener", "cot"), ("reason", "memory_budget")],
        )
        .await;
    assert!(shed_for_budget > 0.0, "nothing shed");

    // OTS goes away: the sessions end, and what still waited for it is counted too. Every
    // frame read was written to OTS or shed.
    holder.abort();
    held.lock().unwrap().clear();
    gate.wait_metric(
        "takgate_stream_connections_open",
        &[("listener", "cot")],
        "every session ended",
        |v| v == 0.0,
    )
    .await;
    let written = gate
        .metric(
            "takgate_cot_relay_latency_seconds_count",
            &[("listener", "cot")],
        )
        .await;
    let shed = shed_total(&gate).await;
    assert_eq!(written + shed, sent, "{written} written + {shed} shed");
    drop(clients);
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_sessions_trickling_unfinished_frames_stay_within_the_budget() {
    // Each session is two descriptors in takgate and two here (client and upstream side).
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let sessions = 10_000.min((usize::try_from(hard).unwrap_or(usize::MAX) - 1100) / 2);
    if sessions < 10_000 {
        eprintln!(
            "{sessions} sessions, not 10,000: the descriptor limit (ulimit -Hn) is {hard}, and \
             10,000 sessions need 2 x 10,000 + 1,100 in takgate and in this test"
        );
    }
    raise_fd_limit(2 * sessions);
    let ots = CotUpstream::start().await;
    let budget = 64 * MIB;
    let gate = TakgateProcess::start_bin(
        &takgate_release_with_hooks(),
        &[],
        &config(ots.addr, "64MiB", "idle_timeout = \"10m\""),
    )
    .await;
    let addr = gate.stream("cot");
    let (rss_before, _) = gate.memory();

    // Every session begins a frame it never finishes, then adds to it.
    let start = b"<event version=\"2.0\" uid=\"slow\" type=\"a-f-G\" how=\"m-g\" \
time=\"2026-12-07T10:00:00Z\" start=\"2026-12-07T10:00:00Z\" stale=\"2026-12-07T10:05:00Z\">\
<detail><remarks>";
    let connecting = Arc::new(Semaphore::new(256));
    let clients = join_all((0..sessions).map(|_| {
        let connecting = connecting.clone();
        async move {
            let _turn = connecting.acquire().await.unwrap();
            let mut conn = TcpStream::connect(addr).await.ok()?;
            conn.write_all(start).await.ok()?;
            Some(conn)
        }
    }));
    let mut clients: Vec<TcpStream> = tokio::time::timeout(WAIT, clients)
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    // The sessions admitted fill the budget: readiness says why new ones are refused.
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = get(gate.admin(), "/readyz", &[]).await.text();
        if ready.contains("stream memory budget exhausted") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never named the budget: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each adds 16 KiB every 100 ms towards a `max_frame` (1 MiB) frame, and stops at its first
    // failed write (its session was closed).
    let chunk = vec![b'x'; 16 * 1024];
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..64 {
        pace.tick().await;
        let writes = join_all(clients.iter_mut().map(|c| {
            let chunk = &chunk;
            async move {
                matches!(
                    tokio::time::timeout(Duration::from_secs(5), c.write_all(chunk)).await,
                    Ok(Ok(()))
                )
            }
        }));
        let alive = tokio::time::timeout(WAIT, writes).await.unwrap();
        let mut alive = alive.into_iter();
        clients.retain(|_| alive.next().unwrap_or(false));
        if clients.is_empty() {
            break;
        }
    }
    // The budget acted: sessions refused at the door, or closed when they could not grow.
    let refused = gate
        .wait_metric(
            "takgate_stream_refused_total",
            &[("listener", "cot"), ("reason", "memory_budget")],
            "sessions refused for the budget",
            |v| v > 0.0,
        )
        .await;
    let closed = gate
        .metric(
            "takgate_stream_sessions_closed_total",
            &[("listener", "cot"), ("reason", "memory_budget")],
        )
        .await;
    let (_, peak) = gate.memory();
    eprintln!(
        "{sessions} trickling sessions: {refused} refused and {closed} closed for the budget, \
         {} still writing; RSS {} MiB before, peak {} MiB; budget {} MiB",
        clients.len(),
        rss_before / MIB,
        peak / MIB,
        budget / MIB
    );
    assert_within_budget(rss_before, peak, budget);

    // The tricklers leave (and OTS's side of their sessions with them): the budget is free
    // again and a session relays (the control).
    drop(clients);
    let deadline = Instant::now() + WAIT;
    while gate
        .metric("takgate_stream_connections_open", &[("listener", "cot")])
        .await
        > 0.0
    {
        while ots.try_accept().await.is_some() {}
        assert!(Instant::now() < deadline, "sessions still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.wait_metric(
        "takgate_stream_memory_used_bytes",
        &[],
        "the budget given back",
        |v| v == 0.0,
    )
    .await;
    let ready = get(gate.admin(), "/readyz", &[]).await.text();
    assert!(!ready.contains("stream memory budget exhausted"), "{ready}");
    let mut eud = TcpStream::connect(addr).await.unwrap();
    let frame = report(0, 0);
    eud.write_all(&frame).await.unwrap();
    // OTS's side of the tricklers' sessions may still be in the queue of connections handed
    // over: the control's is the one that carries its frame.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut upstream = ots.accept().await;
        let mut got = vec![0u8; frame.len()];
        let read =
            tokio::time::timeout(Duration::from_secs(5), upstream.read_exact(&mut got)).await;
        if matches!(read, Ok(Ok(_))) {
            assert_eq!(got, frame);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the control's frame never reached OTS"
        );
    }
}
