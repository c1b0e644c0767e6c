//! Connecting, timed: TCP connect plus TLS handshake, with failures sorted by kind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::stats::{ErrorKind, Stats};

/// A byte stream: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;

/// Counts a connection as open while it lives.
#[derive(Debug)]
pub struct OpenGuard(Arc<Stats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.conn_closed();
    }
}

/// What to wrap a new TCP connection in.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Connects to `addr` (and does the TLS handshake, if `tls`) within `timeout`, recording the
/// attempt in `stats`: an established connection's setup time, or a failure's kind.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&Tls>,
    timeout: Duration,
    stats: &Arc<Stats>,
) -> Result<(BoxIo, OpenGuard), ErrorKind> {
    Stats::add(&stats.conns_attempted, 1);
    let t0 = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io: BoxIo = match tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| match ErrorKind::of_io(&e) {
                        ErrorKind::Closed | ErrorKind::Io | ErrorKind::Protocol => ErrorKind::Tls,
                        other => other,
                    })?,
            ),
        };
        Ok::<_, ErrorKind>(io)
    })
    .await
    .unwrap_or(Err(ErrorKind::Timeout));
    match result {
        Ok(io) => {
            stats.conn_established(t0.elapsed());
            Ok((io, OpenGuard(stats.clone())))
        }
        Err(kind) => {
            stats.conn_failed(kind);
            Err(kind)
        }
    }
}

/// Reads `/proc/self/limits` for the open-file limit, to warn before a run that needs more.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Warns on stderr when `connections` sockets will not fit under the open-file limit.
pub fn warn_fd_limit(connections: usize) {
    if let Some(limit) = open_file_limit() {
        if connections as u64 + 64 > limit {
            eprintln!(
                "loadtest: warning: {connections} connections need more than the open-file \
                 limit of {limit} (raise it with `ulimit -n`)"
            );
        }
    }
}
