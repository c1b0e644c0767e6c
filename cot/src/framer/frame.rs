//! What the framer hands back: one message and what its root said.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use super::CotClass;

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
pub(super) enum Control {
    #[default]
    None,
    Ping,
    Negotiation(Negotiation),
}

impl Control {
    pub(super) fn from_type(cot_type: &str) -> Self {
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
    pub(super) bytes: Bytes,
    pub(super) kind: FrameKind,
    pub(super) class: CotClass,
    pub(super) control: Control,
    pub(super) uid: Option<Range<usize>>,
}

impl Frame {
    pub(super) fn proto(bytes: Bytes) -> Self {
        Self {
            bytes,
            kind: FrameKind::Proto,
            class: CotClass::OTHER,
            control: Control::None,
            uid: None,
        }
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
