use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex as StdMutex;

use http_body_util::combinators::BoxBody;
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;

const ADMIN: &str = "administrator";
const ADMIN_PASSWORD: &str = "password";
const STATIC_TOKEN: &str = "static-token";

/// Bounds every await that involves the network.
async fn within<F: Future>(fut: F) -> F::Output {
    timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out")
}

#[derive(Debug, Clone)]
enum Mode {
    Normal,
    /// 503 for every request, as a proxy in front of a stopped OTS would.
    Down,
    /// Never answers.
    Hang,
    /// Status 200 with this body instead of the user list.
    Body(String),
    /// A body of this many bytes, sent chunked (no Content-Length).
    Chunked(usize),
    /// OTS with LDAP enabled.
    Ldap,
}

/// OpenTAK Server's `/api/login` and `/api/users/all`, as far as takgate uses them.
struct FakeOts {
    addr: SocketAddr,
    users: StdMutex<Vec<(String, bool)>>,
    mode: StdMutex<Mode>,
    valid_tokens: StdMutex<HashSet<String>>,
    issued: AtomicUsize,
    logins: AtomicUsize,
    /// `/api/users/all` requests so far, including refused ones.
    lists: watch::Sender<usize>,
    task: StdMutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeOts {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

impl FakeOts {
    async fn start(users: &[(&str, bool)]) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            users: StdMutex::new(users.iter().map(|(n, a)| (n.to_string(), *a)).collect()),
            mode: StdMutex::new(Mode::Normal),
            valid_tokens: StdMutex::new(HashSet::from([STATIC_TOKEN.to_owned()])),
            issued: AtomicUsize::new(0),
            logins: AtomicUsize::new(0),
            lists: watch::Sender::new(0),
            task: StdMutex::new(None),
        });
        // Weak, so that dropping the test's handle stops the server.
        let weak = Arc::downgrade(&fake);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Some(fake) = weak.upgrade() else { return };
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        *fake.task.lock().unwrap() = Some(task);
        fake
    }

    fn api(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn set_user(&self, name: &str, active: bool) {
        let mut users = self.users.lock().unwrap();
        match users.iter_mut().find(|(n, _)| n == name) {
            Some(user) => user.1 = active,
            None => users.push((name.to_owned(), active)),
        }
    }

    fn lists(&self) -> usize {
        *self.lists.borrow()
    }

    fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }

    fn revoke_tokens(&self) {
        self.valid_tokens.lock().unwrap().clear();
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        if path == "/api/users/all" {
            self.lists.send_modify(|n| *n += 1);
        }
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::Down => return json(503, "{}"),
            Mode::Hang => std::future::pending::<()>().await,
            _ => {}
        }
        match (req.method().clone(), path.as_str()) {
            (Method::POST, "/api/login") => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                self.login(&query, &body)
            }
            (Method::GET, "/api/users/all") => {
                let wants_json = req
                    .headers()
                    .get(header::ACCEPT)
                    .is_some_and(|v| v == "application/json");
                let token = req
                    .headers()
                    .get("authentication-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let authorised =
                    token.is_some_and(|t| self.valid_tokens.lock().unwrap().contains(&t));
                if !authorised {
                    // Flask-Security redirects browsers and answers 401 to JSON clients.
                    if !wants_json {
                        let mut resp = json(302, "");
                        resp.headers_mut().insert(
                            header::LOCATION,
                            HeaderValue::from_static("/api/login?next=%2Fapi%2Fusers%2Fall"),
                        );
                        return resp;
                    }
                    return json(
                        401,
                        r#"{"meta":{"code":401},"response":{"errors":["You must sign in to view this resource."]}}"#,
                    );
                }
                match mode {
                    Mode::Body(body) => json(200, &body),
                    Mode::Chunked(len) => chunked(len),
                    Mode::Ldap => json(
                        400,
                        r#"{"success":false,"error":"LDAP is enabled, please use your LDAP server to manage users"}"#,
                    ),
                    _ => json(200, &self.user_list()),
                }
            }
            _ => json(404, "{}"),
        }
    }

    fn login(&self, query: &str, body: &[u8]) -> Response<BoxBody<Bytes, Infallible>> {
        self.logins.fetch_add(1, Ordering::SeqCst);
        let creds: serde_json::Value = serde_json::from_slice(body).unwrap();
        if creds["username"] != ADMIN || creds["password"] != ADMIN_PASSWORD {
            return json(
                400,
                r#"{"meta":{"code":400},"response":{"errors":["Invalid password"]}}"#,
            );
        }
        let mut user = serde_json::json!({});
        if query.split('&').any(|kv| kv == "include_auth_token") {
            let n = self.issued.fetch_add(1, Ordering::SeqCst);
            let token = format!("login-token-{n}");
            self.valid_tokens.lock().unwrap().insert(token.clone());
            user["authentication_token"] = token.into();
        }
        let reply = serde_json::json!({
            "meta": {"code": 200},
            "response": {"csrf_token": "csrf", "tf_required": false, "user": user},
        });
        json(200, &reply.to_string())
    }

    /// What OTS's `User.serialize()` gives, extra fields included.
    fn user_list(&self) -> String {
        let users: Vec<serde_json::Value> = self
            .users
            .lock()
            .unwrap()
            .iter()
            .map(|(name, active)| {
                serde_json::json!({
                    "username": name,
                    "active": active,
                    "last_login_at": null,
                    "email": null,
                    "login_count": 3,
                    "euds": [{"uid": "ANDROID-1", "callsign": "X"}],
                    "video_streams": [],
                    "roles": [{"name": "user", "description": null}],
                    "groups": [],
                })
            })
            .collect();
        serde_json::Value::from(users).to_string()
    }
}

fn json(status: u16, body: &str) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())).boxed())
        .unwrap()
}

fn chunked(len: usize) -> Response<BoxBody<Bytes, Infallible>> {
    const CHUNK: usize = 1 << 20;
    let chunk = Bytes::from(vec![b' '; CHUNK]);
    let frames = (0..len.div_ceil(CHUNK)).map(move |i| {
        let n = CHUNK.min(len - i * CHUNK);
        Ok::<_, Infallible>(Frame::data(chunk.slice(..n)))
    });
    Response::builder()
        .status(200)
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
        .unwrap()
}

fn config(fake: &FakeOts) -> IdentityConfig {
    IdentityConfig::new(fake.api(), Credentials::Token(STATIC_TOKEN.to_owned()))
}

fn login_credentials() -> Credentials {
    Credentials::Login {
        username: ADMIN.to_owned(),
        password: ADMIN_PASSWORD.to_owned(),
    }
}

/// A config aimed at a port nothing listens on.
async fn dead_api() -> Uri {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}").parse().unwrap()
}

#[tokio::test]
async fn allowed_inactive_and_unknown() {
    let fake = FakeOts::start(&[("alice", true), ("bob", false)]).await;
    let users = ActiveUsers::new(config(&fake)).unwrap();
    within(users.refresh()).await.unwrap();

    assert_eq!(within(users.check("alice")).await, Decision::Allowed);
    assert_eq!(within(users.check("bob")).await, Decision::Inactive);
    assert_eq!(within(users.check("carol")).await, Decision::Unknown);
    // OTS's find_user(username=CN) is exact.
    assert_eq!(within(users.check("Alice")).await, Decision::Unknown);
    assert_eq!(within(users.check("alice ")).await, Decision::Unknown);
    assert_eq!(within(users.check("")).await, Decision::Unknown);

    assert!(users.is_active("alice"));
    assert!(!users.is_active("bob"));
    assert!(!users.is_active("carol"));
    let status = users.status();
    assert!(status.loaded && status.last_refresh_ok && !status.serving_stale);
    assert_eq!((status.users, status.active_users), (2, 1));
    assert_eq!(status.generation, 1);
    assert!(status.last_success.is_some());
    assert_eq!(status.last_error, None);
}

#[tokio::test]
async fn first_check_loads_the_set() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let users = ActiveUsers::new(config(&fake)).unwrap();
    assert_eq!(within(users.check("alice")).await, Decision::Allowed);
    assert_eq!(fake.lists(), 1);
    // Allowed from the cache: no further request.
    assert_eq!(within(users.check("alice")).await, Decision::Allowed);
    assert_eq!(fake.lists(), 1);
}

#[tokio::test]
async fn user_added_after_the_refresh_gets_in() {
    let fake = FakeOts::start(&[("alice", true), ("bob", false)]).await;
    let mut cfg = config(&fake);
    cfg.min_miss_refresh_interval = Duration::ZERO;
    let users = ActiveUsers::new(cfg).unwrap();
    within(users.refresh()).await.unwrap();
    assert_eq!(fake.lists(), 1);

    fake.set_user("dave", true);
    assert_eq!(within(users.check("dave")).await, Decision::Allowed);
    assert_eq!(fake.lists(), 2);

    // An activation is seen the same way.
    fake.set_user("bob", true);
    assert_eq!(within(users.check("bob")).await, Decision::Allowed);
    assert_eq!(fake.lists(), 3);
}

#[tokio::test]
async fn refresh_on_miss_is_rate_limited() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let mut cfg = config(&fake);
    cfg.min_miss_refresh_interval = Duration::from_secs(3600);
    let users = ActiveUsers::new(cfg).unwrap();
    within(users.refresh()).await.unwrap();
    assert_eq!(fake.lists(), 1);

    assert_eq!(within(users.check("mallory")).await, Decision::Unknown);
    assert_eq!(within(users.check("mallory")).await, Decision::Unknown);
    assert_eq!(within(users.check("trudy")).await, Decision::Unknown);
    assert_eq!(fake.lists(), 2, "two quick misses, one extra request");

    // Concurrent misses share the limit as well.
    let (a, b) = within(async { tokio::join!(users.check("x"), users.check("y")) }).await;
    assert_eq!((a, b), (Decision::Unknown, Decision::Unknown));
    assert_eq!(fake.lists(), 2);
}

#[tokio::test]
async fn miss_refresh_is_allowed_again_after_the_interval() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let mut cfg = config(&fake);
    cfg.min_miss_refresh_interval = Duration::from_secs(3600);
    let users = ActiveUsers::new(cfg).unwrap();
    within(users.refresh()).await.unwrap();
    assert_eq!(within(users.check("dave")).await, Decision::Unknown);
    fake.set_user("dave", true);
    assert_eq!(within(users.check("dave")).await, Decision::Unknown);
    assert_eq!(fake.lists(), 2);

    // Moved on only while nothing is in flight: a paused clock jumps ahead
    // whenever the runtime looks idle, loopback exchanges included.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3600)).await;
    tokio::time::resume();

    assert_eq!(within(users.check("dave")).await, Decision::Allowed);
    assert_eq!(fake.lists(), 3);
}

#[tokio::test]
async fn without_a_miss_interval_each_miss_refreshes() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let mut cfg = config(&fake);
    cfg.min_miss_refresh_interval = Duration::ZERO;
    let users = ActiveUsers::new(cfg).unwrap();
    within(users.refresh()).await.unwrap();
    assert_eq!(within(users.check("mallory")).await, Decision::Unknown);
    assert_eq!(within(users.check("mallory")).await, Decision::Unknown);
    assert_eq!(fake.lists(), 3);
}

/// Real time with a short period. Paused time would be faster, but tokio
/// advances a paused clock whenever the runtime looks idle, which it does
/// between the steps of a loopback exchange, so every request would time out.
#[tokio::test]
async fn periodic_refresh_flips_is_active_and_bumps_generation() {
    const PERIOD: Duration = Duration::from_millis(50);
    let fake = FakeOts::start(&[("alice", true), ("bob", true)]).await;
    let mut cfg = config(&fake);
    cfg.refresh = PERIOD;
    let users = ActiveUsers::new(cfg).unwrap();
    let mut generation = users.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(users.clone().run(async {
        let _ = stopped.await;
    }));

    within(generation.wait_for(|g| *g == 1)).await.unwrap();
    assert!(users.is_active("alice"));

    // The change is seen by a later periodic refresh (how many ran in between depends on
    // scheduling, so only "at least one more" is asserted).
    fake.set_user("alice", false);
    within(generation.wait_for(|g| *g == 2)).await.unwrap();
    assert!(!users.is_active("alice"));
    assert!(users.is_active("bob"));
    assert!(fake.lists() >= 2);

    // Refreshes that change nothing do not wake sessions.
    let mut lists = fake.lists.subscribe();
    // Refreshes run one after another, so once the fifth has reached OTS the
    // fourth has stored its result.
    within(lists.wait_for(|n| *n >= 5)).await.unwrap();
    assert!(users.status().refresh_attempts >= 4);
    assert_eq!(users.status().generation, 2);
    assert!(!generation.has_changed().unwrap());

    // A deleted user is as gone as a deactivated one.
    fake.users.lock().unwrap().retain(|(n, _)| n != "bob");
    within(generation.changed()).await.unwrap();
    assert!(!users.is_active("bob"));
    assert_eq!(*generation.borrow_and_update(), 3);

    stop.send(()).unwrap();
    within(runner).await.unwrap();
}

#[tokio::test]
async fn run_returns_on_shutdown_during_a_hung_refresh() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    fake.set_mode(Mode::Hang);
    let mut cfg = config(&fake);
    cfg.timeout = Duration::from_secs(3600);
    let users = ActiveUsers::new(cfg).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(users.run(async {
        let _ = stopped.await;
    }));
    within(fake.lists.subscribe().wait_for(|n| *n == 1))
        .await
        .unwrap();
    stop.send(()).unwrap();
    within(runner).await.unwrap();
}

#[tokio::test]
async fn ots_down_fail_closed_refuses() {
    let fake = FakeOts::start(&[("alice", true), ("bob", false)]).await;
    let mut cfg = config(&fake);
    cfg.min_miss_refresh_interval = Duration::ZERO;
    let users = ActiveUsers::new(cfg).unwrap();
    within(users.refresh()).await.unwrap();

    fake.set_mode(Mode::Down);
    let err = within(users.refresh()).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Status { status, .. } if status == 503),
        "{err}"
    );
    let before = fake.lists();
    assert_eq!(within(users.check("alice")).await, Decision::Unavailable);
    assert_eq!(fake.lists(), before + 1, "asks OTS once before refusing");
    assert_eq!(within(users.check("bob")).await, Decision::Unavailable);

    let status = users.status();
    assert!(!status.last_refresh_ok && status.serving_stale);
    assert!(status.last_error.as_deref().unwrap().contains("503"));
    assert_eq!(status.refresh_failures, 3);
    // Live sessions are not cut because the API is down.
    assert!(users.is_active("alice"));

    fake.set_mode(Mode::Normal);
    assert_eq!(within(users.check("alice")).await, Decision::Allowed);
    let status = users.status();
    assert!(status.last_refresh_ok && !status.serving_stale);
}

#[tokio::test]
async fn ots_down_last_known_serves_the_last_set() {
    let fake = FakeOts::start(&[("alice", true), ("bob", false)]).await;
    let mut cfg = config(&fake);
    cfg.on_unavailable = Unavailable::LastKnown;
    cfg.min_miss_refresh_interval = Duration::ZERO;
    let users = ActiveUsers::new(cfg).unwrap();
    within(users.refresh()).await.unwrap();

    fake.set_mode(Mode::Down);
    within(users.refresh()).await.unwrap_err();
    let before = fake.lists();
    assert_eq!(within(users.check("alice")).await, Decision::Allowed);
    assert_eq!(fake.lists(), before, "allowed from the cache");
    assert_eq!(within(users.check("bob")).await, Decision::Inactive);
    assert_eq!(within(users.check("carol")).await, Decision::Unknown);
    let status = users.status();
    assert!(status.serving_stale && !status.last_refresh_ok);
    assert!(status.last_error.is_some());
    assert_eq!((status.users, status.active_users), (2, 1));
}

#[tokio::test]
async fn never_loaded_refuses_under_either_policy() {
    for policy in [Unavailable::FailClosed, Unavailable::LastKnown] {
        let mut cfg = IdentityConfig::new(
            dead_api().await,
            Credentials::Token(STATIC_TOKEN.to_owned()),
        );
        cfg.on_unavailable = policy;
        let users = ActiveUsers::new(cfg).unwrap();
        assert_eq!(within(users.check("alice")).await, Decision::Unavailable);
        let err = within(users.refresh()).await.unwrap_err();
        assert!(matches!(err, IdentityError::Request { .. }), "{err}");
        let status = users.status();
        assert!(!status.loaded && !status.serving_stale && !status.last_refresh_ok);
        assert_eq!(status.generation, 0);
        assert!(!users.is_active("alice"));
    }
}

#[tokio::test]
async fn login_gets_a_token_and_logs_in_again_after_401() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let users = ActiveUsers::new(IdentityConfig::new(fake.api(), login_credentials())).unwrap();

    within(users.refresh()).await.unwrap();
    assert_eq!((fake.logins(), fake.lists()), (1, 1));
    within(users.refresh()).await.unwrap();
    assert_eq!((fake.logins(), fake.lists()), (1, 2), "token reused");

    fake.revoke_tokens();
    fake.set_user("alice", false);
    within(users.refresh()).await.unwrap();
    assert_eq!((fake.logins(), fake.lists()), (2, 4), "401, login, retry");
    assert!(!users.is_active("alice"));
}

#[tokio::test]
async fn wrong_password_is_reported() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let creds = Credentials::Login {
        username: ADMIN.to_owned(),
        password: "nope".to_owned(),
    };
    let users = ActiveUsers::new(IdentityConfig::new(fake.api(), creds)).unwrap();
    let err = within(users.refresh()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "POST /api/login: HTTP 400 Bad Request (Invalid password)"
    );
    assert_eq!(fake.lists(), 0);
}

#[tokio::test]
async fn refused_static_token_is_not_retried() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    fake.revoke_tokens();
    let users = ActiveUsers::new(config(&fake)).unwrap();
    let err = within(users.refresh()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Unauthorized { .. }), "{err}");
    assert_eq!((fake.logins(), fake.lists()), (0, 1));
}

#[tokio::test]
async fn ldap_mode_is_reported_with_its_reason() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    fake.set_mode(Mode::Ldap);
    let users = ActiveUsers::new(config(&fake)).unwrap();
    let err = within(users.refresh()).await.unwrap_err().to_string();
    assert!(
        err.contains("400") && err.contains("LDAP is enabled"),
        "{err}"
    );
}

#[tokio::test]
async fn huge_or_malformed_responses_are_errors() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    let users = ActiveUsers::new(config(&fake)).unwrap();
    within(users.refresh()).await.unwrap();

    let huge = format!("[{}]", " ".repeat(MAX_BODY));
    fake.set_mode(Mode::Body(huge));
    let err = within(users.refresh()).await.unwrap_err();
    assert!(matches!(err, IdentityError::TooLarge { .. }), "{err}");

    fake.set_mode(Mode::Chunked(MAX_BODY + 1));
    let err = within(users.refresh()).await.unwrap_err();
    assert!(matches!(err, IdentityError::TooLarge { .. }), "{err}");

    for body in [
        "",
        "not json",
        "[",
        "{}",
        "42",
        r#"{"users": 5}"#,
        r#"{"results": [], "users": []}"#,
        r#"[{"username": 5, "active": true}]"#,
        r#"[{"username": "alice", "active": "yes"}]"#,
        r#"["alice"]"#,
    ] {
        fake.set_mode(Mode::Body(body.to_owned()));
        let err = within(users.refresh()).await.unwrap_err();
        assert!(matches!(err, IdentityError::Json { .. }), "{body:?}: {err}");
    }

    // The last good set is kept.
    assert!(users.is_active("alice"));
    assert_eq!(users.status().generation, 1);
}

#[tokio::test]
async fn a_hung_ots_times_out() {
    let fake = FakeOts::start(&[("alice", true)]).await;
    fake.set_mode(Mode::Hang);
    let mut cfg = config(&fake);
    cfg.timeout = Duration::from_millis(200);
    let users = ActiveUsers::new(cfg).unwrap();
    let err = within(users.refresh()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Timeout { .. }), "{err}");
    assert_eq!(within(users.check("alice")).await, Decision::Unavailable);
}

#[test]
fn accepted_list_shapes() {
    let parse = |s: &str| parse_users(s.as_bytes()).unwrap();
    let expected = HashMap::from([
        ("alice".to_owned(), true),
        ("bob".to_owned(), false),
        ("carol".to_owned(), false),
    ]);
    let list = r#"[{"username":"alice","active":true,"roles":[{"name":"x"}]},
                   {"username":"bob","active":false},
                   {"username":"carol"},
                   {"active":true},
                   {"username":"","active":true}]"#;
    assert_eq!(parse(list), expected);
    assert_eq!(
        parse(&format!(
            r#"{{"results":{list},"total":3,"current_page":1}}"#
        )),
        expected
    );
    assert_eq!(
        parse(&format!(r#"{{"success":true,"users":{list}}}"#)),
        expected
    );
    assert_eq!(parse("[]"), HashMap::new());
    // Should a name appear twice, inactive wins.
    assert_eq!(
        parse(
            r#"[{"username":"a","active":true},{"username":"a","active":false},
                {"username":"b","active":false},{"username":"b","active":true}]"#
        ),
        HashMap::from([("a".to_owned(), false), ("b".to_owned(), false)])
    );
}

#[test]
fn api_address_is_checked() {
    let make = |api: &str| {
        ActiveUsers::new(IdentityConfig::new(
            api.parse().unwrap(),
            Credentials::Token("t".into()),
        ))
    };
    for bad in [
        "https://127.0.0.1:8081",
        "/api",
        "127.0.0.1:8081",
        "http://127.0.0.1:8081/?x=1",
    ] {
        assert!(
            matches!(make(bad), Err(IdentityError::InvalidApi { .. })),
            "{bad}"
        );
    }
    let users = make("http://127.0.0.1:8081/ots/").unwrap();
    assert_eq!(
        users.inner.users_url.to_string(),
        "http://127.0.0.1:8081/ots/api/users/all"
    );
    assert_eq!(
        users.inner.login_url.to_string(),
        "http://127.0.0.1:8081/ots/api/login?include_auth_token"
    );
    let users = make("http://localhost:8081").unwrap();
    assert_eq!(
        users.inner.users_url.to_string(),
        "http://localhost:8081/api/users/all"
    );

    let mut cfg = IdentityConfig::new(
        "http://127.0.0.1:8081".parse().unwrap(),
        Credentials::Token("t".into()),
    );
    cfg.refresh = Duration::ZERO;
    assert!(matches!(
        ActiveUsers::new(cfg.clone()),
        Err(IdentityError::InvalidConfig(_))
    ));
    cfg.refresh = DEFAULT_REFRESH;
    cfg.credentials = Credentials::Token("bad\ntoken".into());
    assert!(matches!(
        ActiveUsers::new(cfg),
        Err(IdentityError::InvalidConfig(_))
    ));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let cfg = IdentityConfig::new(
        "http://127.0.0.1:8081".parse().unwrap(),
        Credentials::Login {
            username: "svc".into(),
            password: "hunter2".into(),
        },
    );
    let shown = format!("{cfg:?}");
    assert!(
        shown.contains("svc") && !shown.contains("hunter2"),
        "{shown}"
    );
    let shown = format!("{:?}", Credentials::Token("s3cret".into()));
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn error_detail_is_bounded() {
    let long = "é".repeat(300);
    let body = serde_json::json!({ "error": long }).to_string();
    let detail = error_detail(body.as_bytes()).unwrap();
    assert!(detail.len() <= 200 && detail.chars().all(|c| c == 'é'));
    assert_eq!(error_detail(b"<html>"), None);
}
