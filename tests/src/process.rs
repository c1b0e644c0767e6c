//! takgate as an operator runs it: the real binary in a child process, configured by a file,
//! its addresses read from `--bound-addrs`, driven by signals and judged by its exit status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use takgate::app::BoundAddrs;
use tokio::time::Instant;

use crate::client::get;

/// The takgate binary: `TAKGATE_BIN` when set (tests/run builds the binary and sets it),
/// otherwise built here with cargo, once per test process, so that a plain
/// `cargo nextest run` never runs a stale binary.
pub fn takgate_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("TAKGATE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_takgate(),
    })
    .clone()
}

fn build_takgate() -> PathBuf {
    cargo_build_takgate(&[], &[])
}

/// The takgate binary built with the release profile and the `test-hooks` feature (the panic
/// hook, `TAKGATE_TEST_INJECT_PANIC`), in a target folder of its own (`release-test-hooks`
/// beside the workspace's `release`) so that no hooked binary ever sits where release builds
/// go. Built once per test process; slow (a full optimised build) the first time.
///
/// `TAKGATE_RELEASE_TARGET` names another Rust target to build it for: tests/run sets
/// `x86_64-unknown-linux-musl` to run the memory tests against the shipped static build too,
/// whose allocator is not glibc's (proxy/src/allocator.rs).
pub fn takgate_release_with_hooks() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("release-test-hooks");
        let target = target.to_string_lossy().into_owned();
        let triple = std::env::var("TAKGATE_RELEASE_TARGET").ok();
        let mut args = vec![
            "--release",
            "--features",
            "test-hooks",
            "--target-dir",
            &target,
        ];
        if let Some(triple) = &triple {
            args.extend(["--target", triple]);
        }
        // The release profile's panic strategy is what is tested; its LTO and single codegen
        // unit only cost build minutes (and disk) on a test machine, so they are turned down.
        cargo_build_takgate(
            &args,
            &[
                ("CARGO_PROFILE_RELEASE_LTO", "off"),
                ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
                ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
            ],
        )
    })
    .clone()
}

fn cargo_build_takgate(extra: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "takgate",
            "--message-format=json-render-diagnostics",
        ])
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build -p takgate");
    assert!(out.status.success(), "cargo build -p takgate failed");
    out.stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "takgate")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .expect("cargo build -p takgate named no takgate executable")
}

/// A running takgate process; killed (SIGKILL) if the test ends without it having exited.
pub struct TakgateProcess {
    child: Child,
    pub addrs: BoundAddrs,
    /// Its config, bound-addresses file and log.
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl TakgateProcess {
    /// Writes `toml` (every listen address `127.0.0.1:0`), starts the binary on it and waits
    /// (bounded) for the addresses it bound.
    pub async fn start(toml: &str) -> Self {
        Self::start_bin(&takgate_bin(), &[], toml).await
    }

    /// As [`start`](Self::start), with another takgate binary and extra environment variables.
    pub async fn start_bin(bin: &Path, env: &[(&str, &str)], toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("takgate.toml");
        let bound = dir.path().join("bound.json");
        let log = dir.path().join("takgate.log");
        std::fs::write(&config, toml).expect("writing the config");
        let log_file = std::fs::File::create(&log).expect("creating the log");
        let child = Command::new(bin)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&config)
            .arg("--bound-addrs")
            .arg(&bound)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("spawning takgate");
        let mut me = Self {
            child,
            addrs: BoundAddrs {
                http: BTreeMap::new(),
                stream: BTreeMap::new(),
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            dir,
            log,
        };
        // A debug binary on a loaded machine can take a while to load its certificates.
        let deadline = Instant::now() + Duration::from_secs(30);
        let json = loop {
            if let Ok(text) = std::fs::read_to_string(&bound) {
                break text;
            }
            if let Some(status) = me.child.try_wait().expect("polling takgate") {
                panic!("takgate exited at startup with {status}:\n{}", me.log());
            }
            assert!(
                Instant::now() < deadline,
                "takgate wrote no bound addresses:\n{}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        me.addrs = parse_bound(&json);
        me
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.addrs.admin
    }

    /// The address of the `[[http]]` listener called `name`.
    pub fn http(&self, name: &str) -> SocketAddr {
        self.addrs.http[name]
    }

    /// The address of the `[[stream]]` listener called `name`.
    pub fn stream(&self, name: &str) -> SocketAddr {
        self.addrs.stream[name]
    }

    /// Sends `signal` (`TERM`, `HUP`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("polling takgate").is_none()
    }

    /// Waits (polling, at most `limit`) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling takgate") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "takgate still running {limit:?} later:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything takgate wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric from the admin endpoint, summed over the series whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let got = get(self.addrs.admin, "/metrics", &[]).await;
        assert_eq!(got.status, 200, "GET /metrics: {}", got.text());
        metric_value(&got.text(), name, labels)
    }

    /// Polls a metric until `done` holds of it, and returns it; fails the test after 60 s,
    /// saying `what` it waited for.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        what: &str,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(name, labels).await;
            if done(v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {name} is {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TakgateProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_bound(json: &str) -> BoundAddrs {
    let v: serde_json::Value = serde_json::from_str(json).expect("bound addresses are JSON");
    let addr = |v: &serde_json::Value| -> SocketAddr {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an address: {v}"))
    };
    let map = |key: &str| -> BTreeMap<String, SocketAddr> {
        v[key]
            .as_object()
            .map(|o| o.iter().map(|(k, a)| (k.clone(), addr(a))).collect())
            .unwrap_or_default()
    };
    BoundAddrs {
        http: map("http"),
        stream: map("stream"),
        admin: addr(&v["admin"]),
    }
}

/// The sum of the samples called `name` in Prometheus text whose labels include all of
/// `labels` (label values are taken as written, escapes and all).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let has = |k: &str, v: &str| {
                let pair = format!("{k}=\"{v}\"");
                series_labels.starts_with(&pair) || series_labels.contains(&format!(",{pair}"))
            };
            let matches = series_name == name && labels.iter().all(|(k, v)| has(k, v));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Raises the soft descriptor limit to what `need` connections (and some slack) take, or fails
/// saying what to raise: the hard limit (`ulimit -Hn`) must allow it.
pub fn raise_fd_limit(need: usize) {
    let want = (need + 1024) as u64;
    let got = rlimit::increase_nofile_limit(want).unwrap_or(0);
    assert!(
        got >= want,
        "this test needs {want} file descriptors but may only have {got}: raise `ulimit -n` \
         (the hard limit, `ulimit -Hn`, must be at least {want})"
    );
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_value_sums_the_matching_series() {
        let text = "# HELP x y\n# TYPE a counter\n\
            a{listener=\"web\",kind=\"x\"} 2\na{listener=\"web\",kind=\"y\"} 3\n\
            a{listener=\"other\",kind=\"x\"} 5\nab 7\na 1\nb{xkind=\"x\"} 1\n";
        assert_eq!(metric_value(text, "a", &[("listener", "web")]), 5.0);
        assert_eq!(metric_value(text, "a", &[("kind", "x")]), 7.0);
        assert_eq!(metric_value(text, "a", &[]), 11.0);
        assert_eq!(metric_value(text, "ab", &[]), 7.0);
        assert_eq!(metric_value(text, "b", &[("kind", "x")]), 0.0);
        assert_eq!(metric_value(text, "missing", &[]), 0.0);
    }
}
