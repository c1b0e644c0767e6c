//! The certificate cache: one issue per CN, shared by concurrent first connections, renewed in
//! the background, never handed out expired, bounded, and paced.

use std::future::Future;
use std::path::Path;

use prometheus::Registry;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::*;
use crate::gateway::StreamMetrics;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);

async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out")
}

/// A CA (EC P-256, unencrypted PKCS#8) written to `dir`.
fn write_ca(dir: &Path) -> SignerFiles {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
    SignerFiles {
        ca: dir.join("ca.pem"),
        signer_cert: dir.join("ca.pem"),
        signer_key: dir.join("ca.key"),
        password: KeyPassword::Env("TAKGATE_TEST_UNSET_PASSWORD".into()),
    }
}

fn config(files: SignerFiles) -> ReoriginateConfig {
    ReoriginateConfig {
        files,
        server_name: ServerName::try_from("opentakserver").unwrap(),
        cert_lifetime: DAY,
        renew_before: 8 * HOUR,
        max_cached: 100,
        issue_rate: 20,
    }
}

struct Fixture {
    reo: Arc<Reoriginator>,
    metrics: IssueMetrics,
    _dir: tempfile::TempDir,
}

fn fixture(tune: impl FnOnce(&mut ReoriginateConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(write_ca(dir.path()));
    tune(&mut config);
    let metrics = StreamMetrics::register(&Registry::new())
        .unwrap()
        .issue("test");
    let reo = Arc::new(Reoriginator::new(config, metrics.clone()).unwrap());
    Fixture {
        reo,
        metrics,
        _dir: dir,
    }
}

fn cn(name: &str) -> DnValue {
    DnValue::Utf8String(name.to_owned())
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

impl Fixture {
    async fn at(&self, name: &str, now: SystemTime) -> Result<Arc<ClientConfig>, IssueError> {
        within(self.reo.client_config_at(name, &cn(name), soon(), now)).await
    }

    /// Waits until `n` certificates have been issued (a background renewal finishing).
    async fn issued(&self, n: u64) {
        within(async {
            while self.metrics.issued.get() < n {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn a_cn_is_issued_once_and_reused() {
    let f = fixture(|_| {});
    let now = SystemTime::now();
    let a = f.at("alice", now).await.unwrap();
    let again = f.at("alice", now + HOUR).await.unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    let bob = f.at("bob", now).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &bob));
    assert_eq!(f.metrics.issued.get(), 2);
    assert_eq!(f.metrics.cached.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connections_of_a_cn_share_one_issue() {
    let f = fixture(|_| {});
    let now = SystemTime::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let reo = f.reo.clone();
            tokio::spawn(async move {
                reo.client_config_at("alice", &cn("alice"), soon(), now)
                    .await
            })
        })
        .collect();
    let mut configs = Vec::new();
    for t in tasks {
        configs.push(within(t).await.unwrap().unwrap());
    }
    assert!(configs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert_eq!(f.metrics.issued.get(), 1);
}

#[tokio::test]
async fn renewal_happens_in_the_background_before_expiry() {
    let f = fixture(|_| {});
    let t0 = SystemTime::now();
    let first = f.at("alice", t0).await.unwrap();
    // 17 h in: less than renew_before (8 h) left. The connection gets the current certificate
    // at once; a new one is issued beside it.
    let later = t0 + 17 * HOUR;
    let during = f.at("alice", later).await.unwrap();
    assert!(Arc::ptr_eq(&first, &during), "no wait for the renewal");
    f.issued(2).await;
    let renewed = f.at("alice", later).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &renewed));
    // The renewed one is good for a full lifetime from then: no renewal again soon.
    let next = f.at("alice", later + 10 * HOUR).await.unwrap();
    assert!(Arc::ptr_eq(&renewed, &next));
    assert_eq!(f.metrics.issued.get(), 2);
    assert_eq!(f.metrics.cached.get(), 1);
}

#[tokio::test]
async fn a_certificate_is_never_handed_out_in_its_last_minute() {
    let f = fixture(|c| c.renew_before = HOUR);
    let t0 = SystemTime::now();
    let first = f.at("alice", t0).await.unwrap();
    let fresh = f
        .at("alice", t0 + DAY - Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        !Arc::ptr_eq(&first, &fresh),
        "issued anew, not renewed in the background"
    );
    assert_eq!(f.metrics.issued.get(), 2);
}

#[tokio::test]
async fn the_cache_keeps_the_most_recently_used_cns() {
    let f = fixture(|c| c.max_cached = 2);
    let now = SystemTime::now();
    let alice = f.at("alice", now).await.unwrap();
    f.at("bob", now).await.unwrap();
    f.at("alice", now).await.unwrap();
    f.at("carol", now).await.unwrap();
    assert_eq!(f.metrics.cached.get(), 2);
    assert_eq!(f.metrics.issued.get(), 3);
    // alice was used after bob: bob went.
    assert!(Arc::ptr_eq(&alice, &f.at("alice", now).await.unwrap()));
    assert_eq!(f.metrics.issued.get(), 3);
    f.at("bob", now).await.unwrap();
    assert_eq!(f.metrics.issued.get(), 4);
    assert_eq!(f.metrics.cached.get(), 2);
}

#[tokio::test]
async fn a_flood_of_new_cns_is_paced_and_refused_past_its_deadline() {
    let f = fixture(|c| c.issue_rate = 5);
    let now = SystemTime::now();
    for i in 0..5 {
        f.at(&format!("user{i}"), now).await.unwrap();
    }
    // The burst is spent: a new CN that may not wait is refused, without issuing.
    let refused = within(
        f.reo
            .client_config_at("late", &cn("late"), Instant::now(), now),
    )
    .await;
    assert_eq!(refused.unwrap_err(), IssueError::Busy);
    assert_eq!(IssueError::Busy.reason(), "issue_busy");
    // One that may wait a second gets its turn in the pace.
    let started = Instant::now();
    f.at("patient", now).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(f.metrics.issued.get(), 6);
    // Known CNs never wait for the pace.
    f.at("user0", now).await.unwrap();
    assert_eq!(f.metrics.issued.get(), 6);
}

#[tokio::test]
async fn files_that_appear_later_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let made = write_ca(staging.path());
    let files = SignerFiles {
        ca: dir.path().join("ca.pem"),
        signer_cert: dir.path().join("ca.pem"),
        signer_key: dir.path().join("ca.key"),
        password: made.password.clone(),
    };
    let metrics = StreamMetrics::register(&Registry::new())
        .unwrap()
        .issue("test");
    let reo = Arc::new(Reoriginator::new(config(files), metrics).unwrap());
    assert!(!reo.is_ready());
    let now = SystemTime::now();
    let early = within(reo.client_config_at("alice", &cn("alice"), soon(), now)).await;
    assert_eq!(early.unwrap_err(), IssueError::NotReady);
    std::fs::copy(&made.ca, dir.path().join("ca.pem")).unwrap();
    std::fs::copy(&made.signer_key, dir.path().join("ca.key")).unwrap();
    within(async {
        while reo
            .client_config_at("alice", &cn("alice"), soon(), now)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reo.is_ready());
}
