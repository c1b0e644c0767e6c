//! Frames read from one side of a session and not yet written to the other, in order.
//!
//! Towards OTS, a session keeps reading its client while a write waits (OTS has stopped
//! reading), so that one slow OTS does not stall every device's sends; what it reads waits
//! here, up to a bound. Past the bound frames are shed, each counted: the oldest position
//! report (an `a-…` atom, superseded by the device's next one) first, else the newest frame.
//! The first frame is never shed, nor split: it is being written, and OTS gets whole frames or
//! nothing. Every other direction writes all it read before reading again (backpressure), so
//! its outbox holds one read's worth.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes};
use prometheus::{Histogram, IntCounter};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// Why frames were shed: the `reason` label of `takgate_stream_frames_shed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// The session's queue towards OTS was full (`upstream_queue`).
    SessionQueue = 0,
    /// The process's stream memory budget had no room.
    MemoryBudget = 1,
    /// The session ended with frames still waiting for OTS.
    SessionEnd = 2,
}

impl ShedReason {
    pub const ALL: [Self; 3] = [Self::SessionQueue, Self::MemoryBudget, Self::SessionEnd];

    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::SessionQueue => "session_queue",
            ShedReason::MemoryBudget => "memory_budget",
            ShedReason::SessionEnd => "session_end",
        }
    }
}

/// How a shedding outbox is bounded and counted.
pub(super) struct Shedding {
    /// Bytes that may wait behind the frame being written.
    pub bound: usize,
    /// By `ShedReason`.
    pub counters: [IntCounter; 3],
}

struct Queued {
    bytes: Bytes,
    read_at: Instant,
    /// A position report: shed first.
    atom: bool,
}

pub(super) struct Outbox {
    frames: VecDeque<Queued>,
    /// Bytes not yet written.
    bytes: usize,
    /// Written since the last flush (a TLS writer holds back what the socket did not take).
    unflushed: bool,
    shedding: Option<Shedding>,
    /// Observed for every frame once it is written, from when it was read.
    relay_seconds: Option<Histogram>,
}

impl Outbox {
    pub(super) fn new(shedding: Option<Shedding>, relay_seconds: Option<Histogram>) -> Self {
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            unflushed: false,
            shedding,
            relay_seconds,
        }
    }

    /// Nothing to write or flush.
    pub(super) fn is_idle(&self) -> bool {
        self.frames.is_empty() && !self.unflushed
    }

    /// Frames may wait here while more are read.
    pub(super) fn sheds(&self) -> bool {
        self.shedding.is_some()
    }

    /// Bytes waiting to be written.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues a frame. One queued behind a waiting write (`stalled`) is copied out of the read
    /// buffer it came from, so that what waits holds its own bytes and no more: a frame that
    /// shares a buffer keeps all of it alive.
    pub(super) fn push(&mut self, bytes: Bytes, read_at: Instant, atom: bool, stalled: bool) {
        let bytes = if stalled && self.shedding.is_some() {
            Bytes::copy_from_slice(&bytes)
        } else {
            bytes
        };
        self.bytes += bytes.len();
        self.frames.push_back(Queued {
            bytes,
            read_at,
            atom,
        });
    }

    /// Sheds until what waits behind the first frame fits the session's bound and `share`, its
    /// share of the memory budget.
    pub(super) fn shed_to_bound(&mut self, share: usize) {
        let Some(bound) = self.shedding.as_ref().map(|s| s.bound) else {
            return;
        };
        let (limit, reason) = if share < bound {
            (share, ShedReason::MemoryBudget)
        } else {
            (bound, ShedReason::SessionQueue)
        };
        while self.behind_head() > limit && self.shed_one(reason) {}
    }

    /// Sheds one frame (never the first); false if there was none to shed.
    pub(super) fn shed_one(&mut self, reason: ShedReason) -> bool {
        let Some(shedding) = &self.shedding else {
            return false;
        };
        if self.frames.len() < 2 {
            return false;
        }
        let victim = self
            .frames
            .iter()
            .skip(1)
            .position(|f| f.atom)
            .map_or(self.frames.len() - 1, |i| i + 1);
        if let Some(frame) = self.frames.remove(victim) {
            self.bytes -= frame.bytes.len();
            shedding.counters[reason as usize].inc();
        }
        true
    }

    fn behind_head(&self) -> usize {
        self.bytes - self.frames.front().map_or(0, |f| f.bytes.len())
    }

    /// Makes progress: one vectored write, or the flush once everything is written. Cancel-safe:
    /// what a write took is accounted for before it returns.
    pub(super) fn write<'a, W: AsyncWrite + Unpin>(
        &'a mut self,
        writer: &'a mut W,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        std::future::poll_fn(move |cx| {
            if self.frames.is_empty() {
                std::task::ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                self.unflushed = false;
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slice, frame) in slices.iter_mut().zip(&self.frames) {
                *slice = IoSlice::new(&frame.bytes);
                count += 1;
            }
            let n = std::task::ready!(
                Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
            Poll::Ready(Ok(()))
        })
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        self.unflushed = true;
        let now = Instant::now();
        while let Some(head) = self.frames.front_mut() {
            if n < head.bytes.len() {
                head.bytes.advance(n);
                return;
            }
            n -= head.bytes.len();
            if let Some(seconds) = &self.relay_seconds {
                seconds.observe(now.duration_since(head.read_at).as_secs_f64());
            }
            self.frames.pop_front();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(shedding) = &self.shedding {
            shedding.counters[ShedReason::SessionEnd as usize].inc_by(self.frames.len() as u64);
        }
    }
}

/// Slices handed to one vectored write (Linux takes up to 1024).
const MAX_SLICES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> [IntCounter; 3] {
        ShedReason::ALL.map(|r| IntCounter::new(r.as_str(), "shed").unwrap())
    }

    fn outbox(bound: usize) -> (Outbox, [IntCounter; 3]) {
        let c = counters();
        let shedding = Shedding {
            bound,
            counters: c.clone(),
        };
        (Outbox::new(Some(shedding), None), c)
    }

    fn contents(o: &Outbox) -> Vec<&[u8]> {
        o.frames.iter().map(|f| &f.bytes[..]).collect()
    }

    #[test]
    fn oldest_position_report_goes_first_then_the_newest_frame_never_the_first() {
        let (mut o, shed) = outbox(6);
        let now = Instant::now();
        for (frame, atom) in [("h1", true), ("a1", true), ("c1", false), ("a2", true)] {
            o.push(Bytes::from(frame), now, atom, true);
        }
        o.shed_to_bound(usize::MAX);
        // Behind the head: a1 c1 a2 = 6 bytes: fits.
        assert_eq!(contents(&o), [&b"h1"[..], b"a1", b"c1", b"a2"]);
        o.push(Bytes::from("c2"), now, false, true);
        o.shed_to_bound(usize::MAX);
        assert_eq!(
            contents(&o),
            [&b"h1"[..], b"c1", b"a2", b"c2"],
            "a1, the oldest atom"
        );
        o.push(Bytes::from("c3"), now, false, true);
        o.shed_to_bound(usize::MAX);
        assert_eq!(contents(&o), [&b"h1"[..], b"c1", b"c2", b"c3"], "then a2");
        o.push(Bytes::from("c4"), now, false, true);
        o.shed_to_bound(usize::MAX);
        assert_eq!(
            contents(&o),
            [&b"h1"[..], b"c1", b"c2", b"c3"],
            "no atom left: the newest"
        );
        assert_eq!(shed[ShedReason::SessionQueue as usize].get(), 3);
        assert_eq!(o.bytes(), 8);
        while o.shed_one(ShedReason::MemoryBudget) {}
        assert_eq!(contents(&o), [&b"h1"[..]], "the first frame stays");
        assert_eq!(shed[ShedReason::MemoryBudget as usize].get(), 3);
        drop(o);
        assert_eq!(shed[ShedReason::SessionEnd as usize].get(), 1);
    }

    #[test]
    fn the_sessions_share_of_the_budget_bounds_it_when_smaller() {
        let (mut o, shed) = outbox(100);
        let now = Instant::now();
        for frame in ["h1", "a1", "a2", "a3"] {
            o.push(Bytes::from(frame), now, true, true);
        }
        o.shed_to_bound(4);
        assert_eq!(contents(&o), [&b"h1"[..], b"a2", b"a3"]);
        assert_eq!(shed[ShedReason::MemoryBudget as usize].get(), 1);
        assert_eq!(shed[ShedReason::SessionQueue as usize].get(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_bound_passes_when_nothing_waits() {
        let (mut o, shed) = outbox(4);
        o.push(Bytes::from("a big frame"), Instant::now(), true, false);
        o.shed_to_bound(usize::MAX);
        assert_eq!(o.bytes(), 11);
        assert!(shed.iter().all(|c| c.get() == 0));
    }

    /// Takes at most `step` bytes a write, as a full socket would.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_frame_begun_is_finished_and_never_shed() {
        let (mut o, _) = outbox(0);
        let now = Instant::now();
        o.push(Bytes::from("<event a/>"), now, true, false);
        o.push(Bytes::from("<event b/>"), now, true, true);
        let mut w = Trickle {
            written: Vec::new(),
            step: 3,
        };
        o.write(&mut w).await.unwrap();
        assert_eq!(w.written, b"<ev", "the first frame is begun");
        // Nothing may wait behind the head: b goes, the begun head stays whole.
        o.shed_to_bound(usize::MAX);
        assert_eq!(o.frames.len(), 1);
        while !o.is_idle() {
            o.write(&mut w).await.unwrap();
        }
        assert_eq!(w.written, b"<event a/>");
    }
}
