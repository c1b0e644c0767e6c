//! The web UI through a listener: single-page-app fallback, hashed assets, revalidation, and
//! the page shown when the UI folder is missing.

use takgate_tests::client::get;
use takgate_tests::proxy::{base_config, TestProxy};
use takgate_tests::upstream::FakeUpstream;

async fn start(ui_root: &std::path::Path, upstream: &FakeUpstream) -> TestProxy {
    TestProxy::start(&format!(
        r#"{}
[[http]]
name = "web"
listen = "127.0.0.1:0"
profile = "web"
ui_root = "{}"
"#,
        base_config(&upstream.url()),
        ui_root.display()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_is_served_with_spa_fallback_and_revalidation() {
    let up = FakeUpstream::start().await;
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(
        ui.path().join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::create_dir_all(ui.path().join("assets/js")).unwrap();
    std::fs::write(
        ui.path().join("assets/js/index-AbC123.js"),
        "console.log(1)",
    )
    .unwrap();
    let proxy = start(ui.path(), &up).await;
    let addr = proxy.http("web");

    let page = get(addr, "/map/track/42", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=root"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));

    let asset = get(addr, "/assets/js/index-AbC123.js", &[]).await;
    assert_eq!(asset.status, 200);
    assert!(asset.header("cache-control").unwrap().contains("immutable"));
    let etag = asset.header("etag").unwrap().to_owned();
    let again = get(
        addr,
        "/assets/js/index-AbC123.js",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    assert_eq!(
        get(addr, "/assets/js/index-Stale99.js", &[]).await.status,
        404
    );
    assert!(up.seen().is_empty(), "static requests never reach OTS");
    proxy
        .wait_metric("takgate_http_requests_total", &[("route", "static")], 4.0)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_ui_folder_gets_a_page_that_says_so() {
    let up = FakeUpstream::start().await;
    let missing = std::path::Path::new("/nonexistent/takgate-ui");
    let proxy = start(missing, &up).await;
    let page = get(proxy.http("web"), "/", &[]).await;
    assert_eq!(page.status, 503);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("/nonexistent/takgate-ui"));
    assert!(page.text().contains("ui_root"));
    // The API still answers.
    assert_eq!(get(proxy.http("web"), "/api/health", &[]).await.status, 200);
}
