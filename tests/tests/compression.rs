//! Answers compressed for the clients that take it (issue #16, points 1–4): negotiation,
//! `Vary`, HEAD, 304s, ranges, precompressed siblings, an upstream's own encoding, streaming,
//! and the BREACH default on TLS listeners; through takgate's real listener, with hyper and curl
//! as clients.

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use takgate_tests::certs::TestPki;
use takgate_tests::client::{connection, get, send, send_tls, within, Got};
use takgate_tests::proxy::{base_config, tls_web_config, web_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;

fn decode(got: &Got) -> Vec<u8> {
    decode_as(got.header("content-encoding"), &got.body)
}

fn decode_as(coding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("gzip decodes");
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("brotli decodes");
        }
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
    out
}

fn varies_on_encoding(got: &Got) -> bool {
    got.headers.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn proxied_json_follows_accept_encoding() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let addr = proxy.http("web");
    let path = "/api/eud?json=20000";

    let identity = get(addr, path, &[]).await;
    assert_eq!(identity.status, 200);
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.body.len(), 20000);
    assert!(
        varies_on_encoding(&identity),
        "a compressible answer varies"
    );

    let cases: &[(&str, Option<&str>)] = &[
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("gzip, deflate, br, zstd", Some("br")),
        ("br;q=0.5, gzip", Some("gzip")),
        ("gzip, br;q=0", Some("gzip")),
        ("x-gzip", Some("gzip")),
        ("*", Some("br")),
        ("*;q=0.1, gzip;q=0.2", Some("gzip")),
        ("identity", None),
        ("*;q=0, identity", None),
        ("br;q=0, gzip;q=0", None),
        ("identity;q=1, gzip;q=0.5", None),
        ("deflate", None),
        ("br;q=2", None),
        ("", None),
    ];
    for &(accept, want) in cases {
        let got = get(addr, path, &[("accept-encoding", accept)]).await;
        assert_eq!(got.status, 200, "{accept:?}");
        assert_eq!(got.header("content-encoding"), want, "{accept:?}");
        assert!(varies_on_encoding(&got), "{accept:?}");
        assert_eq!(
            decode(&got),
            identity.body,
            "{accept:?} decodes to the identity body"
        );
        if want.is_some() {
            assert!(
                got.body.len() < identity.body.len() / 4,
                "{accept:?} shrinks"
            );
            assert_eq!(got.header("content-length"), None, "{accept:?}");
        }
    }

    // HEAD: the headers a GET would get.
    let head = send(
        addr,
        Request::head(path)
            .header("host", addr.to_string())
            .header("accept-encoding", "br")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), Some("br"));
    assert!(head.body.is_empty());

    // Too small to be worth it: as it came, and nothing to vary.
    let small = get(addr, "/api/eud?json=300", &[("accept-encoding", "br")]).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body.len(), 300);
    assert!(!varies_on_encoding(&small));

    // An upstream's own gzip passes through once, whatever the client prefers.
    let pre = get(
        addr,
        "/api/eud?json=20000&encoded=gzip",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(pre.header("content-encoding"), Some("gzip"));
    assert_eq!(pre.headers.get_all("content-encoding").iter().count(), 1);
    assert_eq!(decode(&pre), identity.body);

    // `Cache-Control: no-transform` is obeyed; a type that does not shrink is left alone.
    let kept = get(
        addr,
        "/api/eud?json=20000&no_transform=1",
        &[("accept-encoding", "br")],
    )
    .await;
    assert_eq!(kept.header("content-encoding"), None);
    assert_eq!(kept.body, identity.body);
}

fn ui_with_assets() -> tempfile::TempDir {
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(
        ui.path().join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::create_dir_all(ui.path().join("assets")).unwrap();
    let js: String = (0..2000)
        .map(|i| format!("export const marker{i} = L.marker([51.5, -0.12]);\n"))
        .collect();
    std::fs::write(ui.path().join("assets/index-AbC123.js"), &js).unwrap();
    // A bundle with its own brotli sibling, whose content is told apart from the file's.
    std::fs::write(ui.path().join("assets/vendor-XyZ789.js"), &js).unwrap();
    let mut sibling = Vec::new();
    {
        use std::io::Write;
        let mut w = brotli::CompressorWriter::new(&mut sibling, 4096, 5, 22);
        w.write_all(b"/* precompressed sibling */").unwrap();
    }
    std::fs::write(ui.path().join("assets/vendor-XyZ789.js.br"), sibling).unwrap();
    ui
}

async fn ui_proxy(ui: &std::path::Path, up: &FakeUpstream, extra: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}\n[[http]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\nui_root = \"{}\"\n{extra}",
        base_config(&up.url()),
        ui.display()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_assets_are_compressed_and_revalidate() {
    let up = FakeUpstream::start().await;
    let ui = ui_with_assets();
    let js = std::fs::read(ui.path().join("assets/index-AbC123.js")).unwrap();
    // Once through the in-memory cache (its kept copies), once straight from disk.
    for extra in ["", "static_cache = \"0B\""] {
        let proxy = ui_proxy(ui.path(), &up, extra).await;
        let addr = proxy.http("web");
        let asset = "/assets/index-AbC123.js";

        let plain = get(addr, asset, &[]).await;
        assert_eq!(plain.header("content-encoding"), None, "{extra}");
        assert_eq!(plain.body, js);
        let strong = plain.header("etag").unwrap().to_owned();
        assert!(
            strong.starts_with('"'),
            "{extra}: identity keeps a strong ETag"
        );

        for coding in ["br", "gzip"] {
            let got = get(addr, asset, &[("accept-encoding", coding)]).await;
            assert_eq!(got.status, 200, "{extra} {coding}");
            assert_eq!(got.header("content-encoding"), Some(coding), "{extra}");
            assert_eq!(decode(&got), js, "{extra} {coding}");
            assert!(got.body.len() < js.len() / 5, "{extra} {coding}");
            assert!(varies_on_encoding(&got));
            assert_eq!(got.header("accept-ranges"), None, "{extra} {coding}");
            let etag = got.header("etag").unwrap().to_owned();
            assert_eq!(
                etag,
                format!("W/{strong}"),
                "{extra} {coding}: weak validator"
            );
            if let Some(len) = got.header("content-length") {
                assert_eq!(len.parse::<usize>().unwrap(), got.body.len());
            }
            // The browser revalidates with what it was given, and gets a 304 that varies.
            let again = get(
                addr,
                asset,
                &[("accept-encoding", coding), ("if-none-match", &etag)],
            )
            .await;
            assert_eq!(again.status, 304, "{extra} {coding}");
            assert!(again.body.is_empty());
            assert!(varies_on_encoding(&again), "{extra} {coding}");
        }

        // A range is of the identity body, and answered as such.
        let range = get(
            addr,
            asset,
            &[("accept-encoding", "br"), ("range", "bytes=0-99")],
        )
        .await;
        assert_eq!(range.status, 206, "{extra}");
        assert_eq!(range.header("content-encoding"), None);
        assert_eq!(&range.body[..], &js[..100]);

        // A precompressed sibling on disk is preferred to compressing the file.
        let sib = get(
            addr,
            "/assets/vendor-XyZ789.js",
            &[("accept-encoding", "br, gzip")],
        )
        .await;
        assert_eq!(sib.header("content-encoding"), Some("br"), "{extra}");
        assert_eq!(decode(&sib), b"/* precompressed sibling */", "{extra}");
        // And one who takes only gzip gets the file compressed on the fly.
        let gz = get(
            addr,
            "/assets/vendor-XyZ789.js",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(gz.header("content-encoding"), Some("gzip"), "{extra}");
        assert_eq!(decode(&gz), js, "{extra}");

        // HEAD: the same headers as GET, no body.
        let head = send(
            addr,
            Request::head(asset)
                .header("host", addr.to_string())
                .header("accept-encoding", "br")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-encoding"), Some("br"), "{extra}");
        assert!(head.body.is_empty());
    }
}

/// curl, as users and scripts fetch: `--compressed` asks for what curl can decode, and the
/// result is the file itself, in fewer bytes on the wire.
#[tokio::test(flavor = "multi_thread")]
async fn curl_compressed_gets_the_same_bytes_in_fewer() {
    let up = FakeUpstream::start().await;
    let ui = ui_with_assets();
    let proxy = ui_proxy(ui.path(), &up, "").await;
    let addr = proxy.http("web");
    let js = std::fs::read(ui.path().join("assets/index-AbC123.js")).unwrap();
    let api = get(addr, "/api/eud?json=20000", &[]).await.body;
    for (path, want) in [
        ("/assets/index-AbC123.js", &js[..]),
        ("/api/eud?json=20000", &api[..]),
    ] {
        let url = format!("http://{addr}{path}");
        let run = |compressed: bool| {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("body");
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "20", "-o"]).arg(&out).args([
                "-w",
                "%{size_download} %{content_type}",
                &url,
            ]);
            if compressed {
                cmd.arg("--compressed");
            }
            let res = cmd.output().expect("curl runs");
            assert!(
                res.status.success(),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
            let wire: usize = String::from_utf8_lossy(&res.stdout)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (std::fs::read(&out).unwrap(), wire)
        };
        let (plain, plain_wire) = run(false);
        let (decoded, wire) = run(true);
        assert_eq!(plain, want, "{path}");
        assert_eq!(decoded, want, "{path}");
        assert_eq!(plain_wire, want.len(), "{path}");
        assert!(
            wire * 4 < plain_wire,
            "{path}: {wire} bytes compressed vs {plain_wire}"
        );
    }
}

/// Each chunk of a streamed answer is out before the next exists: the upstream sends its second
/// chunk only after the client has decoded the first.
#[tokio::test(flavor = "multi_thread")]
async fn streaming_answers_are_flushed_per_chunk() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let addr = proxy.http("web");
    for accept in ["br", "gzip", "identity"] {
        let mut sender = connection::<Full<Bytes>>(addr).await;
        let req = Request::get("/api/lockstep")
            .header("host", addr.to_string())
            .header("accept-encoding", accept)
            .body(Full::default())
            .unwrap();
        let resp = within(sender.send_request(req)).await.unwrap();
        let coding = resp
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(coding.as_deref(), (accept != "identity").then_some(accept));
        let mut body = resp.into_body();
        let mut wire = Vec::new();
        // The first chunk decodes whole before the upstream has been let go on.
        loop {
            let frame = within(body.frame()).await.expect("first chunk").unwrap();
            wire.extend_from_slice(frame.data_ref().unwrap());
            let text = decode_partial(coding.as_deref(), &wire);
            if text.ends_with(b"}]") {
                break;
            }
        }
        up.release();
        while let Some(frame) = within(body.frame()).await {
            if let Some(d) = frame.unwrap().data_ref() {
                wire.extend_from_slice(d);
            }
        }
        assert!(
            decode_as(coding.as_deref(), &wire).ends_with(b"\"end\""),
            "{accept}"
        );
    }
}

/// What a flushed prefix of an encoded stream decodes to so far.
fn decode_partial(coding: Option<&str>, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = match coding {
        None => return wire.to_vec(),
        Some("gzip") => flate2::read::GzDecoder::new(wire).read_to_end(&mut out),
        Some(_) => brotli::Decompressor::new(wire, 4096).read_to_end(&mut out),
    };
    out
}

/// A Socket.IO long-poll answers as soon as the upstream does, compressed or not.
#[tokio::test(flavor = "multi_thread")]
async fn socketio_long_poll_answers_when_the_upstream_does() {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start(&web_config(&up.url(), "")).await;
    let addr = proxy.http("web");
    for accept in ["gzip, deflate, br", "identity"] {
        let poll = tokio::spawn(async move {
            get(
                addr,
                "/socket.io/poll?EIO=4&transport=polling&sid=abc",
                &[("accept-encoding", accept)],
            )
            .await
        });
        within(up.held()).await;
        up.release();
        let got = within(poll).await.unwrap();
        assert_eq!(got.status, 200);
        let want = (accept != "identity").then_some("br");
        assert_eq!(got.header("content-encoding"), want);
        let text = decode(&got);
        assert!(text.starts_with(b"42[\"cot\""), "{accept}");
        assert!(text.contains(&0x1e), "{accept}: packets kept apart");
    }
}

async fn tls_proxy(up: &FakeUpstream, pki: &TestPki, extra: &str) -> (TestProxy, SocketAddr) {
    let config = format!(
        "{}\n[[http]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprofile = \"web\"\n\
         ui_root = \"/nonexistent-ui\"\n",
        tls_web_config(
            &up.url(),
            pki,
            std::path::Path::new("/nonexistent-ui"),
            extra
        ),
    );
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.http("web-tls");
    (proxy, addr)
}

/// BREACH: on TLS, answers that may carry a secret (a login, `/api/me`'s auth token, anything
/// setting a cookie) go out as they are unless `compress_secrets` says otherwise; other
/// answers on the same listener, and the same answers on a plain listener, are compressed.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_not_compressed_on_tls_by_default() {
    let up = FakeUpstream::start().await;
    let pki = TestPki::new();
    let tls_get = |addr: SocketAddr, path: &'static str| {
        let config = pki.client_config(None);
        async move {
            send_tls(
                addr,
                config,
                Request::get(path)
                    .header("accept-encoding", "br, gzip")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .expect("tls request")
        }
    };
    let secret = [
        "/api/me?json=4000",
        "/api/login?json=4000",
        "/api/atak_qr_string?json=4000",
        "/api/eud?json=4000&cookie=1",
    ];
    let (proxy, tls) = tls_proxy(&up, &pki, "").await;
    let plain = proxy.http("web");
    let control = tls_get(tls, "/api/eud?json=4000").await;
    assert_eq!(
        control.header("content-encoding"),
        Some("br"),
        "other answers on TLS are"
    );
    for path in secret {
        let got = tls_get(tls, path).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("content-encoding"), None, "{path} on TLS");
        assert!(!varies_on_encoding(&got), "{path}");
        let on_plain = get(plain, path, &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(
            on_plain.header("content-encoding"),
            Some("br"),
            "{path} on plain http"
        );
        assert_eq!(decode(&on_plain), got.body, "{path}");
    }
    // Normalisation cannot dodge the list: the path is matched as the upstream will see it.
    let dodged = tls_get(tls, "/api/./%6De?json=4000").await;
    assert_eq!(dodged.header("content-encoding"), None);
    drop(proxy);

    let (_proxy, tls) = tls_proxy(&up, &pki, "[http.compression]\ncompress_secrets = true\n").await;
    for path in secret {
        let got = tls_get(tls, path).await;
        assert_eq!(
            got.header("content-encoding"),
            Some("br"),
            "{path} with compress_secrets"
        );
    }
}
