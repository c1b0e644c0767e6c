//! Sans-io CoT stream framer.
//!
//! The gateway relays CoT message by message: a [`Framer`] takes the bytes read from a TAK client
//! (or from OTS) and hands back whole messages, so each one can be validated, counted and written
//! upstream unchanged. It never does I/O and never rewrites XML.
//!
//! # The two framings
//!
//! Every TAK stream starts in XML (TAK protocol version 0). A frame is one top-level `<event>` or
//! `<auth>` element together with the prolog the client wrote in front of it: the
//! `<?xml …?>` declaration, comments, and whitespace after them. quick-xml tokenizes and checks
//! every token; DOCTYPE declarations are refused and entities are never expanded.
//!
//! After a successful negotiation (the client's `t-x-takp-q` answered by a `t-x-takp-r` with
//! `status="true"`) the relay calls [`Framer::switch_to_protobuf`], and frames become `0xbf`, a
//! base-128 varint length and a protobuf payload (TAK protocol version 1, streaming). The payload
//! is not decoded.
//!
//! # Decisions
//!
//! - **Whitespace between frames belongs to no frame** and is dropped. OTS splits its stream on
//!   `</event>` and hands each piece to ElementTree, which refuses a declaration preceded by a
//!   newline, so frames relayed back to back are what it parses best. Whitespace after a
//!   declaration or a comment is inside the frame and kept.
//! - **[`MalformedPolicy::Drop`]**: a bad frame makes [`Framer::next_frame`] return one `Err`
//!   whose [`FrameError::is_terminal`] is false. The framer then discards bytes up to the next
//!   `<event`, `<auth` or `<?xml` (the next `0xbf` in protobuf mode), and the next call goes on
//!   from there. Under [`MalformedPolicy::Close`], and for [`FrameErrorKind::TooLarge`] under
//!   either policy, the error is terminal: every later call returns it again and the buffer is
//!   released.
//! - **Linear time under any chunking.** The framer remembers where the token it is reading
//!   started and how far it has looked, so each new byte is scanned once; quick-xml parses a
//!   markup token (with the text before it) once, when its closing `>` has arrived. A 1 MiB
//!   event fed one byte at a time costs what it costs fed whole, plus a constant per call.
//! - **Bounded memory.** Nothing beyond `max_frame` bytes of a frame is examined: a frame that
//!   cannot end within that many bytes fails with `TooLarge`. Once `next_frame` has returned
//!   `Ok(None)` the framer holds at most `max(max_frame, 6)` bytes (6: a possible `<event`
//!   while skipping under the Drop policy), so with reads of at most `n` bytes it never holds
//!   more than that plus `n`.
//!
//! # Layout
//!
//! One XML parser: `xml` finds where each token ends and `xml/parse` runs quick-xml over it
//! with CoT's own refusals. `proto` frames TAK protocol version 1, `frame` and `class` are what
//! a frame says, `error` why one was refused. `trusted` is the OTS-to-client fast path
//! ([`Framer::trusted`]): it delimits instead of parsing, hands anything it cannot delimit
//! safely to the parser, and is held equal to the parser by the `framer_differential` fuzz
//! target (its module documentation states the property).

use bytes::{Buf, Bytes, BytesMut};

mod class;
mod error;
mod frame;
mod proto;
mod trusted;
mod xml;

#[cfg(test)]
mod tests;

pub use class::CotClass;
pub use error::{FrameError, FrameErrorKind, Reason};
pub use frame::{Frame, FrameKind, Negotiation};
pub use proto::PROTO_MAGIC;

use error::Fault;
use frame::Control;
use trusted::TrustedScan;
use xml::XmlState;

/// Largest frame accepted by default: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Longest prefix of a frame start (`<event`) kept while skipping to the next frame.
pub const RESYNC_HOLD: usize = 6;

/// What to do with a frame that is not well-formed CoT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedPolicy {
    /// Report it once, skip to the next frame start and carry on.
    Drop,
    /// Report it and fail the stream for good.
    Close,
}

/// Limits and policy of a [`Framer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerConfig {
    /// Largest frame in bytes, headers and prolog included.
    pub max_frame: usize,
    /// What a malformed frame does to the stream.
    pub malformed: MalformedPolicy,
}

impl Default for FramerConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            malformed: MalformedPolicy::Close,
        }
    }
}

// === Framer ===

/// Splits a CoT byte stream into [`Frame`]s. Feed it with [`push`](Self::push) or
/// [`read_buf`](Self::read_buf), then call [`next_frame`](Self::next_frame) until it returns
/// `Ok(None)`.
#[derive(Debug)]
pub struct Framer {
    max_frame: usize,
    policy: MalformedPolicy,
    // Everything from the start of the pending frame (or of what is being skipped) on.
    buf: BytesMut,
    // Stream offset of buf[0], for error reports.
    base: u64,
    proto: bool,
    // XML frames are found by `</event>` alone (see the module documentation).
    trusted: bool,
    // Trusted mode: how far the pending frame has been looked at.
    trusted_scan: TrustedScan,
    // Trusted mode: the pending frame has markup that can hide or fake a `</event>`, so it is
    // read by the validating parser instead.
    parse_frame: bool,
    // Set under the Drop policy after a fault, until the next frame start is found.
    resync: bool,
    xml: XmlState,
    failed: Option<FrameError>,
}

impl Framer {
    pub fn new(config: FramerConfig) -> Self {
        Self {
            max_frame: config.max_frame,
            policy: config.malformed,
            buf: BytesMut::new(),
            base: 0,
            proto: false,
            trusted: false,
            trusted_scan: TrustedScan::default(),
            parse_frame: false,
            resync: false,
            xml: XmlState::default(),
            failed: None,
        }
    }

    /// A framer for a trusted peer (OTS): XML frames are delimited, not validated.
    pub fn trusted(config: FramerConfig) -> Self {
        Self {
            trusted: true,
            ..Self::new(config)
        }
    }

    /// Appends bytes read from the peer. Ignored once the stream has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The buffer to read the socket into (e.g. with tokio's `read_buf`), with room for
    /// `additional` more bytes. Only append to it: bytes already in it belong to the framer.
    pub fn read_buf(&mut self, additional: usize) -> &mut BytesMut {
        self.buf.reserve(additional);
        &mut self.buf
    }

    /// Frees the buffer if it holds nothing, so that a stream between frames keeps no memory
    /// (frames already returned keep their bytes alive until they are dropped).
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Bytes held: the pending partial frame and anything not yet examined.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the buffer can hold without growing.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn is_protobuf(&self) -> bool {
        self.proto
    }

    /// Reads everything after the last returned frame as TAK protocol version 1. Call it once the
    /// negotiation is complete, before asking for the next frame.
    pub fn switch_to_protobuf(&mut self) {
        self.proto = true;
        self.resync = false;
        self.trusted_scan = TrustedScan::default();
        self.parse_frame = false;
        self.xml.reset();
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            self.buf.clear();
            return Err(err.clone());
        }
        let found = if self.proto {
            self.next_proto()
        } else if self.trusted {
            self.next_trusted()
        } else {
            self.next_xml()
        };
        found.map_err(|fault| self.fail(fault))
    }

    fn fail(&mut self, fault: Fault) -> FrameError {
        let kind = fault.reason.kind();
        let terminal = self.policy == MalformedPolicy::Close
            || kind == FrameErrorKind::TooLarge
            || matches!(fault.reason, Reason::BufferShrunk);
        let err = FrameError {
            kind,
            offset: self.base.saturating_add(fault.at as u64),
            reason: fault.reason,
            terminal,
        };
        if terminal {
            self.failed = Some(err.clone());
            self.buf = BytesMut::new();
            self.xml = XmlState::default();
        } else {
            // The search for the next frame starts at the fault, which may itself be the start
            // of the next frame; skipping at least one byte guarantees progress.
            self.discard(fault.at.max(1));
            self.xml.reset();
            self.resync = true;
        }
        err
    }

    fn discard(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
        self.base = self.base.saturating_add(n as u64);
    }

    fn take(&mut self, end: usize) -> Bytes {
        let end = end.min(self.buf.len());
        self.base = self.base.saturating_add(end as u64);
        self.buf.split_to(end).freeze()
    }
}
