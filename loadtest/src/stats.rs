//! Live counters, error counts by kind and HDR latency recorders shared by a run's tasks.
//!
//! Counters are atomics (read by the progress line every second); latencies go into
//! [`Recorder`]s, each a mutex around two HDR histograms: the whole run and the current
//! progress interval. Recording takes the lock for a few tens of nanoseconds, which is
//! negligible next to a loopback round trip even at maximum rate on two cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Largest recordable latency: one hour, in microseconds. Larger values saturate.
pub const MAX_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits kept by the histograms (0.1 % relative error).
pub const SIGFIG: u8 = 3;

/// The process's time origin: CoT and WebSocket payloads carry send times as nanoseconds since
/// it, so whichever task reads a message can compute its latency.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `t` (0 before it).
pub fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `nanos` after [`epoch`].
pub fn instant_from_nanos(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}

/// A new empty microsecond histogram.
#[allow(
    clippy::expect_used,
    reason = "constant bounds that hdrhistogram accepts; a unit test builds one"
)]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, SIGFIG).expect("valid histogram bounds")
}

/// What went wrong, for the report's `errors` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// TCP connect failed (refused, unreachable, reset during connect).
    Connect,
    /// TLS handshake or a TLS alert (e.g. the client certificate refused).
    Tls,
    /// A connect, handshake, request or echo took longer than the timeout.
    Timeout,
    /// An HTTP response with a status other than 2xx/3xx.
    Status,
    /// A read or write failed on an established connection.
    Io,
    /// The peer closed an established connection while the run still needed it.
    Closed,
    /// The peer spoke something unexpected: malformed HTTP, WebSocket or CoT framing.
    Protocol,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        Self::Connect,
        Self::Tls,
        Self::Timeout,
        Self::Status,
        Self::Io,
        Self::Closed,
        Self::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::Io => "io",
            Self::Closed => "closed",
            Self::Protocol => "protocol",
        }
    }

    /// The kind of an I/O error on an established stream: TLS alerts and rustls errors are
    /// `tls`, a timeout is `timeout`, resets and aborts are `closed`, anything else `io`.
    pub fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if e.get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return Self::Tls;
        }
        match e.kind() {
            K::TimedOut => Self::Timeout,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Self::Closed
            }
            K::InvalidData => Self::Protocol,
            _ => Self::Io,
        }
    }
}

/// Error counters by [`ErrorKind`].
#[derive(Debug, Default)]
pub struct Errors([AtomicU64; 7]);

impl Errors {
    pub fn add(&self, kind: ErrorKind) {
        self.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// A latency recorder: the whole run's histogram and the current interval's.
#[derive(Debug)]
pub struct Recorder {
    inner: Mutex<(Histogram<u64>, Histogram<u64>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            inner: Mutex::new((new_histogram(), new_histogram())),
        }
    }
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, (Histogram<u64>, Histogram<u64>)> {
        // A panic while recording cannot leave a histogram half-updated in a way that matters.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `d`, rounded to the microsecond (at least 1 µs).
    pub fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut h = self.lock();
        h.0.saturating_record(micros);
        h.1.saturating_record(micros);
    }

    /// The run so far.
    pub fn snapshot(&self) -> Histogram<u64> {
        self.lock().0.clone()
    }

    /// The values recorded since the last call, and a fresh interval.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut h = self.lock();
        let out = h.1.clone();
        h.1.reset();
        out
    }
}

/// Everything a run counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests or messages written.
    pub sent: AtomicU64,
    /// Responses or messages/frames read.
    pub received: AtomicU64,
    /// Successful operations: 2xx/3xx responses, or echoes matched to a send (one latency
    /// sample each).
    pub ok: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub conns_attempted: AtomicU64,
    pub conns_established: AtomicU64,
    pub conns_failed: AtomicU64,
    /// Connections open right now.
    pub conns_open: AtomicU64,
    pub errors: Errors,
    /// From the intended start of each operation (open model) to its completion.
    pub latency: Recorder,
    /// From the moment each operation was actually sent to its completion.
    pub service: Recorder,
    /// TCP connect plus TLS handshake.
    pub setup: Recorder,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.add(kind);
    }

    /// A connection attempt that failed with `kind`.
    pub fn conn_failed(&self, kind: ErrorKind) {
        Self::add(&self.conns_failed, 1);
        self.errors.add(kind);
    }

    /// A connection established after `setup`.
    pub fn conn_established(&self, setup: Duration) {
        Self::add(&self.conns_established, 1);
        Self::add(&self.conns_open, 1);
        self.setup.record(setup);
    }

    pub fn conn_closed(&self) {
        self.conns_open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_keeps_run_and_interval_apart() {
        let r = Recorder::default();
        r.record(Duration::from_micros(100));
        r.record(Duration::from_millis(2));
        assert_eq!(r.take_interval().len(), 2);
        r.record(Duration::from_nanos(10)); // rounds up to 1 µs
        let interval = r.take_interval();
        assert_eq!(interval.len(), 1);
        assert_eq!(interval.max(), 1);
        let run = r.snapshot();
        assert_eq!(run.len(), 3);
        assert!(run.max() >= 1999 && run.max() <= 2001, "{}", run.max());
    }

    #[test]
    fn saturates_instead_of_failing() {
        let r = Recorder::default();
        r.record(Duration::from_secs(10 * 3600));
        assert_eq!(r.snapshot().len(), 1);
    }

    #[test]
    fn io_errors_are_classified() {
        use std::io::{Error, ErrorKind as K};
        assert_eq!(
            ErrorKind::of_io(&Error::from(K::ConnectionReset)),
            ErrorKind::Closed
        );
        assert_eq!(
            ErrorKind::of_io(&Error::from(K::TimedOut)),
            ErrorKind::Timeout
        );
        let tls = Error::new(K::InvalidData, rustls::Error::DecryptError);
        assert_eq!(ErrorKind::of_io(&tls), ErrorKind::Tls);
        assert_eq!(ErrorKind::of_io(&Error::from(K::Other)), ErrorKind::Io);
    }
}
