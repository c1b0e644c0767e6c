use std::time::Duration;

use prometheus::{IntGauge, Registry};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Accept, Drain};
use crate::panics::Panics;

const PATIENCE: Duration = Duration::from_secs(5);

/// One listener with `max` permits whose connections report their client's port and then wait
/// for it to close; a client that sends `p` makes its connection panic.
async fn listener(
    max: usize,
) -> (
    Accept,
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<u16>,
    tokio::task::JoinHandle<()>,
) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let accept = Accept {
        name: "t".into(),
        max_connections: max,
        open: Some(IntGauge::new("open", "open").unwrap()),
        panics: Panics::register(&Registry::new()).unwrap(),
        drain: Drain::new(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let serving = accept.clone();
    let accept_loop = tokio::spawn(serving.serve(socket, move |mut stream: TcpStream, peer| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(peer.port());
            let mut byte = [0u8; 1];
            if let Ok(1) = stream.read(&mut byte).await {
                assert_ne!(byte[0], b'p', "panic asked for");
            }
        }
    }));
    (accept, addr, rx, accept_loop)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<u16>) -> u16 {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_connection_waits_for_a_permit_and_the_gauge_follows_even_through_a_panic() {
    let (accept, addr, mut started, _accept_loop) = listener(1).await;
    let gauge = accept.open.clone().unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(next(&mut started).await, first.local_addr().unwrap().port());
    assert_eq!(gauge.get(), 1);
    // Connected by the kernel, but not served while the one permit is held.
    let second = TcpStream::connect(addr).await.unwrap();
    assert!(started.try_recv().is_err());
    // The first connection panics: counted, its permit and gauge given back.
    tokio::io::AsyncWriteExt::write_all(&mut first, b"p")
        .await
        .unwrap();
    assert_eq!(
        next(&mut started).await,
        second.local_addr().unwrap().port()
    );
    assert_eq!(gauge.get(), 1);
    drop(second);
    assert!(accept.drain.shutdown(PATIENCE, PATIENCE).await);
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn after_the_drain_stops_nothing_more_is_served() {
    let (accept, addr, mut started, accept_loop) = listener(4).await;
    assert!(accept.drain.shutdown(PATIENCE, PATIENCE).await);
    tokio::time::timeout(PATIENCE, accept_loop)
        .await
        .unwrap()
        .unwrap();
    // The accept loop has returned and closed its socket.
    assert!(TcpStream::connect(addr).await.is_err());
    assert!(started.try_recv().is_err());
}
