use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Mutex as AsyncMutex};

use super::*;

const STEP: Duration = Duration::from_secs(5);

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An upstream counting its connections. `/stream` sends one chunk, then the rest once the
/// test releases it; `/close` answers with `Connection: close`; anything else answers with the
/// request's target and Host.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    release: Arc<AsyncMutex<Option<oneshot::Sender<()>>>>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let release: Arc<AsyncMutex<Option<oneshot::Sender<()>>>> = Arc::default();
        let (count, held) = (accepted.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let held = held.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let held = held.clone();
                    async move { Ok::<_, Infallible>(answer(req, &held).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        Self {
            addr,
            accepted,
            release,
        }
    }

    fn url(&self, path: &str) -> Uri {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    held: &AsyncMutex<Option<oneshot::Sender<()>>>,
) -> Response<TestBody> {
    match req.uri().path() {
        "/stream" => {
            let (tx, rx) = oneshot::channel::<()>();
            *held.lock().await = Some(tx);
            let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from("first ")))]);
            let rest = futures_util::stream::once(async move {
                let _ = rx.await;
                Ok(Frame::data(Bytes::from("rest")))
            });
            Response::new(BodyExt::boxed(StreamBody::new(first.chain(rest))))
        }
        "/close" => Response::builder()
            .header(header::CONNECTION, "close")
            .body(text("closing"))
            .unwrap(),
        _ => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-");
            Response::new(text(&format!("{} {host}", req.uri())))
        }
    }
}

fn text(s: &str) -> TestBody {
    http_body_util::Full::new(Bytes::from(s.to_owned())).boxed()
}

fn client(idle: Duration) -> UpstreamClient<Empty<Bytes>> {
    UpstreamClient::new(ClientSettings {
        connect_timeout: STEP,
        pool_idle_timeout: idle,
        max_idle_per_host: usize::MAX,
        tls: None,
    })
    .unwrap()
}

/// A GET of `uri`, answered within [`STEP`] (a response or an error).
async fn send(
    client: &UpstreamClient<Empty<Bytes>>,
    uri: Uri,
) -> Result<Response<Incoming>, Error> {
    tokio::time::timeout(
        STEP,
        client.request(Request::get(uri).body(Empty::new()).unwrap()),
    )
    .await
    .unwrap()
}

async fn get(client: &UpstreamClient<Empty<Bytes>>, uri: Uri) -> String {
    body(send(client, uri).await.unwrap()).await
}

async fn body(response: Response<Incoming>) -> String {
    let bytes = tokio::time::timeout(STEP, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn requests_in_turn_share_one_connection_in_origin_form_with_a_host() {
    let up = Upstream::start().await;
    let client = client(Duration::from_secs(60));
    let want = format!("/a?b=c {}", up.addr);
    for _ in 0..3 {
        assert_eq!(get(&client, up.url("/a?b=c")).await, want);
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_connection_still_streaming_is_not_taken_and_is_reused_once_read() {
    let up = Upstream::start().await;
    let client = client(Duration::from_secs(60));
    let streaming = send(&client, up.url("/stream")).await.unwrap();
    // Its head is here, its body is not: a second request gets a connection of its own.
    assert_eq!(get(&client, up.url("/x")).await, format!("/x {}", up.addr));
    assert_eq!(up.accepted(), 2);
    let release = up.release.lock().await.take().unwrap();
    release.send(()).unwrap();
    assert_eq!(body(streaming).await, "first rest");
    // Both are free now: no third connection, however many requests follow.
    for _ in 0..4 {
        get(&client, up.url("/y")).await;
    }
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let up = Upstream::start().await;
    let client = client(Duration::from_secs(60));
    assert_eq!(get(&client, up.url("/close")).await, "closing");
    assert_eq!(
        get(&client, up.url("/after")).await,
        format!("/after {}", up.addr)
    );
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn an_upstream_not_listening_is_a_connect_error() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let client = client(Duration::from_secs(60));
    let uri: Uri = format!("http://{addr}/").parse().unwrap();
    let err = send(&client, uri).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let relative = client
        .request(Request::get("/no-host").body(Empty::new()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(relative, Error::Uri(_)), "{relative:?}");
}

#[tokio::test]
async fn idle_connections_expire() {
    let up = Upstream::start().await;
    let client = client(Duration::from_millis(200));
    get(&client, up.url("/a")).await;
    let pooled = |c: &UpstreamClient<Empty<Bytes>>| -> usize {
        c.pool
            .buckets
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.conns.len())
            .sum()
    };
    assert_eq!(pooled(&client), 1);
    // The reaper runs every idle timeout: within a few, the connection is gone.
    let deadline = Instant::now() + STEP;
    while pooled(&client) > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get(&client, up.url("/b")).await;
    assert_eq!(up.accepted(), 2, "a new connection after the expiry");
}
