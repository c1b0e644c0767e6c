use std::{fs, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, response::Parts, Method, Request, StatusCode};
use http_body_util::BodyExt;
use tempfile::TempDir;

use super::{StaticFiles, Target};
use crate::http::file_cache::FileCache;

/// Every test goes through the cache as takgate runs it, re-checking files on every request so
/// that tests changing files see the change at once.
fn cache() -> Arc<FileCache> {
    Arc::new(FileCache::with_revalidate(
        1 << 20,
        64 << 10,
        Duration::ZERO,
    ))
}

fn uncached() -> Arc<FileCache> {
    Arc::new(FileCache::new(0, 0))
}

const INDEX: &str = "<!doctype html><title>OTS</title><div id=root>ROOT-INDEX</div>";
const SUB_INDEX: &str = "<!doctype html>SUB-INDEX";
const APP_JS: &str = "console.log('app-abc123');";
const APP_JS_BR: &[u8] = b"\x1b\x1a\x00BROTLI-VARIANT";
const APP_JS_GZ: &[u8] = b"\x1f\x8bGZIP-VARIANT";
const TRANSLATION: &str = r#"{"hello":"Hello"}"#;
const SECRET: &str = "TOP-SECRET-OUTSIDE-ROOT";
const MP3_LEN: usize = 100 * 1024;

/// A UI build in `<tmp>/www`, with a secret file beside it in `<tmp>` that must never be served.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        fs::write(dir.path().join("Cargo.toml"), SECRET).unwrap();
        let fixture = Self { dir };
        let files: &[(&str, &[u8])] = &[
            ("index.html", INDEX.as_bytes()),
            ("sub/index.html", SUB_INDEX.as_bytes()),
            ("assets/js/app-abc123.js", APP_JS.as_bytes()),
            ("assets/js/app-abc123.js.br", APP_JS_BR),
            ("assets/js/app-abc123.js.gz", APP_JS_GZ),
            ("assets/css/app-def456.css", b"body{}"),
            ("assets/img/logo-1a2b.svg", b"<svg/>"),
            ("assets/fonts/roboto-9f8e.woff2", b"wOF2"),
            ("locales/en/translation.json", TRANSLATION.as_bytes()),
            ("manifest.webmanifest", b"{}"),
            ("alert.mp3", &mp3_bytes()),
        ];
        for (path, contents) in files {
            let path = fixture.root().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
        fixture
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("www")
    }

    fn spa(&self) -> StaticFiles {
        StaticFiles::new(self.root(), true, cache())
    }

    fn plain(&self) -> StaticFiles {
        StaticFiles::new(self.root(), false, cache())
    }
}

fn mp3_bytes() -> Vec<u8> {
    (0..MP3_LEN).map(|i| (i % 251) as u8).collect()
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

async fn send(files: &StaticFiles, req: Request<()>) -> (Parts, Bytes) {
    let (parts, body) = files.serve(req).await.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, body)
}

async fn get(files: &StaticFiles, uri: &str) -> (Parts, Bytes) {
    send(files, request(Method::GET, uri, &[])).await
}

async fn get_with(files: &StaticFiles, uri: &str, headers: &[(&str, &str)]) -> (Parts, Bytes) {
    send(files, request(Method::GET, uri, headers)).await
}

fn header(parts: &Parts, name: header::HeaderName) -> &str {
    parts
        .headers
        .get(&name)
        .map(|value| value.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header in {parts:?}"))
}

#[tokio::test]
async fn spa_fallback_serves_index_for_client_routes() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    for uri in ["/map/123", "/map/123?zoom=4", "/locales", "/dashboard/"] {
        let (parts, body) = get(&files, uri).await;
        assert_eq!(parts.status, StatusCode::OK, "{uri}");
        assert_eq!(body, INDEX, "{uri}");
        assert_eq!(header(&parts, header::CONTENT_TYPE), "text/html", "{uri}");
        assert_eq!(header(&parts, header::CACHE_CONTROL), "no-cache", "{uri}");
    }
}

#[tokio::test]
async fn missing_hashed_asset_is_404_not_html() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    for uri in [
        "/assets/js/missing-xyz.js",
        "/assets/",
        // Spelled differently, but ServeDir would resolve these into assets/ too.
        "/%61ssets/js/missing-xyz.js",
        "//assets/js/missing-xyz.js",
        "/./assets/js/missing-xyz.js",
    ] {
        let (parts, body) = get(&files, uri).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!body.starts_with(b"<!doctype"), "{uri}: {body:?}");
        assert_ne!(
            header(&parts, header::CACHE_CONTROL),
            super::CACHE_IMMUTABLE,
            "a 404 must not be cached for a year: {uri}"
        );
    }
}

#[tokio::test]
async fn directories_serve_their_index() {
    let fixture = Fixture::new();
    for files in [fixture.spa(), fixture.plain()] {
        let (parts, body) = get(&files, "/").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, INDEX);
        assert_eq!(header(&parts, header::CACHE_CONTROL), "no-cache");

        let (parts, body) = get(&files, "/sub/").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, SUB_INDEX);
    }
}

#[tokio::test]
async fn plain_mode_redirects_directory_without_slash() {
    let fixture = Fixture::new();
    let (parts, _) = get(&fixture.plain(), "/sub").await;
    assert_eq!(parts.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&parts, header::LOCATION), "/sub/");
}

#[tokio::test]
async fn mime_types() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    let cases = [
        ("/index.html", &["text/html"][..]),
        (
            "/assets/js/app-abc123.js",
            &["text/javascript", "application/javascript"][..],
        ),
        ("/assets/css/app-def456.css", &["text/css"][..]),
        ("/assets/img/logo-1a2b.svg", &["image/svg+xml"][..]),
        ("/assets/fonts/roboto-9f8e.woff2", &["font/woff2"][..]),
        ("/locales/en/translation.json", &["application/json"][..]),
        ("/alert.mp3", &["audio/mpeg"][..]),
        ("/manifest.webmanifest", &["application/manifest+json"][..]),
    ];
    for (uri, expected) in cases {
        let (parts, _) = get(&files, uri).await;
        assert_eq!(parts.status, StatusCode::OK, "{uri}");
        let content_type = header(&parts, header::CONTENT_TYPE);
        assert!(expected.contains(&content_type), "{uri}: {content_type}");
    }
}

#[tokio::test]
async fn etag_revalidates_with_304() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    for uri in ["/assets/js/app-abc123.js", "/", "/map/123"] {
        let (parts, body) = get(&files, uri).await;
        assert_eq!(parts.status, StatusCode::OK, "{uri}");
        assert!(!body.is_empty());
        let etag = header(&parts, header::ETAG).to_owned();
        let cache_control = header(&parts, header::CACHE_CONTROL).to_owned();

        let (parts, body) = get_with(&files, uri, &[("if-none-match", &etag)]).await;
        assert_eq!(parts.status, StatusCode::NOT_MODIFIED, "{uri}");
        assert!(body.is_empty(), "{uri}");
        assert_eq!(header(&parts, header::ETAG), etag, "{uri}");
        // A 304 must refresh the cached entry's policy, not drop it.
        assert_eq!(
            header(&parts, header::CACHE_CONTROL),
            cache_control,
            "{uri}"
        );
        assert_eq!(header(&parts, header::VARY), "accept-encoding", "{uri}");

        let (parts, _) = get_with(&files, uri, &[("if-none-match", "\"stale\"")]).await;
        assert_eq!(parts.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn last_modified_revalidates_with_304() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    let (parts, _) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(parts.status, StatusCode::OK);
    let last_modified = header(&parts, header::LAST_MODIFIED).to_owned();

    let (parts, body) = get_with(
        &files,
        "/locales/en/translation.json",
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(parts.status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    let (parts, body) = get_with(
        &files,
        "/locales/en/translation.json",
        &[("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")],
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, TRANSLATION);
}

#[tokio::test]
async fn range_gets_206() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    let mp3 = mp3_bytes();

    let (parts, body) = get_with(&files, "/alert.mp3", &[("range", "bytes=0-9")]).await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, mp3[..10]);
    assert_eq!(
        header(&parts, header::CONTENT_RANGE),
        format!("bytes 0-9/{MP3_LEN}")
    );
    assert_eq!(header(&parts, header::CONTENT_LENGTH), "10");

    let (parts, body) = get_with(&files, "/alert.mp3", &[("range", "bytes=-5")]).await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, mp3[MP3_LEN - 5..]);

    let (parts, _) = get_with(&files, "/alert.mp3", &[("range", "bytes=999999-")]).await;
    assert_eq!(parts.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    for (uri, len) in [("/alert.mp3", MP3_LEN), ("/map/123", INDEX.len())] {
        let (parts, body) = send(&files, request(Method::HEAD, uri, &[])).await;
        assert_eq!(parts.status, StatusCode::OK, "{uri}");
        assert!(body.is_empty(), "{uri}");
        assert_eq!(
            header(&parts, header::CONTENT_LENGTH),
            len.to_string(),
            "{uri}"
        );
        assert!(parts.headers.contains_key(header::ETAG), "{uri}");
    }
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    let uri = "/assets/js/app-abc123.js";
    // (Accept-Encoding sent, Content-Encoding expected, body expected)
    let cases: [(Option<&str>, Option<&str>, &[u8]); 5] = [
        (Some("br"), Some("br"), APP_JS_BR),
        (Some("gzip"), Some("gzip"), APP_JS_GZ),
        (Some("gzip, deflate, br"), Some("br"), APP_JS_BR),
        (Some("br;q=0, gzip"), Some("gzip"), APP_JS_GZ),
        (None, None, APP_JS.as_bytes()),
    ];
    for (accept, encoding, expected) in cases {
        let headers: Vec<_> = accept.map(|v| ("accept-encoding", v)).into_iter().collect();
        let (parts, body) = get_with(&files, uri, &headers).await;
        assert_eq!(parts.status, StatusCode::OK, "{accept:?}");
        assert_eq!(body, expected, "{accept:?}");
        assert_eq!(
            parts
                .headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            encoding,
            "{accept:?}"
        );
        // The compressed body is still JavaScript to the browser.
        assert_eq!(header(&parts, header::CONTENT_TYPE), "text/javascript");
        assert_eq!(header(&parts, header::VARY), "accept-encoding");
    }

    // No sibling on disk: identity even when the client would take br.
    let (parts, body) = get_with(
        &files,
        "/locales/en/translation.json",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(body, TRANSLATION);
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn cache_control_immutable_only_for_assets() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    let cases = [
        (
            "/assets/js/app-abc123.js",
            "public, max-age=31536000, immutable",
        ),
        (
            "/assets/css/app-def456.css",
            "public, max-age=31536000, immutable",
        ),
        ("/", "no-cache"),
        ("/index.html", "no-cache"),
        ("/map/123", "no-cache"),
        ("/locales/en/translation.json", "no-cache"),
        ("/alert.mp3", "no-cache"),
        ("/manifest.webmanifest", "no-cache"),
    ];
    for (uri, expected) in cases {
        let (parts, _) = get(&files, uri).await;
        assert_eq!(parts.status, StatusCode::OK, "{uri}");
        assert_eq!(header(&parts, header::CACHE_CONTROL), expected, "{uri}");
    }
}

#[tokio::test]
async fn traversal_never_leaves_root() {
    let fixture = Fixture::new();
    assert!(fixture.root().join("../secret.txt").exists());
    let attempts = [
        "/../Cargo.toml",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/js/../../../secret.txt",
        "/..%5csecret.txt",
        "/%2f..%2fsecret.txt",
        "/%2F",
        "/index.html%00.js",
        "/%00",
        "/%ff%fe",
    ];
    for files in [fixture.spa(), fixture.plain()] {
        for uri in attempts {
            let (parts, body) = get(&files, uri).await;
            assert!(
                matches!(
                    parts.status,
                    StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
                ),
                "{uri}: {}",
                parts.status
            );
            assert_ne!(body, SECRET, "{uri}");
            assert!(!body.starts_with(b"<!doctype"), "{uri}: {body:?}");
        }
    }
    // The absolute path of the secret, smuggled in as an encoded leading slash.
    let secret = fixture.dir.path().join("secret.txt");
    let uri = format!(
        "/%2f{}",
        secret.display().to_string().trim_start_matches('/')
    );
    let (parts, body) = get(&fixture.spa(), &uri).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST, "{uri}");
    assert_ne!(body, SECRET);
}

#[tokio::test]
async fn other_methods_get_405() {
    let fixture = Fixture::new();
    let files = fixture.spa();
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let (parts, _) = send(&files, request(method.clone(), "/", &[])).await;
        assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(header(&parts, header::ALLOW), "GET, HEAD", "{method}");
    }
}

fn assert_ui_missing_page(parts: &Parts, body: &[u8], root: &Path) {
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(parts, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(parts, header::CACHE_CONTROL), "no-store");
    let page = std::str::from_utf8(body).unwrap();
    assert!(page.contains("takgate is running"), "{page}");
    assert!(page.contains(&root.display().to_string()), "{page}");
    assert!(page.contains("ui_root"), "{page}");
    assert!(page.contains("[[http]]"), "{page}");
}

#[tokio::test]
async fn missing_root_gets_503_page_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-yet-copied");
    for spa_fallback in [true, false] {
        let files = StaticFiles::new(&root, spa_fallback, cache());
        assert_eq!(files.root(), root);
        for uri in ["/", "/map/123", "/assets/js/app-abc123.js"] {
            let (parts, body) = get(&files, uri).await;
            assert_ui_missing_page(&parts, &body, &root);
        }
        let (parts, body) = send(&files, request(Method::HEAD, "/", &[])).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.is_empty());
    }

    // The same instance notices the folder once an init container has filled it.
    let files = StaticFiles::new(&root, true, cache());
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("index.html"), INDEX).unwrap();
    let (parts, body) = get(&files, "/map/123").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, INDEX);
}

#[tokio::test]
async fn spa_root_without_index_gets_503() {
    let fixture = Fixture::new();
    fs::remove_file(fixture.root().join("index.html")).unwrap();
    let files = fixture.spa();
    let (parts, body) = get(&files, "/").await;
    assert_ui_missing_page(&parts, &body, &fixture.root());
    let (parts, body) = get(&files, "/map/123").await;
    assert_ui_missing_page(&parts, &body, &fixture.root());
    // Files that do exist are still served.
    let (parts, body) = get(&files, "/assets/js/app-abc123.js").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, APP_JS);
}

#[tokio::test]
async fn ui_missing_page_escapes_the_path() {
    let files = StaticFiles::new("/nonexistent/<script>alert(1)</script>", true, cache());
    let (parts, body) = get(&files, "/").await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    let page = std::str::from_utf8(&body).unwrap();
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
}

#[tokio::test]
async fn plain_mode_has_no_fallback() {
    let fixture = Fixture::new();
    let files = fixture.plain();
    for uri in ["/map/123", "/assets/js/missing-xyz.js", "/locales"] {
        let (parts, body) = get(&files, uri).await;
        assert!(
            matches!(
                parts.status,
                StatusCode::NOT_FOUND | StatusCode::TEMPORARY_REDIRECT
            ),
            "{uri}: {}",
            parts.status
        );
        assert_ne!(body, INDEX, "{uri}");
    }
    let (parts, _) = get(&files, "/map/123").await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn odd_requests_do_not_panic() {
    let fixture = Fixture::new();
    let long_segment = format!("/{}", "a".repeat(300));
    let long_path = format!("/{}", "abc/".repeat(2000));
    let uris = [
        "*",
        "http://example.com",
        "http://example.com/map/1?x=y",
        "/%",
        "/%zz",
        "/%e2%82",
        "/index.html/",
        "/index.html/extra",
        "/alert.mp3/",
        long_segment.as_str(),
        long_path.as_str(),
    ];
    for files in [fixture.spa(), fixture.plain()] {
        for uri in uris {
            for method in [Method::GET, Method::HEAD] {
                let (parts, _) = send(&files, request(method, uri, &[])).await;
                assert!(
                    parts.status.is_success()
                        || parts.status.is_client_error()
                        || parts.status.is_redirection(),
                    "{uri}: {}",
                    parts.status
                );
            }
        }
        for range in [
            "bytes=",
            "bytes=10-5",
            "bytes=0-1,5-6",
            "nonsense",
            "bytes=-0",
        ] {
            let (parts, _) = get_with(&files, "/alert.mp3", &[("range", range)]).await;
            assert!(!parts.status.is_server_error(), "{range}: {}", parts.status);
        }
    }
}

#[tokio::test]
async fn overlong_paths_are_not_found_rather_than_500() {
    let fixture = Fixture::new();
    let segment = "a".repeat(300);
    let route = format!("/map/{segment}");
    let asset = format!("/assets/js/{segment}.js");
    let deep = format!("/{}", "abc/".repeat(2000));

    let spa = fixture.spa();
    // nginx's try_files treats a name too long to exist as missing, so the app still loads.
    for uri in [&route, &deep] {
        let (parts, body) = get(&spa, uri).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, INDEX);
    }
    let (parts, _) = get(&spa, &asset).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);

    let plain = fixture.plain();
    for uri in [&route, &asset, &deep] {
        let (parts, _) = get(&plain, uri).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
    }
}

#[test]
fn target_follows_servedir_path_rules() {
    let asset = |path| Target::of(path).map(|target| target.under_assets);
    assert_eq!(asset("/assets/js/a.js"), Some(true));
    assert_eq!(asset("/assets/"), Some(true));
    assert_eq!(asset("//assets//js/a.js"), Some(true));
    assert_eq!(asset("/%61ssets/a.js"), Some(true));
    assert_eq!(asset("/./assets/a.js"), Some(true));
    assert_eq!(asset("/assets"), Some(false));
    assert_eq!(asset("/assetsx/a.js"), Some(false));
    assert_eq!(asset("/map/assets/a.js"), Some(false));
    assert_eq!(asset("/"), Some(false));
    assert_eq!(asset("*"), Some(false));
    assert_eq!(asset("/assets/../index.html"), None);
    assert_eq!(asset("/%2e%2e/x"), None);
    assert_eq!(asset("/a%00b"), None);
    assert_eq!(asset("/a%5cb"), None);
    assert_eq!(asset("/%ff"), None);
    assert_eq!(asset("/%2froot"), None);

    let nameable = |path: &str| Target::of(path).map(|target| target.nameable);
    assert_eq!(nameable(&format!("/{}", "a".repeat(255))), Some(true));
    assert_eq!(nameable(&format!("/{}", "a".repeat(256))), Some(false));
    assert_eq!(nameable(&format!("/{}", "ab/".repeat(1000))), Some(false));
}

/// The cache must be invisible: for every kind of request, cold and warm, the answer is the one
/// `ServeDir` gives, header for header and byte for byte.
#[tokio::test]
async fn cached_answers_are_the_answers_from_disk() {
    let fixture = Fixture::new();
    let etag_of = |files: StaticFiles, uri: &'static str| async move {
        let (parts, _) = get(&files, uri).await;
        header(&parts, header::ETAG).to_owned()
    };
    let index_etag = etag_of(fixture.spa(), "/").await;
    let json_etag = etag_of(fixture.spa(), "/locales/en/translation.json").await;
    let modified = {
        let (parts, _) = get(&fixture.spa(), "/").await;
        header(&parts, header::LAST_MODIFIED).to_owned()
    };
    let uris = [
        "/",
        "/index.html",
        "/sub/",
        "/sub",
        "/map/123",
        "/locales/en/translation.json",
        "/%6Cocales/en/./translation.json",
        "/manifest.webmanifest",
        "/alert.mp3",
        "/assets/js/app-abc123.js",
        "/assets/css/app-def456.css",
        "/assets/missing.js",
        "/index.html/",
    ];
    let header_sets: &[&[(&str, &str)]] = &[
        &[],
        &[("accept-encoding", "gzip, deflate, br")],
        &[("accept-encoding", "identity;q=0")],
        &[("accept-encoding", "*")],
        &[("if-none-match", &index_etag)],
        &[("if-none-match", &format!("\"x\", W/{json_etag}"))],
        &[("if-none-match", "\"stale\"")],
        &[("if-modified-since", &modified)],
        &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
        &[
            ("if-none-match", "\"stale\""),
            ("if-modified-since", &modified),
        ],
        &[("range", "bytes=0-3")],
        &[("if-match", "\"nope\"")],
        &[("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    ];
    for spa in [true, false] {
        let root = fixture.root();
        let warm = StaticFiles::new(&root, spa, cache());
        let disk = StaticFiles::new(&root, spa, uncached());
        for uri in uris {
            for headers in header_sets {
                for method in [Method::GET, Method::HEAD] {
                    let want = send(&disk, request(method.clone(), uri, headers)).await;
                    // Twice: the first may read the file, the second is answered from memory.
                    for round in ["cold", "warm"] {
                        let got = send(&warm, request(method.clone(), uri, headers)).await;
                        let what = format!("{method} {uri} {headers:?} spa={spa} {round}");
                        assert_eq!(got.0.status, want.0.status, "{what}");
                        assert_eq!(got.0.headers, want.0.headers, "{what}");
                        assert_eq!(got.1, want.1, "{what}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn a_changed_file_is_served_new_after_the_revalidation_interval() {
    let fixture = Fixture::new();
    let path = fixture.root().join("locales/en/translation.json");
    let slow = Arc::new(FileCache::with_revalidate(
        1 << 20,
        64 << 10,
        Duration::from_secs(3600),
    ));
    let files = StaticFiles::new(fixture.root(), true, slow.clone());
    let (_, body) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(body, TRANSLATION);
    assert_eq!(slow.bytes(), TRANSLATION.len() as u64);

    // Within the interval memory answers, as nginx's open_file_cache does.
    fs::write(&path, r#"{"hello":"Hallo"}"#).unwrap();
    let (_, body) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(body, TRANSLATION);

    // A cache that re-checks sees the new version, and a deleted file is gone at once.
    let files = StaticFiles::new(fixture.root(), true, cache());
    let (parts, body) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(body, r#"{"hello":"Hallo"}"#);
    let etag = header(&parts, header::ETAG).to_owned();
    fs::write(&path, r#"{"hello":"Hej!!"}"#).unwrap();
    let (parts, body) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(body, r#"{"hello":"Hej!!"}"#);
    assert_ne!(header(&parts, header::ETAG), etag);
    fs::remove_file(&path).unwrap();
    let (parts, body) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(parts.status, StatusCode::OK, "SPA fallback");
    assert_eq!(body, INDEX);
}

#[tokio::test]
async fn the_cache_stays_within_its_budget_and_skips_large_files() {
    let fixture = Fixture::new();
    let cache = Arc::new(FileCache::new(70, 70));
    let files = StaticFiles::new(fixture.root(), true, cache.clone());
    // 100 KiB: over max_file, always from disk, never held.
    let (parts, body) = get(&files, "/alert.mp3").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body.len(), MP3_LEN);
    assert_eq!(cache.bytes(), 0);

    let (_, body) = get(&files, "/").await;
    assert_eq!(body, INDEX);
    assert_eq!(cache.bytes(), INDEX.len() as u64);
    // A second file does not fit beside the first: the least recently used one goes.
    let (_, body) = get(&files, "/locales/en/translation.json").await;
    assert_eq!(body, TRANSLATION);
    assert_eq!(cache.bytes(), TRANSLATION.len() as u64);
    let (_, body) = get(&files, "/").await;
    assert_eq!(body, INDEX);
    assert_eq!(cache.bytes(), INDEX.len() as u64);
}

#[tokio::test]
async fn a_path_the_cache_cannot_hold_is_remembered_without_staling_answers() {
    let fixture = Fixture::new();
    let slow = Arc::new(FileCache::with_revalidate(
        1 << 20,
        64 << 10,
        Duration::from_secs(3600),
    ));
    let files = StaticFiles::new(fixture.root(), false, slow.clone());
    let (parts, _) = get(&files, "/late.js").await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let (parts, _) = get(&files, "/alert.mp3").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(slow.passes(), 2);

    // A file that appears is served at once (from disk: the memo only skips the cache).
    fs::write(fixture.root().join("late.js"), APP_JS).unwrap();
    let (parts, body) = get(&files, "/late.js").await;
    assert_eq!(
        (parts.status, body.as_ref()),
        (StatusCode::OK, APP_JS.as_bytes())
    );
    assert_eq!(slow.bytes(), 0);
    // Once the interval is over, the cache takes it.
    let quick = cache();
    let files = StaticFiles::new(fixture.root(), false, quick.clone());
    let (parts, _) = get(&files, "/later.js").await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(quick.passes(), 1);
    fs::write(fixture.root().join("later.js"), APP_JS).unwrap();
    let (_, body) = get(&files, "/later.js").await;
    assert_eq!(body, APP_JS);
    assert_eq!((quick.bytes(), quick.passes()), (APP_JS.len() as u64, 0));

    // A scan of random paths stays within the memo's bound.
    let files = StaticFiles::new(fixture.root(), false, slow.clone());
    for i in 0..2_500 {
        let (parts, _) = get(&files, &format!("/scan-{i}.php")).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
    }
    assert!(slow.passes() <= 1024, "{} paths held", slow.passes());
}
