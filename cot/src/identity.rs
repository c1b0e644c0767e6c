//! Whether a client certificate's CN names an active OpenTAK Server user.
//!
//! OTS's own SSL listener looks the CN up as a username (exact, case-sensitive)
//! and closes the connection if there is no such user or the user is inactive.
//! It does so only at connect time. takgate keeps the set of users in memory,
//! refreshed from `GET /api/users/all`, so that terminate mode can make the same
//! decision and also close live sessions of users deactivated since.
//!
//! How the answers are shaped, checked against OTS's source:
//! - `/api/users/all` (administrator role) returns a bare JSON list of
//!   `User.serialize()` objects, which carry `"username"` and `"active"` among
//!   many other fields. With LDAP enabled it answers 400 and an `"error"`.
//! - `POST /api/login?include_auth_token` answers Flask-Security's
//!   `{"meta": …, "response": {"user": {"authentication_token": "…"}}}`.
//! - Without `Accept: application/json` an unauthenticated request is
//!   redirected to the login page instead of answered 401, so that header is
//!   always sent.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::Scheme;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokio::sync::{watch, Mutex};
use tokio::time::{Instant, MissedTickBehavior};

use crate::upstream_client::{ClientSettings, UpstreamClient};

#[cfg(test)]
mod tests;

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MIN_MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Largest response body read from OTS. A user entry is a few hundred bytes
/// (more with many EUDs), so this is tens of thousands of users.
pub const MAX_BODY: usize = 16 << 20;

/// An idle connection to OTS's API is closed after this long (hyper's default).
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);
const USERS_PATH: &str = "/api/users/all";
const LOGIN_PATH: &str = "/api/login?include_auth_token";
const WHAT_USERS: &str = "GET /api/users/all";
const WHAT_LOGIN: &str = "POST /api/login";

/// What [`ActiveUsers::check`] does when OTS cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Refuse every new connection until a refresh succeeds again.
    FailClosed,
    /// Decide from the last set OTS returned; refuse if there never was one.
    LastKnown,
}

/// How takgate authenticates to OTS's API. The account needs the
/// `administrator` role (no other role can list users) and no two-factor auth.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A Flask-Security token, sent as `Authentication-Token`. It does not
    /// expire, so nothing is done on a 401 but report it.
    Token(String),
    /// Logged in with `POST /api/login?include_auth_token`; logged in again
    /// when the token is refused.
    Login { username: String, password: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Configs get logged; secrets must not be.
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::Login { username, .. } => f
                .debug_struct("Login")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Base of OTS's API, plain HTTP (it listens on loopback), e.g.
    /// `http://127.0.0.1:8081`. A path prefix is kept.
    pub api: Uri,
    pub credentials: Credentials,
    /// Time between background refreshes. Must not be zero.
    pub refresh: Duration,
    /// Limit for each request to OTS, connecting included. Must not be zero.
    pub timeout: Duration,
    pub on_unavailable: Unavailable,
    /// Least time between two refreshes triggered by [`ActiveUsers::check`],
    /// so that a client retrying with an unknown CN cannot load OTS.
    pub min_miss_refresh_interval: Duration,
}

impl IdentityConfig {
    /// A config with the default timings and [`Unavailable::FailClosed`].
    pub fn new(api: Uri, credentials: Credentials) -> Self {
        Self {
            api,
            credentials,
            refresh: DEFAULT_REFRESH,
            timeout: DEFAULT_TIMEOUT,
            on_unavailable: Unavailable::FailClosed,
            min_miss_refresh_interval: DEFAULT_MIN_MISS_REFRESH_INTERVAL,
        }
    }
}

/// The answer for one CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allowed,
    /// OTS has the user, with `active` false (or missing).
    Inactive,
    /// OTS has no such user.
    Unknown,
    /// OTS could not be asked and the policy (or the lack of any earlier
    /// answer) says refuse.
    Unavailable,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Self::Allowed
    }

    /// A stable lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Inactive => "inactive",
            Self::Unknown => "unknown",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of the refresh state, for metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// A user set has been loaded at least once.
    pub loaded: bool,
    /// The latest refresh succeeded.
    pub last_refresh_ok: bool,
    pub last_success: Option<SystemTime>,
    /// Why the latest refresh failed, if it did.
    pub last_error: Option<String>,
    /// Users in the cached set, active or not.
    pub users: usize,
    pub active_users: usize,
    /// The latest refresh failed and an older set is still in use: by
    /// [`ActiveUsers::is_active`] under either policy, and by
    /// [`ActiveUsers::check`] under [`Unavailable::LastKnown`].
    pub serving_stale: bool,
    /// The value [`ActiveUsers::subscribe`] receivers see.
    pub generation: u64,
    pub refresh_attempts: u64,
    pub refresh_failures: u64,
}

/// Why a refresh failed. Each message names the request, since these end up
/// in single log lines and in [`Status::last_error`].
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("OTS API address {uri}: {reason}")]
    InvalidApi { uri: String, reason: &'static str },
    #[error("identity config: {0}")]
    InvalidConfig(&'static str),
    #[error("{what}: no complete answer within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("{what}: {cause}")]
    Request { what: &'static str, cause: String },
    #[error("{what}: HTTP {status}{}", parenthesised(.detail))]
    Status {
        what: &'static str,
        status: StatusCode,
        detail: Option<String>,
    },
    #[error("{what}: token refused (HTTP 401)")]
    Unauthorized { what: &'static str },
    #[error("{what}: response larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("{what}: unexpected JSON: {cause}")]
    Json {
        what: &'static str,
        cause: serde_json::Error,
    },
    #[error("{what}: {detail}")]
    Unexpected {
        what: &'static str,
        detail: &'static str,
    },
}

/// The set of OTS users and whether each is active, kept current in the
/// background. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ActiveUsers {
    inner: Arc<Inner>,
}

struct Inner {
    config: IdentityConfig,
    users_url: Uri,
    login_url: Uri,
    client: UpstreamClient<Full<Bytes>>,
    /// Written only while `fetch` is held, so a load-modify-store cannot race.
    state: ArcSwap<State>,
    generation: watch::Sender<u64>,
    /// Serialises requests to OTS and holds what they share.
    fetch: Mutex<Fetcher>,
    /// Refreshes begun so far; lets a waiter see whether one began after it asked.
    started: AtomicU64,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// Username → active.
    users: Option<Arc<HashMap<String, bool>>>,
    active: usize,
    last_refresh_ok: bool,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    attempts: u64,
    failures: u64,
}

#[derive(Default)]
struct Fetcher {
    /// The token from the last login, for [`Credentials::Login`].
    token: Option<String>,
    last_on_demand: Option<Instant>,
}

/// What started a refresh; only changes how a failure is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Periodic,
    OnDemand,
    Explicit,
}

impl ActiveUsers {
    /// Checks the config and builds the client; nothing is requested yet.
    /// Call [`run`](Self::run) (and optionally [`refresh`](Self::refresh) first).
    pub fn new(config: IdentityConfig) -> Result<Self, IdentityError> {
        if config.refresh.is_zero() {
            return Err(IdentityError::InvalidConfig("refresh must not be zero"));
        }
        if config.timeout.is_zero() {
            return Err(IdentityError::InvalidConfig("timeout must not be zero"));
        }
        let users_url = endpoint(&config.api, USERS_PATH)?;
        let login_url = endpoint(&config.api, LOGIN_PATH)?;
        if let Credentials::Token(token) = &config.credentials {
            HeaderValue::from_str(token)
                .map_err(|_| IdentityError::InvalidConfig("token is not a valid header value"))?;
        }

        let client = UpstreamClient::new(ClientSettings {
            connect_timeout: config.timeout,
            pool_idle_timeout: IDLE_CONNECTION_TIMEOUT,
            // One request at a time goes to OTS; more idle connections are waste.
            max_idle_per_host: 1,
            tls: None,
        })
        .map_err(|_| IdentityError::InvalidConfig("building the HTTP client"))?;

        Ok(Self {
            inner: Arc::new(Inner {
                config,
                users_url,
                login_url,
                client,
                state: ArcSwap::from_pointee(State::default()),
                generation: watch::Sender::new(0),
                fetch: Mutex::new(Fetcher::default()),
                started: AtomicU64::new(0),
            }),
        })
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    /// Refreshes now and every `refresh` after, until `shutdown` resolves.
    /// A refresh in flight at shutdown is abandoned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut interval = tokio::time::interval(self.inner.config.refresh);
        // After a slow refresh, wait a full period rather than catch up in a burst.
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                _ = interval.tick() => {}
            }
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                _ = self.refresh_with(Trigger::Periodic) => {}
            }
        }
    }

    /// Refreshes now, not rate limited: for loading the set before accepting
    /// connections, and for tests.
    pub async fn refresh(&self) -> Result<(), IdentityError> {
        self.refresh_with(Trigger::Explicit).await
    }

    /// Whether a client presenting a certificate with this CN may connect.
    ///
    /// A CN that is not in the cached set as active causes one refresh first
    /// (at most one per `min_miss_refresh_interval`), so a user created or
    /// activated a moment ago gets in. An empty CN is never a user.
    pub async fn check(&self, cn: &str) -> Decision {
        if cn.is_empty() {
            return Decision::Unknown;
        }
        if let Some(decision) = self.decide(cn, false) {
            return decision;
        }
        self.refresh_on_demand().await;
        self.decide(cn, true).unwrap_or(Decision::Unavailable)
    }

    /// Whether the cached set has this user as active. For live sessions,
    /// which re-check whenever [`subscribe`](Self::subscribe) changes.
    ///
    /// This always answers from the last set OTS returned, whatever the
    /// policy: a session is closed on evidence that its user was deactivated
    /// or deleted, not because OTS's API is briefly unreachable.
    pub fn is_active(&self, cn: &str) -> bool {
        let state = self.inner.state.load();
        state
            .users
            .as_ref()
            .is_some_and(|users| users.get(cn) == Some(&true))
    }

    /// A counter bumped each time a refresh changes the set (the first load
    /// included). Refreshes that change nothing leave it alone, so idle
    /// sessions are not woken every period.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    pub fn status(&self) -> Status {
        let state = self.inner.state.load();
        let loaded = state.users.is_some();
        Status {
            loaded,
            last_refresh_ok: state.last_refresh_ok,
            last_success: state.last_success,
            last_error: state.last_error.clone(),
            users: state.users.as_ref().map_or(0, |u| u.len()),
            active_users: state.active,
            serving_stale: loaded && !state.last_refresh_ok,
            generation: *self.inner.generation.borrow(),
            refresh_attempts: state.attempts,
            refresh_failures: state.failures,
        }
    }

    /// The decision from the cached state. Without `last_word`, `None` unless
    /// the CN is allowed: anything else is worth asking OTS again.
    fn decide(&self, cn: &str, last_word: bool) -> Option<Decision> {
        let state = self.inner.state.load();
        let unusable =
            !state.last_refresh_ok && self.inner.config.on_unavailable == Unavailable::FailClosed;
        let decision = match &state.users {
            None => Decision::Unavailable,
            Some(_) if unusable => Decision::Unavailable,
            Some(users) => match users.get(cn) {
                Some(true) => Decision::Allowed,
                Some(false) => Decision::Inactive,
                None => Decision::Unknown,
            },
        };
        (last_word || decision == Decision::Allowed).then_some(decision)
    }

    async fn refresh_on_demand(&self) {
        let seen = self.inner.started.load(Ordering::Acquire);
        let mut fetcher = self.inner.fetch.lock().await;
        // Refreshes run one at a time under this lock, so one that began after
        // we asked has finished, and saw OTS as it was when we asked or later.
        if self.inner.started.load(Ordering::Acquire) > seen {
            return;
        }
        let now = Instant::now();
        let min = self.inner.config.min_miss_refresh_interval;
        if fetcher
            .last_on_demand
            .is_some_and(|last| now.saturating_duration_since(last) < min)
        {
            return;
        }
        fetcher.last_on_demand = Some(now);
        // The outcome is in the state; `check` reads it from there.
        let _ = self.refresh_locked(&mut fetcher, Trigger::OnDemand).await;
    }

    async fn refresh_with(&self, trigger: Trigger) -> Result<(), IdentityError> {
        let mut fetcher = self.inner.fetch.lock().await;
        self.refresh_locked(&mut fetcher, trigger).await
    }

    async fn refresh_locked(
        &self,
        fetcher: &mut Fetcher,
        trigger: Trigger,
    ) -> Result<(), IdentityError> {
        self.inner.started.fetch_add(1, Ordering::AcqRel);
        let result = self.fetch_users(fetcher).await;

        let old = self.inner.state.load_full();
        let mut new = State::clone(&old);
        new.attempts += 1;
        match result {
            Ok(users) => {
                let changed = old.users.as_deref() != Some(&users);
                new.active = users.values().filter(|&&active| active).count();
                new.users = Some(Arc::new(users));
                new.last_refresh_ok = true;
                new.last_success = Some(SystemTime::now());
                new.last_error = None;
                if old.attempts > 0 && !old.last_refresh_ok {
                    tracing::info!(users = new.active, "OTS user list reachable again");
                }
                // State first, so a woken session reads the new set.
                self.inner.state.store(Arc::new(new));
                if changed {
                    self.inner.generation.send_modify(|g| *g += 1);
                }
                Ok(())
            }
            Err(err) => {
                new.failures += 1;
                new.last_refresh_ok = false;
                new.last_error = Some(err.to_string());
                self.inner.state.store(Arc::new(new));
                // On-demand failures can come once per miss interval; the periodic
                // one is the one an operator needs to see.
                if trigger == Trigger::OnDemand {
                    tracing::debug!(error = %err, "refreshing OTS users on a miss failed");
                } else {
                    tracing::warn!(error = %err, ?trigger, "refreshing OTS users failed");
                }
                Err(err)
            }
        }
    }

    async fn fetch_users(
        &self,
        fetcher: &mut Fetcher,
    ) -> Result<HashMap<String, bool>, IdentityError> {
        let (username, password) = match &self.inner.config.credentials {
            Credentials::Token(token) => return self.get_users(token).await,
            Credentials::Login { username, password } => (username, password),
        };
        let (token, fresh) = match fetcher.token.take() {
            Some(token) => (token, false),
            None => (self.login(username, password).await?, true),
        };
        let result = match self.get_users(&token).await {
            // A cached token can stop working (service account re-keyed,
            // SECRET_KEY changed); a token we just got cannot, so no loop.
            Err(IdentityError::Unauthorized { .. }) if !fresh => {
                let token = self.login(username, password).await?;
                let result = self.get_users(&token).await;
                fetcher.token = Some(token);
                return result;
            }
            result => result,
        };
        fetcher.token = Some(token);
        result
    }

    async fn get_users(&self, token: &str) -> Result<HashMap<String, bool>, IdentityError> {
        let token = HeaderValue::from_str(token).map_err(|_| IdentityError::Unexpected {
            what: WHAT_USERS,
            detail: "token is not a valid header value",
        })?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.inner.users_url.clone())
            .header("authentication-token", token)
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| IdentityError::Request {
                what: WHAT_USERS,
                cause: e.to_string(),
            })?;
        let (status, body) = self.send(request, WHAT_USERS).await?;
        match status {
            StatusCode::OK => parse_users(&body),
            StatusCode::UNAUTHORIZED => Err(IdentityError::Unauthorized { what: WHAT_USERS }),
            status => Err(IdentityError::Status {
                what: WHAT_USERS,
                status,
                detail: error_detail(&body),
            }),
        }
    }

    async fn login(&self, username: &str, password: &str) -> Result<String, IdentityError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "username": username,
            "password": password,
        }))
        .map_err(|cause| IdentityError::Json {
            what: WHAT_LOGIN,
            cause,
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.inner.login_url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| IdentityError::Request {
                what: WHAT_LOGIN,
                cause: e.to_string(),
            })?;
        let (status, body) = self.send(request, WHAT_LOGIN).await?;
        if status != StatusCode::OK {
            return Err(IdentityError::Status {
                what: WHAT_LOGIN,
                status,
                detail: error_detail(&body),
            });
        }
        let reply: LoginReply =
            serde_json::from_slice(&body).map_err(|cause| IdentityError::Json {
                what: WHAT_LOGIN,
                cause,
            })?;
        let token = reply
            .response
            .user
            .and_then(|u| u.authentication_token)
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => Ok(token),
            None if reply.response.tf_required == Some(true) => Err(IdentityError::Unexpected {
                what: WHAT_LOGIN,
                detail: "the service account has two-factor authentication enabled",
            }),
            None => Err(IdentityError::Unexpected {
                what: WHAT_LOGIN,
                detail: "no response.user.authentication_token in the reply",
            }),
        }
    }

    /// One request, bounded in time and in body size.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        what: &'static str,
    ) -> Result<(StatusCode, Bytes), IdentityError> {
        let exchange =
            async {
                let response = self.inner.client.request(request).await.map_err(|e| {
                    IdentityError::Request {
                        what,
                        cause: error_chain(&e),
                    }
                })?;
                let status = response.status();
                let too_large = IdentityError::TooLarge {
                    what,
                    limit: MAX_BODY,
                };
                // Refused before reading when the length is announced.
                let announced = response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if announced.is_some_and(|len| len > MAX_BODY as u64) {
                    return Err(too_large);
                }
                let body = Limited::new(response.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.downcast_ref::<LengthLimitError>().is_some() {
                            too_large
                        } else {
                            IdentityError::Request {
                                what,
                                cause: error_chain(e.as_ref()),
                            }
                        }
                    })?
                    .to_bytes();
                Ok((status, body))
            };
        let timeout = self.inner.config.timeout;
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| IdentityError::Timeout { what, timeout })?
    }
}

impl fmt::Debug for ActiveUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveUsers")
            .field("config", &self.inner.config)
            .field("status", &self.status())
            .finish()
    }
}

/// `api` with `path_and_query` appended to its path.
fn endpoint(api: &Uri, path_and_query: &str) -> Result<Uri, IdentityError> {
    let invalid = |reason| IdentityError::InvalidApi {
        uri: api.to_string(),
        reason,
    };
    if api.scheme() != Some(&Scheme::HTTP) {
        return Err(invalid(
            "must be http:// (OTS's API is plain HTTP on loopback)",
        ));
    }
    let authority = api.authority().ok_or_else(|| invalid("has no host"))?;
    if api.query().is_some() {
        return Err(invalid("must not have a query"));
    }
    let base = api.path().trim_end_matches('/');
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(format!("{base}{path_and_query}"))
        .build()
        .map_err(|_| invalid("cannot be joined with an API path"))
}

fn parenthesised(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The reason OTS gave in an error body: its own `{"error": …}` or
/// Flask-Security's `{"response": {"errors": [...]}}`. Cut short, since it
/// goes into log lines.
fn error_detail(body: &[u8]) -> Option<String> {
    const MAX: usize = 200;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = value
        .get("error")
        .and_then(|e| e.as_str())
        .or_else(|| value.pointer("/response/errors/0").and_then(|e| e.as_str()))?;
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

fn parse_users(body: &[u8]) -> Result<HashMap<String, bool>, IdentityError> {
    serde_json::from_slice::<UserList>(body)
        .map(|list| list.0)
        .map_err(|cause| IdentityError::Json {
            what: WHAT_USERS,
            cause,
        })
}

/// Username → active, from a bare list of users (what OTS returns) or from an
/// object holding the list under `results` or `users` (OTS's paginated
/// shape), streamed so the many other fields are skipped, not buffered.
struct UserList(HashMap<String, bool>);

#[derive(Deserialize)]
struct UserEntry {
    #[serde(default)]
    username: Option<String>,
    /// Missing or null counts as inactive: refusing is the safe reading.
    #[serde(default)]
    active: Option<bool>,
}

impl UserList {
    fn add(&mut self, entry: UserEntry) {
        let Some(name) = entry.username.filter(|n| !n.is_empty()) else {
            return;
        };
        let active = entry.active == Some(true);
        // OTS's usernames are unique; should one appear twice, inactive wins.
        self.0
            .entry(name)
            .and_modify(|a| *a &= active)
            .or_insert(active);
    }
}

impl<'de> Deserialize<'de> for UserList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UserListVisitor)
    }
}

struct UserListVisitor;

impl<'de> Visitor<'de> for UserListVisitor {
    type Value = UserList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of users, or an object with one under \"results\" or \"users\"")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UserList, A::Error> {
        let mut list = UserList(HashMap::new());
        while let Some(entry) = seq.next_element::<UserEntry>()? {
            list.add(entry);
        }
        Ok(list)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UserList, A::Error> {
        let mut found: Option<UserList> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "results" || key == "users" {
                if found.is_some() {
                    return Err(de::Error::custom(
                        "both \"results\" and \"users\", or one twice",
                    ));
                }
                found = Some(map.next_value::<UserSeq>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        found.ok_or_else(|| de::Error::custom("no \"results\" or \"users\" list"))
    }
}

/// A list of users and nothing else, for the value under `results`/`users`.
struct UserSeq(UserList);

impl<'de> Deserialize<'de> for UserSeq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqOnly;
        impl<'de> Visitor<'de> for SeqOnly {
            type Value = UserList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of users")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<UserList, A::Error> {
                UserListVisitor.visit_seq(seq)
            }
        }
        deserializer.deserialize_seq(SeqOnly).map(UserSeq)
    }
}

#[derive(Deserialize)]
struct LoginReply {
    response: LoginResponse,
}

#[derive(Deserialize)]
struct LoginResponse {
    #[serde(default)]
    user: Option<LoginUser>,
    #[serde(default)]
    tf_required: Option<bool>,
}

#[derive(Deserialize)]
struct LoginUser {
    #[serde(default)]
    authentication_token: Option<String>,
}
