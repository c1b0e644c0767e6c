//! The OTS-to-client fast path: XML frames delimited, not parsed.
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
//! well-formed. Frames stay bounded by `max_frame`.
//!
//! # What ties it to the parser
//!
//! Parsing every frame would cost 5 to 10 times as much per frame (framer bench: a position
//! report 0.57 µs trusted against 2.8 µs parsed, the largest ATAK sample 0.87 µs against
//! 8.4 µs), so this path is kept, and held to the validating framer ([`Framer::new`]) by the
//! `framer_differential` fuzz target (`cot::fuzzing::framer_differential`), which feeds both
//! the same bytes in the same chunks under the Close policy, switching to protobuf after a
//! granted negotiation as the relay does. With `e` the stream offset up to which the
//! validating framer accepts the stream (the end of its last frame and of the complete tokens
//! of the pending one, before any token it refuses; a token still arriving is not yet
//! accepted, and a longer input that completes it is the fuzzer's to find):
//!
//! 1. **Same frames while the parser accepts.** Every frame the validating framer returns, the
//!    trusted framer returns too, in the same order, with the same bytes, end offset, kind,
//!    class, ping flag, negotiation and uid, so it switches to protobuf at the same boundary.
//! 2. **No early boundary.** Every further trusted frame ends after `e`. A trusted frame that
//!    ends at or before `e` where the parser has no boundary is a smuggling bug: it cut a
//!    message short inside content the parser accepted, and what follows it would be read as a
//!    message of its own (a protobuf grant, say).
//! 3. **No refusal of what the parser accepts.** A stream the validating framer does not
//!    refuse, the trusted framer refuses only at or after `e`.
//!
//! Past `e` the trusted framer may go on delimiting where the parser has stopped; that is its
//! purpose (OTS's output is relayed unvalidated). There a `</event>` inside an attribute value,
//! which the validating framer refuses on the way in, ends a trusted frame, as it ends a
//! message for OTS, which splits its own input on `</event>`.

use std::ops::Range;

use bytes::Bytes;
use quick_xml::events::BytesStart;

use super::error::{Fault, Reason};
use super::xml::{is_xml_whitespace, span_in};
use super::{Control, CotClass, Frame, FrameKind, Framer, Negotiation};

impl Framer {
    pub(super) fn next_trusted(&mut self) -> Result<Option<Frame>, Fault> {
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
}

impl Frame {
    /// An unvalidated XML frame: what its root's start tag (closing at `root_gt`) says.
    pub(super) fn trusted(bytes: Bytes, root_gt: Option<usize>) -> Self {
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
}

/// End of a trusted XML frame.
const EVENT_END: &[u8] = b"</event>";

/// How far a trusted frame has been looked at, so that each byte is looked at once however the
/// stream is chunked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TrustedScan {
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
