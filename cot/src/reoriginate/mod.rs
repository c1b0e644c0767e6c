//! The reoriginate mode's upstream side: for each client CN, a TLS client config presenting a
//! certificate for that same CN, signed by OTS's CA, so OTS's own SSL listener authenticates the
//! user as if the device had connected to it (OTS 1.7.14 identifies SSL clients by the subject
//! CN alone).
//!
//! Certificates are issued on a CN's first connection, cached (bounded, least recently used
//! evicted), and renewed in the background once less than `renew_before` of them is left, so a
//! CN's later connections never wait for a signature. Issuing runs on the blocking pool and is
//! paced by a token bucket: a flood of new CNs costs at most `issue_rate` signatures a second.

mod signer;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use prometheus::{Histogram, IntCounter, IntGauge};
use rcgen::DnValue;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::rate::TokenBucket;

pub use signer::{subject_cn, KeyPassword, Signer, SignerError, SignerFiles};
pub use verify::OtsServerVerifier;

/// The reoriginate settings of one stream listener.
#[derive(Clone, Debug)]
pub struct ReoriginateConfig {
    pub files: SignerFiles,
    /// The name OTS's server certificate must carry (OTS's own: `opentakserver`).
    pub server_name: ServerName<'static>,
    pub cert_lifetime: Duration,
    pub renew_before: Duration,
    pub max_cached: usize,
    /// New certificates per second (and the burst).
    pub issue_rate: u32,
}

/// Why no upstream config could be had for a client; each is a refusal reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("the signing files are not there yet")]
    NotReady,
    #[error("too many new certificates at once")]
    Busy,
    #[error("issuing failed")]
    Failed,
}

impl IssueError {
    pub fn reason(self) -> crate::listener::Refusal {
        use crate::listener::Refusal;
        match self {
            IssueError::NotReady => Refusal::TlsNotReady,
            IssueError::Busy => Refusal::IssueBusy,
            IssueError::Failed => Refusal::IssueFailed,
        }
    }
}

/// The listener's issue metrics, resolved once.
#[derive(Clone, Debug)]
pub struct IssueMetrics {
    pub issued: IntCounter,
    pub seconds: Histogram,
    pub cached: IntGauge,
    /// Unix time at which the signer's own certificate expires.
    pub signer_expiry: IntGauge,
}

/// A CN's upstream TLS client config and when to renew it.
#[derive(Clone)]
struct Entry {
    config: Arc<ClientConfig>,
    renew_at: SystemTime,
    /// Not to be handed out past this (a little before the certificate's own expiry).
    use_until: SystemTime,
    last_used: u64,
    renewing: bool,
}

type Pending = watch::Receiver<Option<Result<Arc<ClientConfig>, IssueError>>>;

/// What a connection does when it finds no certificate ready for its CN.
enum Next {
    Wait(Pending),
    Issue(watch::Sender<Option<Result<Arc<ClientConfig>, IssueError>>>),
}

enum Slot {
    Ready(Entry),
    /// The first connection of a CN is issuing; others wait for its outcome.
    Issuing(Pending),
}

#[derive(Default)]
struct Cache {
    slots: HashMap<String, Slot>,
    /// A use counter, for least-recently-used eviction.
    clock: u64,
}

/// Shared by a listener's connections.
pub struct Reoriginator {
    config: ReoriginateConfig,
    signer: Mutex<Option<Arc<Signer>>>,
    /// When the files were last looked for, while they are missing.
    last_try: Mutex<Option<Instant>>,
    cache: Mutex<Cache>,
    /// Paces issuing: `issue_rate` a second, as many saved up.
    bucket: Mutex<TokenBucket>,
    metrics: IssueMetrics,
}

impl std::fmt::Debug for Reoriginator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reoriginator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How often missing signing files are looked for again.
const RETRY_FILES: Duration = Duration::from_secs(2);
/// A cached certificate is not handed out in its last minute.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reoriginator {
    /// Loads the signer now if its files are there; if they are not yet, the listener refuses
    /// clients (`tls_not_ready`) until they appear. Files that are there but wrong are an error.
    pub fn new(config: ReoriginateConfig, metrics: IssueMetrics) -> Result<Self, SignerError> {
        let signer = if config.files.missing().is_empty() {
            let signer = Signer::load(&config.files)?;
            signer.report_expiry(&metrics);
            Some(Arc::new(signer))
        } else {
            None
        };
        let rate = f64::from(config.issue_rate.max(1));
        Ok(Self {
            signer: Mutex::new(signer),
            last_try: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            bucket: Mutex::new(TokenBucket::new(rate, rate, Instant::now())),
            metrics,
            config,
        })
    }

    pub fn config(&self) -> &ReoriginateConfig {
        &self.config
    }

    /// Whether the signing files are loaded.
    pub fn is_ready(&self) -> bool {
        lock(&self.signer).is_some()
    }

    /// The signer, loading it if its files have appeared since (looked for every 2 s at most).
    fn signer(&self) -> Option<Arc<Signer>> {
        if let Some(signer) = lock(&self.signer).clone() {
            return Some(signer);
        }
        {
            let mut last = lock(&self.last_try);
            if last.is_some_and(|at| at.elapsed() < RETRY_FILES) {
                return None;
            }
            *last = Some(Instant::now());
        }
        if !self.config.files.missing().is_empty() {
            return None;
        }
        match Signer::load(&self.config.files) {
            Ok(signer) => {
                tracing::info!(ca = %self.config.files.ca.display(), "reoriginate signer loaded");
                signer.report_expiry(&self.metrics);
                let signer = Arc::new(signer);
                *lock(&self.signer) = Some(signer.clone());
                Some(signer)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reoriginate signer files are there but cannot be used");
                None
            }
        }
    }

    /// The TLS client config to reach OTS as `cn`, whose attribute (with its string type) is
    /// `value`. Waits at most until `deadline` for a certificate to be issued.
    pub async fn client_config(
        self: &Arc<Self>,
        cn: &str,
        value: &DnValue,
        deadline: Instant,
    ) -> Result<Arc<ClientConfig>, IssueError> {
        self.client_config_at(cn, value, deadline, SystemTime::now())
            .await
    }

    async fn client_config_at(
        self: &Arc<Self>,
        cn: &str,
        value: &DnValue,
        deadline: Instant,
        now: SystemTime,
    ) -> Result<Arc<ClientConfig>, IssueError> {
        let signer = self.signer().ok_or(IssueError::NotReady)?;
        let next = {
            let mut cache = lock(&self.cache);
            cache.clock += 1;
            let clock = cache.clock;
            match cache.slots.get_mut(cn) {
                Some(Slot::Ready(entry)) if now < entry.use_until => {
                    entry.last_used = clock;
                    if now >= entry.renew_at && !entry.renewing {
                        entry.renewing = true;
                        self.renew_in_background(cn, value, signer, now);
                    }
                    return Ok(entry.config.clone());
                }
                // An issue whose connection went away before it finished left no answer.
                Some(Slot::Issuing(pending)) if pending.has_changed().is_ok() => {
                    Next::Wait(pending.clone())
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    cache.slots.insert(cn.to_owned(), Slot::Issuing(rx));
                    Next::Issue(tx)
                }
            }
        };
        let mut wait = match next {
            Next::Wait(rx) => rx,
            Next::Issue(tx) => {
                let outcome = self.issue(cn, value, signer, Some(deadline), now).await;
                let _ = tx.send(Some(outcome.clone()));
                return outcome;
            }
        };
        let waited = tokio::time::timeout_at(deadline, wait.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(outcome)) => outcome.clone().unwrap_or(Err(IssueError::Failed)),
            Ok(Err(_)) => Err(IssueError::Failed),
            Err(_) => Err(IssueError::Busy),
        }
    }

    fn renew_in_background(
        self: &Arc<Self>,
        cn: &str,
        value: &DnValue,
        signer: Arc<Signer>,
        now: SystemTime,
    ) {
        let this = self.clone();
        let (cn, value) = (cn.to_owned(), value.clone());
        tokio::spawn(async move {
            if this.issue(&cn, &value, signer, None, now).await.is_err() {
                // Leave the current one in place; the next connection tries again.
                if let Some(Slot::Ready(entry)) = lock(&this.cache).slots.get_mut(&cn) {
                    entry.renewing = false;
                }
            }
        });
    }

    /// Issues and caches a certificate for `cn`. `deadline`: how long to wait for the pace to
    /// allow it (`None`: not at all, as for renewals).
    async fn issue(
        &self,
        cn: &str,
        value: &DnValue,
        signer: Arc<Signer>,
        deadline: Option<Instant>,
        now: SystemTime,
    ) -> Result<Arc<ClientConfig>, IssueError> {
        let outcome = match self.take_token(deadline).await {
            Err(e) => Err(e),
            Ok(()) => {
                let started = Instant::now();
                let lifetime = self.config.cert_lifetime;
                let value = value.clone();
                let verifier = signer.server_verifier();
                let issued =
                    tokio::task::spawn_blocking(move || signer.issue(&value, now, lifetime)).await;
                match issued {
                    Ok(Ok(issued)) => {
                        self.metrics
                            .seconds
                            .observe(started.elapsed().as_secs_f64());
                        client_config(issued.chain, issued.key, verifier)
                            .map(|c| (c, issued.not_after))
                            .map_err(|e| {
                                tracing::warn!(cn, error = %e, "the issued certificate was refused by rustls");
                                IssueError::Failed
                            })
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(cn, error = %e, "issuing a certificate failed");
                        Err(IssueError::Failed)
                    }
                    Err(e) => {
                        tracing::warn!(cn, error = %e, "the issuing task failed");
                        Err(IssueError::Failed)
                    }
                }
            }
        };
        let mut cache = lock(&self.cache);
        match outcome {
            Ok((config, not_after)) => {
                self.metrics.issued.inc();
                tracing::debug!(cn, "issued an upstream certificate");
                cache.clock += 1;
                let entry = Entry {
                    config: config.clone(),
                    renew_at: not_after
                        .checked_sub(self.config.renew_before)
                        .unwrap_or(now)
                        .max(now),
                    use_until: not_after.checked_sub(EXPIRY_MARGIN).unwrap_or(now),
                    last_used: cache.clock,
                    renewing: false,
                };
                cache.slots.insert(cn.to_owned(), Slot::Ready(entry));
                evict(&mut cache, self.config.max_cached.max(1));
                self.metrics.cached.set(ready_count(&cache));
                Ok(config)
            }
            Err(e) => {
                // A failed first issue leaves nothing behind; a failed renewal keeps the old one.
                if matches!(cache.slots.get(cn), Some(Slot::Issuing(_))) {
                    cache.slots.remove(cn);
                }
                Err(e)
            }
        }
    }

    /// Waits for the pace to allow one more certificate, until `deadline` at the latest.
    async fn take_token(&self, deadline: Option<Instant>) -> Result<(), IssueError> {
        let wait = {
            let mut bucket = lock(&self.bucket);
            let now = Instant::now();
            let wait = bucket.take(1.0, now);
            if wait > Duration::ZERO && deadline.is_none_or(|d| now + wait > d) {
                // Not ours: give it back.
                bucket.refund(1.0);
                return Err(IssueError::Busy);
            }
            wait
        };
        // The token is ours; it becomes usable at its time in the pace.
        if wait > Duration::ZERO {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

fn ready_count(cache: &Cache) -> i64 {
    let n = cache
        .slots
        .values()
        .filter(|s| matches!(s, Slot::Ready(_)))
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Drops least recently used certificates beyond `max` (issues in progress are kept).
fn evict(cache: &mut Cache, max: usize) {
    while ready_count(cache) > i64::try_from(max).unwrap_or(i64::MAX) {
        let oldest = cache
            .slots
            .iter()
            .filter_map(|(cn, s)| match s {
                Slot::Ready(e) => Some((e.last_used, cn)),
                Slot::Issuing(_) => None,
            })
            .min()
            .map(|(_, cn)| cn.clone());
        match oldest {
            Some(cn) => {
                cache.slots.remove(&cn);
            }
            None => return,
        }
    }
}

/// A TLS client config presenting `chain` and verifying OTS's server certificate.
fn client_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    verifier: Arc<OtsServerVerifier>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)?;
    // A CN's sessions to OTS resume: later connections skip the certificate exchange. A few per
    // CN are enough (one device, seldom several).
    config.resumption = rustls::client::Resumption::in_memory_sessions(4);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
