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
//! # Trusted mode
//!
//! [`Framer::trusted`] frames the stream from OTS to a client, which OTS wrote itself: an XML
//! frame is everything up to and including the next literal `</event>` (or the `/>` of a
//! self-closing `<event …/>` root, found by reading the root's start tag), and whitespace between
//! frames is dropped, as in the validating mode (clients that split on `</event>` and parse each
//! piece, as pytak users do, choke on a declaration after a newline). The root's `type` and `uid`
//! are read from its start tag, without a parser, for the metrics and the TAK protocol
//! negotiation, which switches to protobuf at the same frame boundary as in the validating mode.
//!
//! In well-formed XML a literal `</event>` is the root's end tag unless it sits in a comment,
//! CDATA or a processing instruction, or ends a nested `<event>`. OTS writes none of these, but
//! it relays what clients wrote, and a client could use them to end a frame early and start a
//! fake one, a protobuf grant say. So a frame in which any of them appears (any `<!`, a `<?`
//! other than the declaration, a second `<event`), or whose root is not `<event` at all, is
//! read by the validating parser instead, and is refused like a client's if it is not
//! well-formed. On every stream the validating framer
//! accepts, trusted frames are its frames. Frames stay bounded by `max_frame`.

use std::fmt;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use quick_xml::errors::SyntaxError;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::parser::{ElementParser, Parser, PiParser};
use quick_xml::{Reader, XmlVersion};

#[cfg(test)]
mod tests;

/// Largest frame accepted by default: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// First byte of every TAK protocol version 1 frame.
pub const PROTO_MAGIC: u8 = 0xbf;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const MAX_VARINT_LEN: usize = 10;
/// Longest prefix of a frame start (`<event`) kept while skipping to the next frame.
pub const RESYNC_HOLD: usize = 6;
// Names quoted in errors are clipped: an error must not pin a megabyte-long tag name.
const MAX_NAME_IN_ERROR: usize = 64;

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

// === Frame ===

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// An XML `<event>`.
    Event,
    /// An XML `<auth>` (credentials for OTS's TLS port).
    Auth,
    /// A TAK protocol version 1 frame; the payload is not decoded.
    Proto,
}

impl FrameKind {
    /// Stable lowercase name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Auth => "auth",
            Self::Proto => "proto",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TAK protocol negotiation message (`t-x-takp-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Negotiation {
    /// `t-x-takp-v`: the server announces the protocol versions it supports.
    Support,
    /// `t-x-takp-q`: the client asks to switch.
    Request,
    /// `t-x-takp-r`: the server's answer; `accepted` when its detail holds
    /// `<TakResponse status="true"/>`.
    Response { accepted: bool },
}

impl Negotiation {
    /// The CoT `type` of the message.
    pub fn cot_type(self) -> &'static str {
        match self {
            Self::Support => "t-x-takp-v",
            Self::Request => "t-x-takp-q",
            Self::Response { .. } => "t-x-takp-r",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Control {
    #[default]
    None,
    Ping,
    Negotiation(Negotiation),
}

impl Control {
    fn from_type(cot_type: &str) -> Self {
        match cot_type {
            "t-x-c-t" => Self::Ping,
            "t-x-takp-v" => Self::Negotiation(Negotiation::Support),
            "t-x-takp-q" => Self::Negotiation(Negotiation::Request),
            "t-x-takp-r" => Self::Negotiation(Negotiation::Response { accepted: false }),
            _ => Self::None,
        }
    }
}

/// One complete message, exactly as it appeared on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    kind: FrameKind,
    class: CotClass,
    control: Control,
    uid: Option<Range<usize>>,
}

impl Frame {
    fn proto(bytes: Bytes) -> Self {
        Self {
            bytes,
            kind: FrameKind::Proto,
            class: CotClass::OTHER,
            control: Control::None,
            uid: None,
        }
    }

    /// An unvalidated XML frame: what its root's start tag (closing at `root_gt`) says.
    fn trusted(bytes: Bytes, root_gt: Option<usize>) -> Self {
        let mut frame = Self {
            bytes,
            kind: FrameKind::Event,
            class: CotClass::OTHER,
            control: Control::None,
            uid: None,
        };
        let bytes = frame.bytes.clone();
        let (Some(root), Some(gt)) = (find_start_tag(&bytes, "event", 0), root_gt) else {
            return frame;
        };
        for_each_attribute(&bytes, root, "event", gt, |name, value, range| match name {
            "type" => {
                frame.class = CotClass::from_type(value);
                frame.control = Control::from_type(value);
            }
            "uid" => frame.uid = Some(range),
            _ => {}
        });
        if frame.control == Control::Negotiation(Negotiation::Response { accepted: false }) {
            let mut accepted = false;
            let mut from = root;
            while let Some(at) = find_start_tag(&bytes, "TakResponse", from) {
                let name_end = at + 1 + "TakResponse".len();
                if let (RootTag::Open(gt), _) = (RootTag::Attributes {
                    at: name_end,
                    quote: None,
                })
                .advance(&bytes)
                {
                    for_each_attribute(&bytes, at, "TakResponse", gt, |name, value, _| {
                        accepted |= name == "status" && value == "true";
                    });
                }
                from = at + 1;
            }
            frame.control = Control::Negotiation(Negotiation::Response { accepted });
        }
        frame
    }

    /// The bytes to relay: the declaration and prolog (XML) or header (protobuf) included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// Class of the event's `type`; [`CotClass::OTHER`] for auth and protobuf frames.
    pub fn class(&self) -> CotClass {
        self.class
    }

    /// A TAK ping (`t-x-c-t`).
    pub fn is_ping(&self) -> bool {
        self.control == Control::Ping
    }

    /// Set for the `t-x-takp-v`, `t-x-takp-q` and `t-x-takp-r` negotiation messages.
    pub fn negotiation(&self) -> Option<Negotiation> {
        match self.control {
            Control::Negotiation(n) => Some(n),
            _ => None,
        }
    }

    /// The event's `uid` attribute as written, entity references not expanded.
    pub fn uid(&self) -> Option<&str> {
        let range = self.uid.clone()?;
        std::str::from_utf8(self.bytes.get(range)?).ok()
    }
}

// === CotClass ===

const CLASS_FIRST: &[u8; 6] = b"abctuy";
const CLASS_COUNT: usize = CLASS_FIRST.len() * 26;
const CLASS_LABEL_BYTES: [u8; CLASS_COUNT * 3] = {
    let mut out = [0u8; CLASS_COUNT * 3];
    let mut i = 0;
    while i < CLASS_COUNT {
        out[i * 3] = CLASS_FIRST[i / 26];
        out[i * 3 + 1] = b'-';
        out[i * 3 + 2] = b'a' + (i % 26) as u8;
        i += 1;
    }
    out
};
// Labels are sliced out of one static string so that `as_str` hands out `&'static str`
// without a hand-written table of 156 literals.
const CLASS_LABELS: &str = match std::str::from_utf8(&CLASS_LABEL_BYTES) {
    Ok(labels) => labels,
    Err(_) => "",
};

/// The first two atoms of a CoT `type` (`a-f-G-U-C` → `a-f`), from a closed set of 157 values
/// so it can be a Prometheus label: the first atom is one of `a b c t u y` and the second a
/// single lowercase ASCII letter, anything else is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CotClass(u8);

impl CotClass {
    pub const OTHER: Self = Self(0);

    pub fn from_type(cot_type: &str) -> Self {
        let t = cot_type.as_bytes();
        let (Some(&first), Some(&b'-'), Some(&second)) = (t.first(), t.get(1), t.get(2)) else {
            return Self::OTHER;
        };
        if !matches!(t.get(3), None | Some(b'-')) || !second.is_ascii_lowercase() {
            return Self::OTHER;
        }
        let Some(row) = CLASS_FIRST.iter().position(|&f| f == first) else {
            return Self::OTHER;
        };
        let index = row * 26 + usize::from(second - b'a');
        u8::try_from(index + 1).map_or(Self::OTHER, Self)
    }

    pub fn as_str(self) -> &'static str {
        match usize::from(self.0).checked_sub(1) {
            Some(i) => CLASS_LABELS.get(i * 3..i * 3 + 3).unwrap_or("other"),
            None => "other",
        }
    }

    /// An atom (`a-…`): a thing on the map and where it is. Most of CoT, and each report
    /// superseded by the same device's next one.
    pub fn is_atom(self) -> bool {
        // Row 0 of `CLASS_FIRST` is `a`; index 0 is `other`.
        (1..=26).contains(&self.0)
    }

    /// Every class, `other` first: for registering metric series up front.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..=CLASS_COUNT as u8).map(Self)
    }
}

impl fmt::Display for CotClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === Errors ===

/// Coarse error class, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameErrorKind {
    /// Not well-formed CoT: XML errors, a wrong root, stray text, bad protobuf framing.
    Malformed,
    /// A `<!DOCTYPE`: refused rather than parsed, so no entity can ever be expanded.
    Doctype,
    /// A frame longer than `max_frame`. Always terminal.
    TooLarge,
}

impl FrameErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Doctype => "doctype",
            Self::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for FrameErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("{0}")]
    Xml(quick_xml::Error),
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("end tag </{found}> does not close <{expected}>")]
    MismatchedEnd { expected: String, found: String },
    #[error("end tag </{0}> closes nothing")]
    UnmatchedEnd(String),
    #[error("root element <{0}> is neither <event> nor <auth>")]
    UnexpectedRoot(String),
    #[error("text outside an element")]
    TextOutsideElement,
    #[error("XML declaration not at the start of a message")]
    MisplacedDecl,
    #[error("reference to undeclared entity &{0};")]
    UnknownEntity(String),
    #[error("control character {0:#04x} is not allowed in XML")]
    ControlChar(u8),
    #[error("'<' in the value of attribute {0}")]
    LtInAttribute(String),
    #[error("end tag of the root <{0}> with space before its '>'")]
    SpacedRootEnd(String),
    #[error("frame longer than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("protobuf frame starts with {0:#04x}, not 0xbf")]
    BadMagic(u8),
    #[error("protobuf length varint longer than 10 bytes or above u64")]
    BadVarint,
    #[error("bytes already given to the framer were removed from its buffer")]
    BufferShrunk,
}

impl Reason {
    fn kind(&self) -> FrameErrorKind {
        match self {
            Self::Doctype => FrameErrorKind::Doctype,
            Self::TooLarge { .. } => FrameErrorKind::TooLarge,
            _ => FrameErrorKind::Malformed,
        }
    }
}

/// A refused frame. Under [`MalformedPolicy::Drop`] a non-terminal error only means the frame
/// was skipped; call [`Framer::next_frame`] again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} CoT at stream byte {offset}: {reason}")]
pub struct FrameError {
    kind: FrameErrorKind,
    reason: Reason,
    offset: u64,
    terminal: bool,
}

impl FrameError {
    pub fn kind(&self) -> FrameErrorKind {
        self.kind
    }

    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// Offset in the whole stream (bytes pushed since the framer was made) where the fault was seen.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True when the stream is finished: close the connection.
    pub fn is_terminal(&self) -> bool {
        self.terminal
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

/// A fault at an index of the buffer, before the policy turns it into a [`FrameError`].
struct Fault {
    at: usize,
    reason: Reason,
}

impl Fault {
    fn new(at: usize, reason: Reason) -> Self {
        Self { at, reason }
    }
}

enum Step {
    Continue,
    NeedMore,
    // A markup token ends at this index.
    Markup(usize),
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

    // --- XML from a trusted peer ---

    fn next_trusted(&mut self) -> Result<Option<Frame>, Fault> {
        if self.parse_frame {
            let found = self.next_xml();
            // Back to delimiting once the frame is out; after a fault under the Drop policy,
            // only once the parser has resynced and read the next one.
            if matches!(found, Ok(Some(_))) {
                self.parse_frame = false;
            }
            return found;
        }
        let scan = self.trusted_scan;
        if scan.end_from > self.buf.len() {
            return Err(Fault::new(self.buf.len(), Reason::BufferShrunk));
        }
        if scan == TrustedScan::default() {
            // Between frames: whitespace is dropped, as the validating mode does.
            let spaces = self
                .buf
                .iter()
                .take_while(|&&b| is_xml_whitespace(b))
                .count();
            self.discard(spaces);
        }
        // Nothing past `max_frame` is looked at: a frame cannot end there.
        let window = self
            .buf
            .get(..self.buf.len().min(self.max_frame))
            .unwrap_or_default();
        let (root, self_closed) = scan.root.advance(window);
        if root == RootTag::Foreign {
            self.trusted_scan = TrustedScan::default();
            self.parse_frame = true;
            return self.next_trusted();
        }
        let rest = window.get(scan.end_from..).unwrap_or_default();
        let event_end =
            memchr::memmem::find(rest, EVENT_END).map(|i| scan.end_from + i + EVENT_END.len());
        // Whichever comes first ends the frame, so that where it ends does not depend on how
        // the stream was chunked (a `/>` before a `</event>` is only well-formed as two frames).
        let end = match (event_end, self_closed) {
            (Some(a), Some(b)) => a.min(b),
            (Some(end), None) | (None, Some(end)) => end,
            (None, None) => {
                // A `</event>` may straddle the end: look again at its possible first bytes.
                let end_from = window
                    .len()
                    .saturating_sub(EVENT_END.len() - 1)
                    .max(scan.end_from);
                self.trusted_scan = TrustedScan { end_from, root };
                if self.buf.len() > self.max_frame {
                    let limit = self.max_frame;
                    return Err(Fault::new(0, Reason::TooLarge { limit }));
                }
                return Ok(None);
            }
        };
        self.trusted_scan = TrustedScan::default();
        if hides_event_end(self.buf.get(..end).unwrap_or_default()) {
            self.parse_frame = true;
            return self.next_trusted();
        }
        // The root's start tag has been read already: where it closes, if within the frame.
        let root_gt = match root {
            RootTag::Open(gt) if gt < end => Some(gt),
            _ => None,
        };
        Ok(Some(Frame::trusted(self.take(end), root_gt)))
    }

    // --- XML ---

    fn next_xml(&mut self) -> Result<Option<Frame>, Fault> {
        if self.xml.scan > self.buf.len() {
            return Err(Fault::new(self.buf.len(), Reason::BufferShrunk));
        }
        loop {
            if self.resync && !self.resync_xml() {
                return Ok(None);
            }
            match self.step_xml()? {
                Step::Continue => {}
                Step::Markup(end) => {
                    let start = self.xml.parsed;
                    let batch = self.buf.get(start..end).unwrap_or_default();
                    let complete = self.xml.parse(batch, start)?;
                    self.xml.parsed = end;
                    self.xml.scan = end;
                    self.xml.tok = Tok::Boundary;
                    if complete {
                        return Ok(Some(self.take_xml_frame(end)));
                    }
                }
                Step::NeedMore => {
                    if self.xml.in_frame && self.buf.len() > self.max_frame {
                        let limit = self.max_frame;
                        return Err(Fault::new(0, Reason::TooLarge { limit }));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Advances the scanner by one token state. Looks at no byte past `max_frame` of a frame.
    fn step_xml(&mut self) -> Result<Step, Fault> {
        let x = &mut self.xml;
        let limit = if x.in_frame {
            self.buf.len().min(self.max_frame)
        } else {
            self.buf.len()
        };
        let buf = self.buf.get(..limit).unwrap_or_default();
        let rest = buf.get(x.scan..).unwrap_or_default();
        match x.tok {
            Tok::Boundary => {
                let Some(&b) = rest.first() else {
                    return Ok(Step::NeedMore);
                };
                x.tok_start = x.scan;
                if b == b'<' {
                    x.in_frame = true;
                    x.tok = Tok::Lt;
                    x.scan += 1;
                } else {
                    x.tok = Tok::Text;
                }
                Ok(Step::Continue)
            }
            Tok::Text if x.open_starts.is_empty() => {
                // Outside the root only whitespace may appear; say so at the first other byte
                // rather than when the next `<` turns up.
                let spaces = rest
                    .iter()
                    .position(|&b| !is_xml_whitespace(b))
                    .unwrap_or(rest.len());
                let stop = x.scan + spaces;
                let at_markup = match buf.get(stop) {
                    Some(b'<') => true,
                    Some(_) => return Err(Fault::new(stop, Reason::TextOutsideElement)),
                    None => false,
                };
                if at_markup {
                    x.tok = Tok::Boundary;
                }
                if x.in_frame {
                    x.scan = stop;
                } else {
                    // No frame has begun: this whitespace is between frames and is dropped.
                    x.reset();
                    self.discard(stop);
                }
                Ok(if at_markup {
                    Step::Continue
                } else {
                    Step::NeedMore
                })
            }
            Tok::Text => match memchr::memchr(b'<', rest) {
                Some(i) => {
                    x.scan += i;
                    x.tok = Tok::Boundary;
                    Ok(Step::Continue)
                }
                None => {
                    x.scan = limit;
                    Ok(Step::NeedMore)
                }
            },
            Tok::Lt => {
                let Some(&b) = rest.first() else {
                    return Ok(Step::NeedMore);
                };
                // quick-xml feeds its token parsers from the `<`; so does this scanner, so both
                // agree on where every token ends.
                x.tok = match b {
                    b'!' => Tok::Bang,
                    b'?' => Tok::Pi(PiParser(false)),
                    _ => Tok::Element(ElementParser::Outside),
                };
                x.scan = if b == b'!' { x.scan + 1 } else { x.tok_start };
                Ok(Step::Continue)
            }
            Tok::Bang => {
                let Some(&b) = rest.first() else {
                    return Ok(Step::NeedMore);
                };
                x.tok = match b {
                    b'-' => Tok::Comment,
                    b'[' => Tok::CData,
                    _ => {
                        let token = buf.get(x.tok_start..=x.scan).unwrap_or_default();
                        return Err(Fault::new(x.tok_start, classify_bang(token)));
                    }
                };
                x.scan += 1;
                Ok(Step::Continue)
            }
            Tok::Element(mut parser) => Ok(feed(&mut parser, x, rest, limit, Tok::Element)),
            Tok::Pi(mut parser) => Ok(feed(&mut parser, x, rest, limit, Tok::Pi)),
            Tok::Comment => Ok(find_close(x, buf, b'-', 5)),
            Tok::CData => Ok(find_close(x, buf, b']', 1)),
        }
    }

    fn take_xml_frame(&mut self, end: usize) -> Frame {
        let info = std::mem::take(&mut self.xml.info);
        self.xml.reset();
        let bytes = self.take(end);
        let len = bytes.len();
        Frame {
            bytes,
            kind: info.kind,
            class: info.class,
            control: info.control,
            uid: info.uid.filter(|r| r.end <= len),
        }
    }

    /// Drops bytes up to the next `<event`, `<auth` or `<?xml`; true once one is at buf[0].
    fn resync_xml(&mut self) -> bool {
        let mut from = 0;
        loop {
            let rest = self.buf.get(from..).unwrap_or_default();
            let Some(i) = memchr::memchr(b'<', rest) else {
                self.discard(self.buf.len());
                return false;
            };
            let at = from + i;
            match starts_frame(self.buf.get(at..).unwrap_or_default()) {
                Some(true) => {
                    self.discard(at);
                    self.resync = false;
                    return true;
                }
                Some(false) => from = at + 1,
                None => {
                    self.discard(at);
                    return false;
                }
            }
        }
    }

    // --- TAK protocol version 1 ---

    fn next_proto(&mut self) -> Result<Option<Frame>, Fault> {
        if self.resync {
            match memchr::memchr(PROTO_MAGIC, &self.buf) {
                Some(at) => {
                    self.discard(at);
                    self.resync = false;
                }
                None => {
                    self.discard(self.buf.len());
                    return Ok(None);
                }
            }
        }
        let Some(&magic) = self.buf.first() else {
            return Ok(None);
        };
        if magic != PROTO_MAGIC {
            return Err(Fault::new(0, Reason::BadMagic(magic)));
        }
        let mut len: u64 = 0;
        let mut header = None;
        for i in 0..MAX_VARINT_LEN {
            // A header still growing cannot fit either; deciding before looking at the byte
            // keeps the outcome independent of how the stream was chunked.
            if i + 2 > self.max_frame {
                let limit = self.max_frame;
                return Err(Fault::new(0, Reason::TooLarge { limit }));
            }
            let Some(&b) = self.buf.get(1 + i) else {
                return Ok(None);
            };
            // The tenth byte holds bit 63 only; anything more overflows u64 or goes on.
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(Fault::new(0, Reason::BadVarint));
            }
            let bits = u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
            len |= bits;
            if b & 0x80 == 0 {
                header = Some(2 + i);
                break;
            }
        }
        let Some(header) = header else {
            return Err(Fault::new(0, Reason::BadVarint));
        };
        let total = (header as u64)
            .checked_add(len)
            .and_then(|t| usize::try_from(t).ok())
            .filter(|&t| t <= self.max_frame);
        match total {
            None => {
                let limit = self.max_frame;
                Err(Fault::new(0, Reason::TooLarge { limit }))
            }
            Some(total) if self.buf.len() < total => Ok(None),
            Some(total) => Ok(Some(Frame::proto(self.take(total)))),
        }
    }
}

// === XML scanning ===

/// Where the scanner stands inside the current token.
#[derive(Debug, Clone, Copy, Default)]
enum Tok {
    /// Between tokens: the next byte decides.
    #[default]
    Boundary,
    Text,
    /// Seen `<`.
    Lt,
    /// Seen `<!`.
    Bang,
    Element(ElementParser),
    Pi(PiParser),
    Comment,
    CData,
}

/// What the root element said about the frame, gathered while it is parsed.
#[derive(Debug)]
struct Pending {
    kind: FrameKind,
    class: CotClass,
    control: Control,
    uid: Option<Range<usize>>,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            kind: FrameKind::Event,
            class: CotClass::OTHER,
            control: Control::None,
            uid: None,
        }
    }
}

/// Scanner and structure state of the pending XML frame. Indices are into `Framer::buf`, whose
/// first byte is the first byte of the frame once `in_frame` is set.
#[derive(Debug, Default)]
struct XmlState {
    tok: Tok,
    tok_start: usize,
    // Next byte the scanner has not looked at.
    scan: usize,
    // Bytes before this index have been through quick-xml.
    parsed: usize,
    // A token of the frame (prolog or root) has begun at index 0.
    in_frame: bool,
    // Names of the open elements, concatenated, and where each starts: quick-xml checks end
    // names only within one reader, and a reader here lives for one token.
    open: String,
    open_starts: Vec<usize>,
    info: Pending,
}

impl XmlState {
    fn reset(&mut self) {
        self.tok = Tok::Boundary;
        self.tok_start = 0;
        self.scan = 0;
        self.parsed = 0;
        self.in_frame = false;
        self.open_starts.clear();
        // Keep the allocation for the usual few names, not for a pathological deep frame.
        if self.open.capacity() > 4096 {
            self.open = String::new();
        } else {
            self.open.clear();
        }
        self.info = Pending::default();
    }

    /// Runs quick-xml over one markup token and the text before it (`batch`, starting at buffer
    /// index `start`). True when the root element closed.
    fn parse(&mut self, batch: &[u8], start: usize) -> Result<bool, Fault> {
        // quick-xml drops a leading byte-order mark without counting it in its positions.
        let bom = if batch.starts_with(UTF8_BOM) {
            UTF8_BOM.len()
        } else {
            0
        };
        let origin = start.saturating_add(bom);
        let index = |pos: u64| origin.saturating_add(usize::try_from(pos).unwrap_or(usize::MAX));
        // XML 1.0 §2.2 allows no C0 control but tab, LF and CR, even as raw bytes; quick-xml
        // refuses `&#0;` but lets a raw NUL through, which OTS's parser would then choke on.
        if let Some(at) = first_control_char(batch) {
            let byte = batch.get(at).copied().unwrap_or_default();
            return Err(Fault::new(
                start.saturating_add(at),
                Reason::ControlChar(byte),
            ));
        }

        let mut reader = Reader::from_reader(batch);
        let config = reader.config_mut();
        config.check_end_names = false;
        config.allow_unmatched_ends = true;
        config.check_comments = true;
        config.allow_dangling_amp = false;
        config.expand_empty_elements = false;
        config.trim_text(false);

        loop {
            let before = reader.buffer_position();
            let at = index(before);
            let event = reader
                .read_event()
                .map_err(|e| Fault::new(index(reader.error_position()), Reason::Xml(e)))?;
            let closed = match event {
                Event::Eof => return Ok(false),
                Event::Start(e) => {
                    self.element(&e, at, batch, start)?;
                    self.open_starts.push(self.open.len());
                    self.open.push_str(e.name().0);
                    false
                }
                Event::Empty(e) => {
                    self.element(&e, at, batch, start)?;
                    self.open_starts.is_empty()
                }
                Event::End(e) => {
                    let found = e.name().0;
                    let Some(name_start) = self.open_starts.pop() else {
                        return Err(Fault::new(at, Reason::UnmatchedEnd(clip(found))));
                    };
                    let expected = self.open.get(name_start..).unwrap_or_default();
                    if expected != found {
                        let reason = Reason::MismatchedEnd {
                            expected: clip(expected),
                            found: clip(found),
                        };
                        return Err(Fault::new(at, reason));
                    }
                    self.open.truncate(name_start);
                    let root_closed = self.open_starts.is_empty();
                    // Valid XML, but OTS finds a message's end by its literal `</event>` (or
                    // `</auth>`), and so does the trusted framer of the way back.
                    let written = reader.buffer_position().saturating_sub(before);
                    if root_closed && written != found.len() as u64 + 3 {
                        return Err(Fault::new(at, Reason::SpacedRootEnd(clip(found))));
                    }
                    root_closed
                }
                Event::Text(text) => {
                    if self.open_starts.is_empty() && !text.bytes().all(is_xml_whitespace) {
                        return Err(Fault::new(at, Reason::TextOutsideElement));
                    }
                    false
                }
                Event::GeneralRef(r) => {
                    if self.open_starts.is_empty() {
                        return Err(Fault::new(at, Reason::TextOutsideElement));
                    }
                    check_reference(&r).map_err(|reason| Fault::new(at, reason))?;
                    false
                }
                Event::CData(_) => {
                    if self.open_starts.is_empty() {
                        return Err(Fault::new(at, Reason::TextOutsideElement));
                    }
                    false
                }
                Event::Decl(decl) => {
                    if at != 0 {
                        return Err(Fault::new(at, Reason::MisplacedDecl));
                    }
                    decl.version().map_err(|e| Fault::new(at, Reason::Xml(e)))?;
                    false
                }
                Event::DocType(_) => return Err(Fault::new(at, Reason::Doctype)),
                Event::Comment(_) | Event::PI(_) => false,
            };
            if closed {
                return Ok(true);
            }
        }
    }

    /// Checks a start or empty tag's attributes; for the root, records what the frame is.
    fn element(
        &mut self,
        e: &BytesStart<'_>,
        at: usize,
        batch: &[u8],
        start: usize,
    ) -> Result<(), Fault> {
        let name = e.name().0;
        let root = self.open_starts.is_empty();
        if root {
            self.info.kind = match name {
                "event" => FrameKind::Event,
                "auth" => FrameKind::Auth,
                _ => return Err(Fault::new(at, Reason::UnexpectedRoot(clip(name)))),
            };
        }
        let event_root = root && self.info.kind == FrameKind::Event;
        let tak_response = !root
            && name == "TakResponse"
            && matches!(
                self.info.control,
                Control::Negotiation(Negotiation::Response { .. })
            );
        for attr in e.attributes() {
            let attr = attr.map_err(|err| Fault::new(at, Reason::Xml(err.into())))?;
            let value: &str = &attr.value;
            // Not well-formed, and quick-xml lets it through: a `</event>` hidden in a value
            // would end the event early for anyone who splits streams on `</event>` (OTS itself,
            // the trusted framer of another client's session).
            if value.contains('<') {
                return Err(Fault::new(at, Reason::LtInAttribute(clip(attr.key.0))));
            }
            // Resolving is only a check: predefined and character references pass, anything
            // else (there is no DTD to declare it) is an error, and nothing is expanded.
            if value.contains('&') {
                attr.normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|err| Fault::new(at, Reason::Xml(err)))?;
            }
            match attr.key.0 {
                "type" if event_root => {
                    self.info.class = CotClass::from_type(value);
                    self.info.control = Control::from_type(value);
                }
                "uid" if event_root => self.info.uid = span_in(batch, value, start),
                "status" if tak_response && value == "true" => {
                    self.info.control =
                        Control::Negotiation(Negotiation::Response { accepted: true });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Feeds a quick-xml token parser the bytes not seen yet.
fn feed<P: Parser + Copy>(
    parser: &mut P,
    x: &mut XmlState,
    rest: &[u8],
    limit: usize,
    wrap: fn(P) -> Tok,
) -> Step {
    // PiParser remembers whether the last byte it saw was `?`; an empty feed would forget it.
    if rest.is_empty() {
        return Step::NeedMore;
    }
    match parser.feed(rest) {
        Some(i) => Step::Markup(x.scan + i + 1),
        None => {
            x.tok = wrap(*parser);
            x.scan = limit;
            Step::NeedMore
        }
    }
}

/// Finds the `-->` of a comment or `]]>` of a CDATA section the way quick-xml does: the first
/// `>` more than `min` bytes into the token preceded by two `mark` bytes.
fn find_close(x: &mut XmlState, buf: &[u8], mark: u8, min: usize) -> Step {
    let rest = buf.get(x.scan..).unwrap_or_default();
    for i in memchr::memchr_iter(b'>', rest) {
        let gt = x.scan + i;
        let closes = gt.saturating_sub(x.tok_start) > min
            && gt
                .checked_sub(2)
                .and_then(|from| buf.get(from..gt))
                .is_some_and(|pair| pair == [mark, mark]);
        if closes {
            return Step::Markup(gt + 1);
        }
    }
    x.scan = buf.len();
    Step::NeedMore
}

/// Lets quick-xml classify `<!` followed by a byte that opens neither a comment nor CDATA.
/// It takes `<!D`/`<!d` for a DOCTYPE, which is refused right there: its internal subset
/// (where entity bombs live) is never buffered or read.
fn classify_bang(token: &[u8]) -> Reason {
    match Reader::from_reader(token).read_event() {
        Err(quick_xml::Error::Syntax(SyntaxError::UnclosedDoctype)) | Ok(Event::DocType(_)) => {
            Reason::Doctype
        }
        Err(e) => Reason::Xml(e),
        Ok(_) => Reason::Xml(quick_xml::Error::Syntax(SyntaxError::InvalidBangMarkup)),
    }
}

fn check_reference(r: &BytesRef<'_>) -> Result<(), Reason> {
    match r.resolve_char_ref() {
        Ok(Some(_)) => Ok(()),
        Ok(None) if resolve_predefined_entity(r).is_some() => Ok(()),
        Ok(None) => Err(Reason::UnknownEntity(clip(r))),
        Err(e) => Err(Reason::Xml(e)),
    }
}

/// Whether `s` begins a frame the Drop policy can resume at; `None` while too short to tell.
fn starts_frame(s: &[u8]) -> Option<bool> {
    // Each start with the bytes that may follow it.
    const STARTS: [(&[u8], &[u8]); 3] = [
        (b"<event", b" \t\r\n>/"),
        (b"<auth", b" \t\r\n>/"),
        (b"<?xml", b" \t\r\n?"),
    ];
    let mut undecided = false;
    for (prefix, ends) in STARTS {
        match s.get(prefix.len()) {
            Some(&next) => {
                if s.starts_with(prefix) && ends.contains(&next) {
                    return Some(true);
                }
            }
            None => undecided |= prefix.starts_with(s),
        }
    }
    if undecided {
        None
    } else {
        Some(false)
    }
}

/// Where the first C0 control character other than tab, LF and CR is. Every byte relayed goes
/// through here, so the common case (none) is a branch-free pass the compiler vectorizes.
fn first_control_char(bytes: &[u8]) -> Option<usize> {
    let is_control = |b: u8| (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r');
    const BLOCK: usize = 64;
    bytes.chunks(BLOCK).enumerate().find_map(|(i, block)| {
        if block.iter().fold(false, |any, &b| any | is_control(b)) {
            block
                .iter()
                .position(|&b| is_control(b))
                .map(|at| i * BLOCK + at)
        } else {
            None
        }
    })
}

/// End of a trusted XML frame.
const EVENT_END: &[u8] = b"</event>";

/// How far a trusted frame has been looked at, so that each byte is looked at once however the
/// stream is chunked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TrustedScan {
    /// Where the search for `</event>` resumes.
    end_from: usize,
    root: RootTag,
}

/// Reading the root's start tag, to end a frame whose root is self-closing (`<event …/>`) without
/// waiting for the next frame's `</event>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RootTag {
    /// Looking for the root's start tag from this index.
    Seek(usize),
    /// In the declaration that opens the frame, looking for its end from this index.
    Declaration(usize),
    /// The root is not `<event`: the frame is left to the validating parser, which knows
    /// `<auth>` and refuses the rest.
    Foreign,
    /// In the start tag from this index; in a quoted value if `quote` is set.
    Attributes { at: usize, quote: Option<u8> },
    /// The start tag ended with the `>` at this index: only a `</event>` ends the frame.
    Open(usize),
}

impl Default for RootTag {
    fn default() -> Self {
        Self::Seek(0)
    }
}

impl RootTag {
    /// Reads on through `window`; the new state, and where the frame ends if the root turned out
    /// to be self-closing.
    fn advance(self, window: &[u8]) -> (Self, Option<usize>) {
        let mut state = self;
        loop {
            state = match state {
                Self::Seek(from) => {
                    let rest = window.get(from..).unwrap_or_default();
                    let Some(lt) = memchr::memchr(b'<', rest).map(|i| from + i) else {
                        return (Self::Seek(window.len().max(from)), None);
                    };
                    if let Some(at) = tag_name_end(window, lt, b"event") {
                        Self::Attributes { at, quote: None }
                    } else {
                        match window.get(lt + 1..).unwrap_or_default() {
                            [b'?', ..] if lt == 0 => Self::Declaration(2),
                            // Still possibly `<event`.
                            name if name.len() <= 5 && b"event".starts_with(name) => {
                                return (Self::Seek(lt), None)
                            }
                            // Another root, a comment, a processing instruction, a DOCTYPE.
                            _ => Self::Foreign,
                        }
                    }
                }
                Self::Declaration(from) => {
                    let rest = window.get(from..).unwrap_or_default();
                    let Some(at) = memchr::memchr2(b'?', b'<', rest).map(|i| from + i) else {
                        return (Self::Declaration(window.len().max(from)), None);
                    };
                    match (window.get(at), window.get(at + 1)) {
                        (Some(b'?'), Some(b'>')) => Self::Seek(at + 2),
                        (Some(b'?'), None) => return (Self::Declaration(at), None),
                        (Some(b'?'), Some(_)) => Self::Declaration(at + 1),
                        // Markup inside the declaration.
                        _ => Self::Foreign,
                    }
                }
                Self::Foreign => return (Self::Foreign, None),
                Self::Attributes { at, quote: Some(q) } => {
                    match memchr::memchr(q, window.get(at..).unwrap_or_default()) {
                        Some(i) => Self::Attributes {
                            at: at + i + 1,
                            quote: None,
                        },
                        None => {
                            return (
                                Self::Attributes {
                                    at: window.len(),
                                    quote: Some(q),
                                },
                                None,
                            )
                        }
                    }
                }
                Self::Attributes { at, quote: None } => {
                    let rest = window.get(at..).unwrap_or_default();
                    match memchr::memchr3(b'>', b'"', b'\'', rest) {
                        Some(i) if rest.get(i) == Some(&b'>') => {
                            let gt = at + i;
                            if gt > 0 && window.get(gt - 1) == Some(&b'/') {
                                return (Self::Open(gt), Some(gt + 1));
                            }
                            Self::Open(gt)
                        }
                        Some(i) => Self::Attributes {
                            at: at + i + 1,
                            quote: rest.get(i).copied(),
                        },
                        None => {
                            return (
                                Self::Attributes {
                                    at: window.len(),
                                    quote: None,
                                },
                                None,
                            )
                        }
                    }
                }
                Self::Open(gt) => return (Self::Open(gt), None),
            };
        }
    }
}

/// Whether a trusted frame, as delimited (at its first `</event>`, or where a self-closing root
/// seems to end), has markup that could put that end somewhere other than the root's real end
/// (module documentation, trusted mode).
fn hides_event_end(frame: &[u8]) -> bool {
    let mut events = 0;
    memchr::memchr_iter(b'<', frame).any(|at| match frame.get(at + 1) {
        Some(b'!') => true,
        // The declaration opening the frame was read with the root (`RootTag`); no other
        // processing instruction is expected.
        Some(b'?') => at != 0,
        _ => {
            events += usize::from(tag_name_end(frame, at, b"event").is_some());
            events > 1
        }
    })
}

/// Where the first `<name` start tag at or after `from` opens.
fn find_start_tag(bytes: &[u8], name: &str, from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    memchr::memchr_iter(b'<', rest)
        .map(|i| from + i)
        .find(|&lt| tag_name_end(bytes, lt, name.as_bytes()).is_some())
}

/// Calls `f` with each attribute of the `<name` start tag opening at `lt` and closing at `gt`
/// (its name, raw value and the value's range in `bytes`), read by quick-xml as the validating
/// framer reads them, up to the first it cannot read.
fn for_each_attribute(
    bytes: &[u8],
    lt: usize,
    name: &str,
    gt: usize,
    mut f: impl FnMut(&str, &str, Range<usize>),
) {
    let name_end = lt + 1 + name.len();
    let end = if bytes.get(gt.wrapping_sub(1)) == Some(&b'/') {
        gt - 1
    } else {
        gt
    };
    let Some(content) = bytes
        .get(lt + 1..end.max(name_end))
        .and_then(|c| std::str::from_utf8(c).ok())
    else {
        return;
    };
    let tag = BytesStart::from_content(content, name.len());
    // Duplicates go unchecked: the validating framer refuses them, so on what it accepts the
    // two read the same; here the last one wins.
    for attr in tag.attributes().with_checks(false) {
        let Ok(attr) = attr else {
            return;
        };
        let value: &str = &attr.value;
        if let Some(range) = span_in(content.as_bytes(), value, lt + 1) {
            f(attr.key.0, value, range);
        }
    }
}

/// If a `<name` start tag opens at `lt`, where its name ends.
fn tag_name_end(bytes: &[u8], lt: usize, name: &[u8]) -> Option<usize> {
    let end = lt + 1 + name.len();
    let delimited = matches!(
        bytes.get(end),
        Some(b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>')
    );
    (bytes.get(lt + 1..end) == Some(name) && delimited).then_some(end)
}

fn is_xml_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Where `value`, a slice borrowed from `batch`, sits in the buffer.
fn span_in(batch: &[u8], value: &str, start: usize) -> Option<Range<usize>> {
    let offset = (value.as_ptr() as usize).checked_sub(batch.as_ptr() as usize)?;
    let end = offset.checked_add(value.len())?;
    (end <= batch.len()).then(|| start + offset..start + end)
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME_IN_ERROR);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default().to_owned()
}
