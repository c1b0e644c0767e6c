//! The `loadtest` binary itself: the sink's address line and summary, the JSON report on
//! stdout and in a file, progress lines, `certs`, and refusals with a non-zero exit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};

use loadtest::report::Report;

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

#[test]
fn sink_and_cot_binaries_report_json_and_progress() {
    let mut sink = Command::new(BIN)
        .args(["sink", "--echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first stdout line is the bound address (waiting on it is waiting on the bind).
    let mut line = String::new();
    BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let announce: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(announce["mode"], "cot");
    assert_eq!(announce["echo"], true);
    let addr = announce["addr"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let json_file = dir.path().join("report.json");
    // 1.5 s at 20 messages/s per client: long enough for a progress line.
    let out = Command::new(BIN)
        .args([
            "--threads",
            "1",
            "cot",
            "--plain",
            "--target",
            &addr,
            "-n",
            "2",
        ])
        .args([
            "--rate-per-client",
            "20",
            "--duration",
            "1500ms",
            "--format",
            "json",
        ])
        .arg("--json")
        .arg(&json_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("conns 2 open (2 ok, 0 failed)"), "{stderr}");
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    let file: Report = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(report, file);
    assert_eq!(report.errors_total, 0);
    // 2 clients × 20/s × 1.5 s, each client's first send offset within its first interval.
    assert!((59..=61).contains(&report.ops.sent), "{}", report.ops.sent);
    assert_eq!(report.ops.ok, report.ops.sent);

    // SIGTERM: the sink exits and prints what it saw.
    let kill = Command::new("kill")
        .args(["-TERM", &sink.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(sink.wait().unwrap().success());
    let mut summary = String::new();
    sink.stderr
        .take()
        .unwrap()
        .read_to_string(&mut summary)
        .unwrap();
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(summary["frames"], report.ops.sent);
    assert_eq!(summary["connections"], 2);
}

#[test]
fn table_output_and_certs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--clients", "2", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let pki: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pki["clients"].as_array().unwrap().len(), 2);
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client-2.pem",
        "client-2.key",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }

    // A refused port: connect errors in the table, exit 0 (the run itself worked).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "cot",
            "--plain",
            "-q",
            "-n",
            "3",
            "--duration",
            "100ms",
            "--target",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("errors                3 (connect 3)"),
        "{table}"
    );
    assert!(table.contains("p99.9"), "{table}");
}

#[test]
fn refusals_exit_non_zero_with_a_reason() {
    let out = Command::new(BIN)
        .args(["cot", "--plain", "--target", "192.0.2.10:8089"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");

    let out = Command::new(BIN)
        .args(["http", "--url", "http://127.0.0.1:1/", "--rate", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");

    let out = Command::new(BIN)
        .args(["cot", "--target", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca"), "TLS without certificates: {err}");
}
