//! A panic in one connection ends that connection only: every per-connection task (HTTP, stream,
//! admin) runs its future through [`Panics::guard`], which catches the unwind, counts it in
//! `takgate_panics_total{listener}` and logs the listener and the client. The release profile
//! unwinds (`panic = "unwind"` in the workspace's `Cargo.toml`) so that there is an unwind to
//! catch.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use prometheus::{IntCounterVec, Opts, Registry};

/// `takgate_panics_total`, registered on a caller-owned registry.
#[derive(Clone, Debug)]
pub struct Panics {
    total: IntCounterVec,
    #[cfg(any(test, feature = "test-hooks"))]
    inject: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Panics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let total = IntCounterVec::new(
            Opts::new(
                "takgate_panics_total",
                "Connection tasks that panicked (the connection was closed; the others go on).",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(total.clone()))?;
        Ok(Self {
            total,
            #[cfg(any(test, feature = "test-hooks"))]
            inject: Default::default(),
        })
    }

    /// Creates the listener's series up front, so an alert on it sees a zero rather than a gap.
    pub fn init_listener(&self, listener: &str) {
        self.total.with_label_values(&[listener]);
    }

    /// Runs one connection's future. If it panics, the panic stops here: the connection's
    /// resources are dropped (closing its sockets), then the panic is counted and logged, and
    /// the caller's task ends normally. A peer can therefore see the close before the count.
    ///
    /// Code after this call still runs when the connection panicked, so gauges decremented
    /// after it stay right. Built without an `async fn` taking `conn` by value: such a state
    /// machine keeps a moved-from copy of `conn` beside the one it polls, which cost every
    /// connection 5.8 KiB (loadtest/bench cot-idle-10k).
    pub fn guard<'a, F>(
        &'a self,
        listener: &'a str,
        client: SocketAddr,
        conn: F,
    ) -> impl Future<Output = ()> + 'a
    where
        F: Future<Output = ()> + 'a,
    {
        #[cfg(any(test, feature = "test-hooks"))]
        let conn = test_hooks::injected(conn, self.take_injection(listener));
        AssertUnwindSafe(conn).catch_unwind().map(move |outcome| {
            if let Err(payload) = outcome {
                self.total.with_label_values(&[listener]).inc();
                tracing::error!(
                    listener,
                    client = %client,
                    panic = panic_message(&*payload),
                    "connection task panicked; it was closed, the others go on"
                );
            }
        })
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}

/// Test builds only (`cfg(test)` or the `test-hooks` feature, which no release build enables):
/// a way for a test to make one connection panic in the middle of its work.
#[cfg(any(test, feature = "test-hooks"))]
mod test_hooks {
    use std::future::Future;

    use super::Panics;

    impl Panics {
        /// The next connection accepted on `listener` panics once it has started (the first
        /// time its future waits), with its sockets and state live. Each call arms one panic.
        pub fn inject_panic(&self, listener: &str) {
            if let Ok(mut armed) = self.inject.lock() {
                armed.push(listener.to_owned());
            }
        }

        pub(super) fn take_injection(&self, listener: &str) -> bool {
            let Ok(mut armed) = self.inject.lock() else {
                return false;
            };
            match armed.iter().position(|l| l == listener) {
                Some(i) => {
                    armed.swap_remove(i);
                    true
                }
                None => false,
            }
        }
    }

    /// Polls the connection; if armed, panics as soon as the connection first waits.
    pub(super) fn injected<F: Future<Output = ()>>(
        conn: F,
        armed: bool,
    ) -> impl Future<Output = ()> {
        let mut conn = Box::pin(conn);
        std::future::poll_fn(move |cx| {
            let polled = conn.as_mut().poll(cx);
            if polled.is_pending() && armed {
                panic!("panic injected by a test");
            }
            polled
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn a_panic_is_caught_counted_and_the_caller_goes_on() {
        let registry = Registry::new();
        let panics = Panics::register(&registry).unwrap();
        panics.init_listener("a");
        assert_eq!(panics.total.with_label_values(&["a"]).get(), 0);
        panics.guard("a", client(), async { panic!("boom") }).await;
        panics.guard("a", client(), async {}).await;
        assert_eq!(panics.total.with_label_values(&["a"]).get(), 1);
    }

    #[tokio::test]
    async fn an_injected_panic_hits_one_connection_of_its_listener() {
        let registry = Registry::new();
        let panics = Panics::register(&registry).unwrap();
        panics.inject_panic("a");
        // Another listener's connection is not the one.
        panics.guard("b", client(), tokio::task::yield_now()).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = async move {
            let _ = rx.await;
        };
        // Nothing sends: without the panic, this would wait for ever.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            panics.guard("a", client(), waiting),
        )
        .await
        .unwrap();
        drop(tx);
        panics.guard("a", client(), tokio::task::yield_now()).await;
        assert_eq!(panics.total.with_label_values(&["a"]).get(), 1);
        assert_eq!(panics.total.with_label_values(&["b"]).get(), 0);
    }
}
