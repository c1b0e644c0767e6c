//! Accepting client connections, the same for the HTTP, stream and admin listeners: a permit per
//! connection (excess clients wait in the kernel's queue), a back-off on accept errors, each
//! connection on a task the drain tracks, under the panic guard and a connection gauge, and the
//! TLS handshake within a deadline, refused with a [`Refusal`].

mod drain;
mod refusal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;

use crate::panics::Panics;
use crate::tls::ReloadableTls;

pub use drain::Drain;
pub use refusal::Refusal;

/// How long to wait after a failed accept (EMFILE and friends) instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listener's accept loop: who it is and what bounds it.
#[derive(Clone, Debug)]
pub struct Accept {
    /// The `listener` label of its metrics and logs.
    pub name: Arc<str>,
    pub max_connections: usize,
    /// Connections open now, if the listener counts them.
    pub open: Option<IntGauge>,
    pub panics: Panics,
    pub drain: Drain,
}

impl Accept {
    /// Accepts on `socket` until the drain stops; `conn` serves each connection on its own
    /// tracked task, where a panic ends that connection only.
    pub async fn serve<H, F>(self, socket: TcpListener, conn: H)
    where
        H: Fn(TcpStream, SocketAddr) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let drain = &self.drain;
        loop {
            // Waiting for a permit before accepting leaves excess clients in the kernel's queue
            // instead of taking sockets we would have to drop.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = drain.stopping() => return,
            };
            let (stream, peer) = tokio::select! {
                res = socket.accept() => match res {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = drain.stopping() => return,
            };
            let (name, panics, open, conn) = (
                self.name.clone(),
                self.panics.clone(),
                self.open.clone(),
                conn.clone(),
            );
            drain.tracker().spawn(async move {
                let _permit = permit;
                let _open = open.map(GaugeGuard::new);
                // Built in place: a named local would keep a second copy of the connection's
                // state in this task for as long as it runs.
                panics.guard(&name, peer, conn(stream, peer)).await;
            });
        }
    }
}

/// Completes a client's TLS handshake within `deadline`. `None` (no material) is refused as not
/// ready, as are certificate files that do not exist yet (OTS creates them on its first start).
pub async fn tls_handshake(
    tls: Option<&ReloadableTls>,
    deadline: Duration,
    stream: TcpStream,
    listener: &str,
    client: SocketAddr,
) -> Result<TlsStream<TcpStream>, Refusal> {
    let Some(acceptor) = tls.and_then(ReloadableTls::acceptor) else {
        tracing::debug!(listener, client = %client, "TLS files not loaded yet; closing");
        return Err(Refusal::TlsNotReady);
    };
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => {
            let reason = Refusal::of_handshake(&e);
            tracing::info!(listener, client = %client, reason = reason.as_str(), error = %e, "TLS handshake failed");
            Err(reason)
        }
        Err(_) => {
            tracing::info!(listener, client = %client, "TLS handshake timed out");
            Err(Refusal::Timeout)
        }
    }
}

/// Increments a gauge now and decrements it when dropped, so no error path (nor a panic) can
/// leak a count.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
