use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;

use super::*;

/// Every profile, TLS with client auth, CORS and custom routes, with every key set.
const FULL: &str = r#"
client_cert_header = "X-Client-Cert"

[upstream]
url = "http://ots.internal:8081"
connect_timeout = "3s"
response_timeout = "90s"
health_path = "/api/status"
pool_idle_timeout = "2m"

[admin]
listen = "127.0.0.1:9200"

[log]
format = "json"
level = "takgate=debug,info"
access_log = false

[shutdown]
grace = "45s"
websocket_grace = "2s"

[socketio]
edge_heartbeat = false
client_timeout = "45s"

[[http]]
name = "redirect"
listen = "0.0.0.0:80"
profile = "redirect"
https_port = 8443

[[http]]
name = "web"
listen = "0.0.0.0:8080"
profile = "web"
ui_root = "/srv/ui"
max_body = "512MiB"
max_header_bytes = "64KiB"
max_headers = 200
header_read_timeout = "5s"
body_read_timeout = "30s"
max_connections = 500
server_name = "tak.example.org"

[http.cors]
allowed_origins = ["https://tak.example.org:8443", "https://*.example.org"]
allow_credentials = true
allowed_methods = ["GET", "POST"]
allowed_headers = ["Content-Type", "X-XSRF-Token"]
expose_headers = ["X-Total-Count"]
max_age = "1h"

[[http.route]]
prefix = "/hls"
upstream = "https://mediamtx:8888"
strip_prefix = true
tls_verify = false

[[http.route]]
prefix = "/grafana"
upstream = "http://grafana:3000/base"

[[http]]
name = "web-tls"
listen = "[::]:443"
profile = "web"

[http.tls]
cert = "/certs/server.pem"
key = "/certs/server.key"

[[http]]
name = "marti"
listen = "0.0.0.0:8443"
profile = "marti"

[http.tls]
cert = "/certs/server.pem"
key = "/certs/server.key"
client_ca = "/certs/ca.pem"
crl = "/certs/ca.crl"
client_auth = "required"
versions = ["1.3"]
handshake_timeout = "20s"

[[http]]
name = "enroll"
listen = "0.0.0.0:8446"
profile = "enroll"

[http.tls]
cert = "/certs/server.pem"
key = "/certs/server.key"
client_ca = "/certs/ca.pem"
client_auth = "optional"
"#;

/// A valid config with one web listener; `extra` is appended inside that `[[http]]` table.
fn web_with(extra: &str) -> String {
    format!("[[http]]\nname = \"web\"\nlisten = \"0.0.0.0:8080\"\nprofile = \"web\"\n{extra}\n")
}

/// A valid config with one TLS listener; `tls_extra` is appended inside `[http.tls]`.
fn tls_with(tls_extra: &str) -> String {
    web_with(&format!(
        "[http.tls]\ncert = \"/c/server.pem\"\nkey = \"/c/server.key\"\n{tls_extra}"
    ))
}

/// Asserts that `text` is rejected with a message containing every one of `needles`.
#[track_caller]
fn assert_rejected(text: &str, needles: &[&str]) {
    let err = match Config::parse(text) {
        Ok(c) => panic!("config accepted, expected an error naming {needles:?}:\n{text}\n{c:?}"),
        Err(e) => e.to_string(),
    };
    for needle in needles {
        assert!(
            err.contains(needle),
            "error does not mention {needle:?}:\n{err}\nconfig:\n{text}"
        );
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// === full example ===

#[test]
fn full_example_parses_every_key() {
    let c = Config::parse(FULL).unwrap();
    assert_eq!(c.client_cert_header, "X-Client-Cert");

    assert_eq!(c.upstream.url, "http://ots.internal:8081");
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.upstream.response_timeout, Duration::from_secs(90));
    assert_eq!(c.upstream.health_path, "/api/status");
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_secs(120));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9200"));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "takgate=debug,info");
    assert!(!c.log.access_log);
    assert_eq!(c.shutdown.grace, Duration::from_secs(45));
    assert_eq!(c.shutdown.websocket_grace, Duration::from_secs(2));
    assert!(!c.socketio.edge_heartbeat);
    assert_eq!(c.socketio.client_timeout, Duration::from_secs(45));

    let names: Vec<_> = c.http.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["redirect", "web", "web-tls", "marti", "enroll"]);
    let profiles: Vec<_> = c.http.iter().map(|l| l.profile).collect();
    assert_eq!(
        profiles,
        [
            Profile::Redirect,
            Profile::Web,
            Profile::Web,
            Profile::Marti,
            Profile::Enroll
        ]
    );

    let redirect = &c.http[0];
    assert_eq!(redirect.listen, addr("0.0.0.0:80"));
    assert_eq!(redirect.https_port, 8443);
    assert!(redirect.tls.is_none());

    let web = &c.http[1];
    assert_eq!(web.listen, addr("0.0.0.0:8080"));
    assert_eq!(web.ui_root, Path::new("/srv/ui"));
    assert_eq!(web.max_body, ByteSize::mib(512));
    assert_eq!(web.max_header_bytes, ByteSize::kib(64));
    assert_eq!(web.max_headers, 200);
    assert_eq!(web.header_read_timeout, Duration::from_secs(5));
    assert_eq!(web.body_read_timeout, Duration::from_secs(30));
    assert_eq!(web.max_connections, 500);
    assert_eq!(web.server_name.as_deref(), Some("tak.example.org"));
    assert!(web.tls.is_none());
    assert_eq!(
        web.cors.allowed_origins,
        ["https://tak.example.org:8443", "https://*.example.org"]
    );
    assert!(web.cors.allow_credentials);
    assert_eq!(web.cors.allowed_methods, ["GET", "POST"]);
    assert_eq!(web.cors.allowed_headers, ["Content-Type", "X-XSRF-Token"]);
    assert_eq!(web.cors.expose_headers, ["X-Total-Count"]);
    assert_eq!(web.cors.max_age, Duration::from_secs(3600));
    assert_eq!(web.routes.len(), 2);
    assert_eq!(web.routes[0].prefix, "/hls");
    assert_eq!(web.routes[0].upstream, "https://mediamtx:8888");
    assert!(web.routes[0].strip_prefix);
    assert!(!web.routes[0].tls_verify);
    assert_eq!(web.routes[1].prefix, "/grafana");
    assert_eq!(web.routes[1].upstream, "http://grafana:3000/base");
    assert!(
        !web.routes[1].strip_prefix,
        "strip_prefix defaults to false"
    );
    assert!(web.routes[1].tls_verify, "tls_verify defaults to true");

    let web_tls = &c.http[2];
    assert_eq!(web_tls.listen, addr("[::]:443"));
    let tls = web_tls.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("/certs/server.pem"));
    assert_eq!(tls.key, Path::new("/certs/server.key"));
    assert_eq!(tls.client_auth(), ClientAuthConfig::None);
    assert!(tls.client_ca.is_none());
    assert!(tls.crl.is_none());
    assert_eq!(
        tls.versions,
        [TlsVersionConfig::Tls12, TlsVersionConfig::Tls13]
    );
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));

    let marti = c.http[3].tls.as_ref().unwrap();
    assert_eq!(marti.client_auth(), ClientAuthConfig::Required);
    assert_eq!(marti.client_ca.as_deref(), Some(Path::new("/certs/ca.pem")));
    assert_eq!(marti.crl.as_deref(), Some(Path::new("/certs/ca.crl")));
    assert_eq!(marti.versions, [TlsVersionConfig::Tls13]);
    assert_eq!(marti.handshake_timeout, Duration::from_secs(20));

    let enroll = c.http[4].tls.as_ref().unwrap();
    assert_eq!(enroll.client_auth(), ClientAuthConfig::Optional);
}

// === defaults ===

#[test]
fn empty_config_is_one_web_listener_in_front_of_local_ots() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.client_cert_header, "X-Ssl-Cert");
    assert_eq!(c.upstream.url, "http://127.0.0.1:8081");
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstream.response_timeout, Duration::from_secs(60));
    assert_eq!(c.upstream.health_path, "/api/health");
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.admin.listen, addr("0.0.0.0:9100"));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert!(c.log.access_log);
    assert_eq!(c.shutdown.grace, Duration::from_secs(30));
    assert_eq!(c.shutdown.websocket_grace, Duration::from_secs(5));
    assert!(c.socketio.edge_heartbeat);
    assert_eq!(c.socketio.client_timeout, Duration::from_secs(20));

    assert_eq!(c.http.len(), 1);
    let l = &c.http[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.listen, addr("0.0.0.0:8080"));
    assert_eq!(l.profile, Profile::Web);
    assert_eq!(l.ui_root, Path::new(DEFAULT_UI_ROOT));
    assert_eq!(l.max_body, ByteSize::mib(100));
    assert_eq!(l.max_header_bytes, ByteSize::kib(32));
    assert_eq!(l.max_headers, 100);
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.https_port, 443);
    assert!(l.server_name.is_none());
    assert!(l.tls.is_none());
    assert!(l.routes.is_empty());
    assert!(l.cors.allowed_origins.is_empty(), "same-origin only");
    assert!(!l.cors.allow_credentials);
    assert_eq!(l.cors.max_age, Duration::from_secs(600));
    assert!(l.cors.allowed_headers.iter().any(|h| h == "X-XSRF-Token"));
}

#[test]
fn empty_config_equals_default() {
    let parsed = Config::parse("").unwrap();
    let default = Config::default();
    assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
}

#[test]
fn listener_defaults_when_keys_are_absent() {
    let c = Config::parse(&web_with("")).unwrap();
    let l = &c.http[0];
    assert_eq!(l.ui_root, Path::new(DEFAULT_UI_ROOT));
    assert_eq!(l.max_body, ByteSize::mib(100));
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.body_read_timeout, Duration::from_secs(60));
    assert_eq!(l.https_port, 443);
    assert!(l.tls.is_none());
    // Listing [[http]] replaces the built-in listener instead of adding to it.
    assert_eq!(c.http.len(), 1);
    assert_eq!(c.upstream.url, "http://127.0.0.1:8081");
}

#[test]
fn upstream_section_keeps_defaults_for_absent_keys() {
    let c = Config::parse("[upstream]\nconnect_timeout = \"1s\"\n").unwrap();
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(1));
    assert_eq!(c.upstream.url, "http://127.0.0.1:8081");
    assert_eq!(c.upstream.response_timeout, Duration::from_secs(60));
    assert_eq!(c.http.len(), 1, "no [[http]]: the default listener");
}

#[test]
fn response_timeout_just_above_ping_interval_is_accepted() {
    let c = Config::parse("[upstream]\nresponse_timeout = \"26s\"\n").unwrap();
    assert_eq!(c.upstream.response_timeout, Duration::from_secs(26));
}

#[test]
fn upstream_url_may_have_a_base_path() {
    let c = Config::parse("[upstream]\nurl = \"http://ots:8081/prefix\"\n").unwrap();
    assert_eq!(c.upstream.url.path(), "/prefix");
}

#[test]
fn port_zero_listeners_may_repeat() {
    let text = "[[http]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n\
                [[http]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\nprofile = \"marti\"\n";
    assert_eq!(Config::parse(text).unwrap().http.len(), 2);
}

// === errors: unknown keys ===

#[test]
fn unknown_key_at_top_level() {
    assert_rejected("bogus_key = 1\n", &["bogus_key"]);
}

#[test]
fn unknown_key_in_upstream() {
    assert_rejected("[upstream]\nbogus_upstream = 1\n", &["bogus_upstream"]);
}

#[test]
fn unknown_key_in_admin_log_shutdown() {
    assert_rejected("[admin]\nbogus_admin = 1\n", &["bogus_admin"]);
    assert_rejected("[log]\nbogus_log = 1\n", &["bogus_log"]);
    assert_rejected("[shutdown]\nbogus_shutdown = 1\n", &["bogus_shutdown"]);
}

#[test]
fn unknown_key_in_http() {
    assert_rejected(&web_with("bogus_listener = 1"), &["bogus_listener"]);
}

#[test]
fn unknown_key_in_http_tls() {
    assert_rejected(&tls_with("bogus_tls = 1"), &["bogus_tls"]);
}

#[test]
fn unknown_key_in_http_cors() {
    assert_rejected(
        &web_with("[http.cors]\nallowed_origins = []\nbogus_cors = 1"),
        &["bogus_cors"],
    );
}

#[test]
fn unknown_key_in_http_route() {
    assert_rejected(
        &web_with("[[http.route]]\nprefix = \"/x\"\nupstream = \"http://x\"\nbogus_route = 1"),
        &["bogus_route"],
    );
}

#[test]
fn missing_required_listener_keys() {
    assert_rejected("[[http]]\nname = \"web\"\nprofile = \"web\"\n", &["listen"]);
    assert_rejected(
        "[[http]]\nname = \"web\"\nlisten = \"0.0.0.0:8080\"\n",
        &["profile"],
    );
}

// === errors: types and values ===

#[test]
fn wrong_type() {
    assert_rejected(&web_with("max_headers = \"many\""), &["max_headers"]);
    assert_rejected("[log]\naccess_log = \"yes\"\n", &["access_log"]);
    assert_rejected("[upstream]\nurl = 8081\n", &["url"]);
    assert_rejected("http = 3\n", &["http"]);
}

#[test]
fn unknown_enum_values() {
    assert_rejected(
        "[[http]]\nname = \"w\"\nlisten = \"0.0.0.0:1\"\nprofile = \"nginx\"\n",
        &["profile", "nginx"],
    );
    assert_rejected("[log]\nformat = \"xml\"\n", &["format", "xml"]);
    assert_rejected(&tls_with("client_auth = \"maybe\""), &["client_auth"]);
}

#[test]
fn bad_duration() {
    assert_rejected(
        "[upstream]\nconnect_timeout = \"10 parsecs\"\n",
        &["connect_timeout", "10 parsecs"],
    );
    assert_rejected(
        &web_with("header_read_timeout = \"soon\""),
        &["header_read_timeout"],
    );
}

#[test]
fn bad_size() {
    assert_rejected(&web_with("max_body = \"lots\""), &["max_body", "lots"]);
}

#[test]
fn zero_values_are_rejected() {
    assert_rejected(&web_with("max_body = 0"), &["http[0].max_body"]);
    assert_rejected(
        &web_with("max_connections = 0"),
        &["http[0].max_connections"],
    );
    assert_rejected(&web_with("max_headers = 0"), &["http[0].max_headers"]);
    assert_rejected(
        &web_with("max_header_bytes = \"1KiB\""),
        &["http[0].max_header_bytes"],
    );
    assert_rejected(
        &web_with("body_read_timeout = \"0s\""),
        &["http[0].body_read_timeout"],
    );
    assert_rejected(
        &tls_with("handshake_timeout = \"0s\""),
        &["http[0].tls.handshake_timeout"],
    );
}

#[test]
fn bad_listen_address() {
    assert_rejected(
        "[[http]]\nname = \"w\"\nlisten = \"localhost\"\nprofile = \"web\"\n",
        &["listen"],
    );
    assert_rejected("[admin]\nlisten = \"nowhere\"\n", &["listen"]);
}

#[test]
fn bad_url() {
    assert_rejected("[upstream]\nurl = \"not a url\"\n", &["url", "not a url"]);
    assert_rejected("[upstream]\nurl = \"ftp://ots:21\"\n", &["upstream.url"]);
    assert_rejected("[upstream]\nurl = \"127.0.0.1:8081\"\n", &["upstream.url"]);
    assert_rejected("[upstream]\nurl = \"/only/a/path\"\n", &["upstream.url"]);
    assert_rejected(
        "[upstream]\nurl = \"http://ots:8081/?x=1\"\n",
        &["upstream.url", "query"],
    );
    assert_rejected(
        &web_with("[[http.route]]\nprefix = \"/x\"\nupstream = \"ws://media:1\""),
        &["http[0].route[0].upstream"],
    );
}

#[test]
fn https_upstream_url_is_rejected() {
    assert_rejected(
        "[upstream]\nurl = \"https://127.0.0.1:8081\"\n",
        &["upstream.url"],
    );
}

/// A response timeout within engine.io's 25 s ping interval is valid but warned about
/// (`Config::warnings`, printed by `takgate check` and at startup).
#[test]
fn response_timeout_within_engineio_ping_interval_is_warned_about() {
    for t in ["25s", "10s"] {
        let c = Config::parse(&format!("[upstream]\nresponse_timeout = \"{t}\"\n")).unwrap();
        let warnings = c.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("upstream.response_timeout")),
            "{t}: {warnings:?}"
        );
    }
    let c = Config::parse("[upstream]\nresponse_timeout = \"26s\"\n").unwrap();
    assert!(
        c.warnings()
            .into_iter()
            .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
            .collect::<Vec<_>>()
            .is_empty(),
        "{:?}",
        c.warnings()
            .into_iter()
            .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
            .collect::<Vec<_>>()
    );
    assert!(Config::parse("")
        .unwrap()
        .warnings()
        .into_iter()
        .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
        .collect::<Vec<_>>()
        .is_empty());
}

#[test]
fn marti_without_client_auth_is_warned_about() {
    let plain = "[[http]]\nname = \"m\"\nlisten = \"0.0.0.0:8443\"\nprofile = \"marti\"\n";
    let w = Config::parse(plain)
        .unwrap()
        .warnings()
        .into_iter()
        .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
        .collect::<Vec<_>>();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("http[0]") && w[0].contains("X-Ssl-Cert"),
        "{w:?}"
    );

    let no_auth = format!("{plain}[http.tls]\ncert = \"/c\"\nkey = \"/k\"\n");
    assert_eq!(
        Config::parse(&no_auth)
            .unwrap()
            .warnings()
            .into_iter()
            .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
            .collect::<Vec<_>>()
            .len(),
        1
    );

    let required = format!("{no_auth}client_auth = \"required\"\nclient_ca = \"/ca\"\n");
    assert!(Config::parse(&required)
        .unwrap()
        .warnings()
        .into_iter()
        .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
        .collect::<Vec<_>>()
        .is_empty());
    // The full example's marti listener requires certificates.
    assert!(Config::parse(FULL)
        .unwrap()
        .warnings()
        .into_iter()
        .filter(|w| !w.contains("ui_root") && !w.contains("does not exist yet"))
        .collect::<Vec<_>>()
        .is_empty());
}

#[test]
fn a_missing_ui_root_is_warned_about_but_valid() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::parse(&format!(
        "[[http]]\nname = \"w\"\nlisten = \"0.0.0.0:8080\"\nprofile = \"web\"\nui_root = \"{}/missing\"\n",
        dir.path().display()
    ))
    .unwrap();
    let w = c.warnings();
    assert!(w.iter().any(|w| w.contains("http[0].ui_root")), "{w:?}");
    let c = Config::parse(&format!(
        "[[http]]\nname = \"w\"\nlisten = \"0.0.0.0:8080\"\nprofile = \"web\"\nui_root = \"{}\"\n",
        dir.path().display()
    ))
    .unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn a_bad_log_filter_names_the_key() {
    assert_rejected("[log]\nlevel = \"info,=[\"\n", &["log.level"]);
}

#[test]
fn health_path_must_be_absolute() {
    assert_rejected(
        "[upstream]\nhealth_path = \"api/health\"\n",
        &["upstream.health_path"],
    );
}

#[test]
fn a_file_without_listeners_runs_the_built_in_ones_and_a_file_with_some_runs_only_those() {
    let builtin = Config::parse("http = []\n").unwrap();
    assert_eq!(builtin.http.len(), 1);
    assert_eq!(builtin.stream.len(), 1);
    assert_eq!(
        builtin.stream[0].listen,
        "0.0.0.0:8089".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(builtin.stream[0].upstream, "127.0.0.1:8088");
    assert_eq!(builtin.stream[0].mode, StreamMode::Terminate);

    let http_only =
        Config::parse("[[http]]\nname = \"w\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n")
            .unwrap();
    assert_eq!(http_only.http.len(), 1);
    assert!(http_only.stream.is_empty(), "no CoT listener was asked for");

    let stream_only = Config::parse(
        "[[stream]]\nname = \"c\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:8088\"\n",
    )
    .unwrap();
    assert!(stream_only.http.is_empty());
    assert_eq!(stream_only.stream.len(), 1);
}

#[test]
fn bad_listener_name() {
    assert_rejected(
        "[[http]]\nname = \"my web\"\nlisten = \"0.0.0.0:1\"\nprofile = \"web\"\n",
        &["http[0].name"],
    );
    assert_rejected(
        "[[http]]\nname = \"\"\nlisten = \"0.0.0.0:1\"\nprofile = \"web\"\n",
        &["http[0].name"],
    );
}

#[test]
fn duplicate_listener_names() {
    let text = "[[http]]\nname = \"web\"\nlisten = \"0.0.0.0:8080\"\nprofile = \"web\"\n\
                [[http]]\nname = \"web\"\nlisten = \"0.0.0.0:8443\"\nprofile = \"marti\"\n";
    assert_rejected(text, &["http[1].name", "duplicate", "\"web\""]);
}

#[test]
fn duplicate_listen_address() {
    let text = "[[http]]\nname = \"a\"\nlisten = \"0.0.0.0:8080\"\nprofile = \"web\"\n\
                [[http]]\nname = \"b\"\nlisten = \"0.0.0.0:8080\"\nprofile = \"marti\"\n";
    assert_rejected(text, &["http[1].listen", "0.0.0.0:8080"]);
}

#[test]
fn listener_on_the_admin_address() {
    let text = "[admin]\nlisten = \"0.0.0.0:9100\"\n\
                [[http]]\nname = \"a\"\nlisten = \"0.0.0.0:9100\"\nprofile = \"web\"\n";
    assert_rejected(text, &["http[0].listen"]);
}

#[test]
fn tls_version_1_1_is_rejected() {
    assert_rejected(
        &tls_with("versions = [\"1.1\"]"),
        &["versions = [\"1.1\"]", "expected `1.2` or `1.3`"],
    );
    assert_rejected(&tls_with("versions = []"), &["http[0].tls.versions"]);
}

#[test]
fn client_auth_without_client_ca() {
    assert_rejected(
        &tls_with("client_auth = \"required\""),
        &["http[0].tls.client_ca"],
    );
    assert_rejected(
        &tls_with("client_auth = \"optional\""),
        &["http[0].tls.client_ca"],
    );
    // With the CA it is fine.
    Config::parse(&tls_with(
        "client_auth = \"required\"\nclient_ca = \"/c/ca.pem\"",
    ))
    .unwrap();
}

#[test]
fn tls_requires_cert_and_key() {
    assert_rejected(&web_with("[http.tls]\nkey = \"/c/server.key\""), &["cert"]);
    assert_rejected(&web_with("[http.tls]\ncert = \"/c/server.pem\""), &["key"]);
}

#[test]
fn cors_wildcard_with_credentials() {
    assert_rejected(
        &web_with("[http.cors]\nallowed_origins = [\"*\"]\nallow_credentials = true"),
        &["http[0].cors.allowed_origins", "allow_credentials"],
    );
    // Without credentials "*" is allowed.
    Config::parse(&web_with("[http.cors]\nallowed_origins = [\"*\"]")).unwrap();
}

#[test]
fn cors_origin_with_a_path() {
    assert_rejected(
        &web_with("[http.cors]\nallowed_origins = [\"https://tak.example.org/ui\"]"),
        &["http[0].cors.allowed_origins", "https://tak.example.org/ui"],
    );
}

#[test]
fn cors_origin_without_scheme_or_host() {
    for bad in [
        "tak.example.org",
        "ftp://tak.example.org",
        "https://",
        "https://*.",
        "https://a.*.example.org",
        "https://tak.example.org?x",
    ] {
        assert_rejected(
            &web_with(&format!("[http.cors]\nallowed_origins = [\"{bad}\"]")),
            &["http[0].cors.allowed_origins"],
        );
    }
}

#[test]
fn cors_origin_forms_that_are_accepted() {
    let c = Config::parse(&web_with(
        "[http.cors]\nallowed_origins = [\"https://tak.example.org:8443\", \"http://10.0.0.5\", \"https://*.example.org\"]",
    ))
    .unwrap();
    assert_eq!(c.http[0].cors.allowed_origins.len(), 3);
}

#[test]
fn cors_bad_method_and_header() {
    assert_rejected(
        &web_with("[http.cors]\nallowed_methods = [\"GE T\"]"),
        &["http[0].cors.allowed_methods"],
    );
    assert_rejected(
        &web_with("[http.cors]\nallowed_headers = [\"X Bad\"]"),
        &["http[0].cors.allowed_headers"],
    );
}

#[test]
fn route_prefix_slash_alone() {
    assert_rejected(
        &web_with("[[http.route]]\nprefix = \"/\"\nupstream = \"http://x\""),
        &["http[0].route[0].prefix"],
    );
}

#[test]
fn route_prefix_not_starting_with_slash() {
    assert_rejected(
        &web_with("[[http.route]]\nprefix = \"hls\"\nupstream = \"http://x\""),
        &["http[0].route[0].prefix"],
    );
}

#[test]
fn route_prefix_with_trailing_slash() {
    assert_rejected(
        &web_with("[[http.route]]\nprefix = \"/hls/\"\nupstream = \"http://x\""),
        &["http[0].route[0].prefix"],
    );
}

#[test]
fn duplicate_route_prefix() {
    assert_rejected(
        &web_with(
            "[[http.route]]\nprefix = \"/hls\"\nupstream = \"http://a\"\n\
             [[http.route]]\nprefix = \"/hls\"\nupstream = \"http://b\"",
        ),
        &["http[0].route[1].prefix", "duplicate", "/hls"],
    );
}

#[test]
fn route_requires_upstream() {
    assert_rejected(
        &web_with("[[http.route]]\nprefix = \"/hls\""),
        &["upstream"],
    );
}

#[test]
fn bad_client_cert_header() {
    assert_rejected(
        "client_cert_header = \"X Ssl Cert\"\n",
        &["client_cert_header"],
    );
    assert_rejected("client_cert_header = \"\"\n", &["client_cert_header"]);
}

#[test]
fn socketio_client_timeout_out_of_range_is_rejected() {
    for t in ["0s", "500ms", "11m"] {
        assert_rejected(
            &format!("[socketio]\nclient_timeout = \"{t}\"\n"),
            &["socketio.client_timeout"],
        );
    }
}

#[test]
fn error_key_names_the_right_listener() {
    let text = format!(
        "{}[[http]]\nname = \"second\"\nlisten = \"0.0.0.0:8443\"\nprofile = \"marti\"\nmax_body = 0\n",
        web_with("")
    );
    assert_rejected(&text, &["http[1].max_body"]);
}

// === load ===

#[test]
fn load_resolves_relative_paths_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("etc");
    std::fs::create_dir(&conf_dir).unwrap();
    let path = conf_dir.join("takgate.toml");
    std::fs::write(
        &path,
        r#"
[[http]]
name = "marti"
listen = "0.0.0.0:8443"
profile = "marti"
ui_root = "www"

[http.tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_ca = "ca.pem"
crl = "../ca.crl"
client_auth = "required"

[[http]]
name = "web"
listen = "0.0.0.0:8080"
profile = "web"
ui_root = "/abs/ui"

[[http]]
name = "web2"
listen = "0.0.0.0:8081"
profile = "web"

[http.tls]
cert = "/abs/server.pem"
key = "server.key"
"#,
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    let marti = &c.http[0];
    assert_eq!(marti.ui_root, conf_dir.join("www"));
    let tls = marti.tls.as_ref().unwrap();
    assert_eq!(tls.cert, conf_dir.join("certs/server.pem"));
    assert_eq!(tls.key, conf_dir.join("certs/server.key"));
    assert_eq!(tls.client_ca.as_deref(), Some(&*conf_dir.join("ca.pem")));
    assert_eq!(tls.crl.as_deref(), Some(&*conf_dir.join("../ca.crl")));

    // Absolute paths stay as written; the default ui_root is absolute.
    assert_eq!(c.http[1].ui_root, Path::new("/abs/ui"));
    assert_eq!(c.http[2].ui_root, Path::new(DEFAULT_UI_ROOT));
    let tls2 = c.http[2].tls.as_ref().unwrap();
    assert_eq!(tls2.cert, Path::new("/abs/server.pem"));
    assert_eq!(tls2.key, conf_dir.join("server.key"));
}

#[test]
fn parse_leaves_relative_paths_alone() {
    let c = Config::parse(&web_with("ui_root = \"www\"")).unwrap();
    assert_eq!(c.http[0].ui_root, PathBuf::from("www"));
}

#[test]
fn load_missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-takgate.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()),
        "error does not name {}: {msg}",
        path.display()
    );
}

#[test]
fn load_parse_error_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[upstream]\ntypo_url = \"http://x\"\n").unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains("typo_url"), "{msg}");
}

#[test]
fn load_validation_error_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[upstream]\nurl = \"https://ots:8081\"\n").unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert!(msg.contains("upstream.url"), "{msg}");
}

#[test]
fn profile_display_matches_config_spelling() {
    for (text, p) in [
        ("web", Profile::Web),
        ("marti", Profile::Marti),
        ("enroll", Profile::Enroll),
        ("redirect", Profile::Redirect),
    ] {
        assert_eq!(p.to_string(), text);
        let c = Config::parse(&format!(
            "[[http]]\nname = \"x\"\nlisten = \"0.0.0.0:1\"\nprofile = \"{text}\"\n"
        ))
        .unwrap();
        assert_eq!(c.http[0].profile, p);
    }
}

// === [[stream]] ===

fn stream_with(extra: &str) -> String {
    format!(
        "[[stream]]\nname = \"cot\"\nlisten = \"127.0.0.1:8089\"\nupstream = \"127.0.0.1:8088\"\n{extra}"
    )
}

#[test]
fn stream_listeners_default_to_ots_files_and_required_client_certs() {
    let c = Config::parse(&stream_with("")).unwrap();
    let l = &c.stream[0];
    assert_eq!(l.mode, StreamMode::Terminate);
    assert_eq!(l.max_frame, ByteSize::mib(1));
    assert_eq!(l.on_malformed, MalformedConfig::Drop);
    assert!(l.require_cn);
    let tls = l.effective_tls().unwrap();
    assert!(tls
        .cert
        .ends_with("ca/certs/opentakserver/opentakserver.pem"));
    assert!(tls
        .key
        .ends_with("ca/certs/opentakserver/opentakserver.nopass.key"));
    assert!(tls.client_ca.as_ref().unwrap().ends_with("ca/ca.pem"));
    assert!(
        tls.crl.is_none(),
        "OTS's own ca.crl is a v1 CRL rustls cannot read"
    );
    assert_eq!(
        StreamListenerConfig::client_auth(&tls),
        ClientAuthConfig::Required
    );
    let passthrough = Config::parse(&stream_with("mode = \"passthrough\"")).unwrap();
    assert!(passthrough.stream[0].effective_tls().is_none());
}

#[test]
fn bad_stream_listeners_name_the_key() {
    for (extra, key) in [
        (
            "mode = \"passthrough\"\n[stream.tls]\ncert = \"/c\"\nkey = \"/k\"\n",
            "stream[0].tls",
        ),
        (
            "[stream.tls]\ncert = \"/c\"\nkey = \"/k\"\n",
            "stream[0].tls.client_ca",
        ),
        ("max_frame = \"10B\"", "stream[0].max_frame"),
        ("read_buffer = \"2MiB\"", "stream[0].read_buffer"),
        ("idle_timeout = \"0s\"", "stream[0].idle_timeout"),
        ("max_connections = 0", "stream[0].max_connections"),
        (
            "mode = \"raw\"\n[stream.identity]\ntoken_file = \"/t\"\n",
            "stream[0].identity",
        ),
        (
            "[stream.identity]\ntoken_file = \"/t\"\nusername = \"u\"\npassword_file = \"/p\"\n",
            "stream[0].identity",
        ),
        (
            "[stream.identity]\nusername = \"u\"\n",
            "stream[0].identity",
        ),
        ("modee = \"raw\"", "modee"),
    ] {
        assert_rejected(&stream_with(extra), &[key]);
    }
    assert_rejected(
        "[[stream]]\nname = \"cot\"\nlisten = \"127.0.0.1:8089\"\nupstream = \"8088\"\n",
        &["stream[0].upstream"],
    );
    let dup = format!(
        "{}[[http]]\nname = \"cot\"\nlisten = \"127.0.0.1:8080\"\nprofile = \"web\"\n",
        stream_with("")
    );
    assert_rejected(&dup, &["stream[0].name", "duplicate"]);
}

#[test]
fn missing_tls_files_are_warned_about_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.pem");
    std::fs::write(&cert, "x").unwrap();
    let c = Config::parse(&stream_with(&format!(
        "[stream.tls]\ncert = \"{}\"\nkey = \"{}/missing.key\"\nclient_ca = \"{}\"\n",
        cert.display(),
        dir.path().display(),
        cert.display()
    )))
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("stream[0].tls.key:") && w[0].contains("missing.key"),
        "{w:?}"
    );
}

// === reoriginate ===

fn reoriginate_with(extra: &str) -> String {
    format!(
        "[[stream]]\nname = \"cot\"\nlisten = \"0.0.0.0:8089\"\nupstream = \"127.0.0.1:8099\"\n\
         mode = \"reoriginate\"\n{extra}\n"
    )
}

#[test]
fn reoriginate_defaults_to_otss_ca_folder_and_a_day_long_certificate() {
    let c = Config::parse(&reoriginate_with("")).unwrap();
    let l = &c.stream[0];
    assert_eq!(l.mode, StreamMode::Reoriginate);
    let r = l.effective_reoriginate().unwrap();
    let ca = ots_data_folder().join("ca");
    assert_eq!(r.ca_path(), ca.join("ca.pem"));
    assert_eq!(r.signer_cert_path(), ca.join("ca.pem"));
    assert_eq!(r.signer_key_path(), ca.join("ca-do-not-share.key"));
    assert_eq!(r.signer_key_password_env, "OTS_CA_PASSWORD");
    assert_eq!(r.server_name, "opentakserver");
    assert_eq!(r.cert_lifetime, Duration::from_secs(86_400));
    assert_eq!(r.renew_before, Duration::from_secs(8 * 3600));
    assert_eq!(r.max_cached_certs, 10_000);
    assert_eq!(r.issue_rate, 20);
    // terminate has no reoriginate settings at all.
    let t = Config::parse(&reoriginate_with("").replace("reoriginate", "terminate")).unwrap();
    assert!(t.stream[0].effective_reoriginate().is_none());
}

#[test]
fn reoriginate_keys_parse_and_a_signer_key_defaults_beside_its_ca() {
    let c = Config::parse(&reoriginate_with(
        "[stream.reoriginate]\nca = \"/ots/ca/ca.pem\"\nsigner_key_password_file = \"/run/secrets/pw\"\n\
         server_name = \"ots.internal\"\ncert_lifetime = \"12h\"\nrenew_before = \"4h\"\n\
         max_cached_certs = 500\nissue_rate = 5\n",
    ))
    .unwrap();
    let r = c.stream[0].effective_reoriginate().unwrap();
    assert_eq!(
        r.signer_key_path(),
        PathBuf::from("/ots/ca/ca-do-not-share.key")
    );
    assert_eq!(r.signer_cert_path(), PathBuf::from("/ots/ca/ca.pem"));
    assert_eq!(
        r.signer_key_password_file,
        Some(PathBuf::from("/run/secrets/pw"))
    );
    assert_eq!(r.cert_lifetime, Duration::from_secs(12 * 3600));
    assert_eq!((r.max_cached_certs, r.issue_rate), (500, 5));
}

#[test]
fn bad_reoriginate_settings_name_their_key() {
    let section = |body: &str| reoriginate_with(&format!("[stream.reoriginate]\n{body}\n"));
    assert_rejected(
        &section("cert_lifetime = \"5m\""),
        &["stream[0].reoriginate.cert_lifetime"],
    );
    assert_rejected(
        &section("cert_lifetime = \"1h\"\nrenew_before = \"1h\""),
        &["stream[0].reoriginate.renew_before"],
    );
    assert_rejected(
        &section("issue_rate = 0"),
        &["stream[0].reoriginate.issue_rate"],
    );
    assert_rejected(
        &section("max_cached_certs = 0"),
        &["stream[0].reoriginate.max_cached_certs"],
    );
    assert_rejected(
        &section("server_name = \"not a name\""),
        &["stream[0].reoriginate.server_name"],
    );
    assert_rejected(&section("password = \"x\""), &["unknown field", "password"]);
    assert_rejected(
        &reoriginate_with("require_cn = false"),
        &["stream[0].require_cn", "CN"],
    );
    assert_rejected(
        &reoriginate_with("[stream.reoriginate]\n").replace("\"reoriginate\"\n", "\"terminate\"\n"),
        &["stream[0].reoriginate", "only mode"],
    );
}

#[test]
fn plain_mode_takes_no_tls_and_no_identity() {
    let plain = |extra: &str| {
        format!(
            "[[stream]]\nname = \"cot\"\nlisten = \"0.0.0.0:8088\"\nupstream = \"127.0.0.1:18088\"\n\
             mode = \"plain\"\n{extra}\n"
        )
    };
    let c = Config::parse(&plain("")).unwrap();
    assert_eq!(c.stream[0].mode, StreamMode::Plain);
    assert!(c.stream[0].effective_tls().is_none());
    assert_rejected(
        &plain("[stream.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_auth = \"none\""),
        &["stream[0].tls", "plain"],
    );
    assert_rejected(
        &plain("[stream.identity]\ntoken_file = \"/t\""),
        &["stream[0].identity"],
    );
}

#[test]
fn stream_limits_default_to_what_keeps_a_normal_atak_client_untouched() {
    let c = Config::parse(&reoriginate_with("")).unwrap();
    let l = &c.stream[0].limits;
    assert_eq!(*l, LimitsConfig::default());
    assert_eq!((l.events_per_second, l.events_burst), (50, 200));
    assert_eq!(l.bytes_per_second, ByteSize::mib(1));
    assert_eq!(l.bytes_burst, ByteSize::mib(4));
    assert_eq!(l.sessions_per_cn, 8);
    assert_eq!(l.on_limit, LimitPolicyConfig::Delay);
    let c = Config::parse(&reoriginate_with(
        "[stream.limits]\nevents_per_second = 0\non_limit = \"close\"\nsessions_per_cn = 1\n",
    ))
    .unwrap();
    let l = &c.stream[0].limits;
    assert_eq!(
        (l.events_per_second, l.on_limit, l.sessions_per_cn),
        (0, LimitPolicyConfig::Close, 1)
    );
    assert_eq!(l.events_burst, 200, "the other keys keep their defaults");
    assert_rejected(
        &reoriginate_with("max_frame = \"2MiB\"\n[stream.limits]\nbytes_burst = \"1MiB\"\n"),
        &["stream[0].limits.bytes_burst", "max_frame"],
    );
    assert_rejected(
        &reoriginate_with("[stream.limits]\non_limit = \"slow\"\n"),
        &["unknown variant", "slow"],
    );
}

#[test]
fn upstream_queue_and_send_buffer_and_the_memory_budget_have_sizes_that_work() {
    let c = Config::parse(&reoriginate_with("")).unwrap();
    assert_eq!(c.stream[0].limits.upstream_queue, ByteSize::kib(128));
    assert_eq!(c.stream[0].upstream_send_buffer, ByteSize::kib(64));
    assert_eq!(c.memory.stream_budget, ByteSize::mib(128));
    assert_eq!(Config::default().memory, MemoryConfig::default());
    let c = Config::parse(&format!(
        "[memory]\nstream_budget = \"1GiB\"\n{}",
        reoriginate_with("upstream_send_buffer = 0\n[stream.limits]\nupstream_queue = \"1MiB\"\n")
    ))
    .unwrap();
    assert_eq!(c.memory.stream_budget, ByteSize::gib(1));
    assert_eq!(c.stream[0].upstream_send_buffer, ByteSize::b(0));
    assert_eq!(c.stream[0].limits.upstream_queue, ByteSize::mib(1));
    assert_rejected(
        &reoriginate_with("read_buffer = \"64KiB\"\n[stream.limits]\nupstream_queue = \"32KiB\"\n"),
        &["stream[0].limits.upstream_queue", "read_buffer"],
    );
    assert_rejected(
        &reoriginate_with("upstream_send_buffer = \"1KiB\"\n"),
        &["stream[0].upstream_send_buffer", "4KiB"],
    );
    assert_rejected(
        &format!(
            "[memory]\nstream_budget = \"512KiB\"\n{}",
            reoriginate_with("")
        ),
        &["memory.stream_budget", "1.0 MiB"],
    );
}
