//! Why a frame was refused.

use std::fmt;

// Names quoted in errors are clipped: an error must not pin a megabyte-long tag name.
const MAX_NAME_IN_ERROR: usize = 64;

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
    #[error("'<' inside the tag of <{0}>")]
    LtInTag(String),
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
    pub(super) fn kind(&self) -> FrameErrorKind {
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
    pub(super) kind: FrameErrorKind,
    pub(super) reason: Reason,
    pub(super) offset: u64,
    pub(super) terminal: bool,
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

/// A fault at an index of the buffer, before the policy turns it into a [`FrameError`].
pub(super) struct Fault {
    pub(super) at: usize,
    pub(super) reason: Reason,
}

impl Fault {
    pub(super) fn new(at: usize, reason: Reason) -> Self {
        Self { at, reason }
    }
}

pub(super) fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME_IN_ERROR);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default().to_owned()
}
