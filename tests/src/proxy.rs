//! takgate in-process: the test builds a config, takgate binds `127.0.0.1:0` and hands back the
//! bound addresses.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::proto::MetricType;
use prometheus::Registry;
use takgate::app::{App, BoundAddrs};
use takgate::config::Config;

/// A running takgate.
pub struct TestProxy {
    pub app: App,
    pub addrs: BoundAddrs,
    pub registry: Registry,
}

impl TestProxy {
    /// Starts takgate on `toml`, where every listen address should be `127.0.0.1:0`.
    pub async fn start(toml: &str) -> Self {
        let config = Config::parse(toml).expect("test config is valid");
        let registry = Registry::new();
        let app = App::new(config, registry.clone()).expect("app builds");
        let bound = app.bind().expect("bind");
        let addrs = app.start(bound).expect("start");
        Self {
            app,
            addrs,
            registry,
        }
    }

    /// The address of the `[[http]]` listener called `name`.
    pub fn http(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .http
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// The address of the `[[stream]]` listener called `name`.
    pub fn stream(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .stream
            .get(name)
            .unwrap_or_else(|| panic!("no stream listener {name}"))
    }

    /// A metric's value summed over the series whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let matches = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if !matches {
                    continue;
                }
                total += match family.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                    _ => 0.0,
                };
            }
        }
        total
    }

    /// Waits (bounded) until a metric reaches `want`; metrics of streamed responses are
    /// recorded when the body ends, a moment after the client has read it.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.metric(name, labels);
            if got == want {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{name}{labels:?} = {got}, want {want}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The common config prelude: upstream, admin on port 0, quiet access log.
pub fn base_config(upstream: &str) -> String {
    format!(
        r#"
[upstream]
url = "{upstream}"
connect_timeout = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
"#
    )
}

/// [`base_config`] plus one plain `web` listener named `web`; `extra` lines go into its table
/// (or start new tables after it).
pub fn web_config(upstream: &str, extra: &str) -> String {
    format!(
        r#"{}
[[http]]
name = "web"
listen = "127.0.0.1:0"
profile = "web"
ui_root = "/nonexistent-ui"
{extra}
"#,
        base_config(upstream)
    )
}

/// [`base_config`] plus a `web` listener named `web-tls` with `pki`'s server certificate and the
/// UI from `ui_root`; `extra` lines go into its table (before `[http.tls]`).
pub fn tls_web_config(
    upstream: &str,
    pki: &crate::certs::TestPki,
    ui_root: &std::path::Path,
    extra: &str,
) -> String {
    format!(
        "{}\n[[http]]\nname = \"web-tls\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n\
         ui_root = \"{}\"\n{extra}\n[http.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        base_config(upstream),
        ui_root.display(),
        pki.server_cert.display(),
        pki.server_key.display(),
    )
}
