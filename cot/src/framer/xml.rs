//! The one XML scanner: finds where each token ends, so that quick-xml parses every markup
//! token (with the text before it) once, however the stream is chunked.

use std::ops::Range;

use quick_xml::parser::{ElementParser, Parser, PiParser};

use super::error::{Fault, Reason};
use super::{Control, CotClass, Frame, FrameKind, Framer};

mod parse;

use parse::classify_bang;

enum Step {
    Continue,
    NeedMore,
    // A markup token ends at this index.
    Markup(usize),
}

impl Framer {
    /// How many bytes at the front of the buffer the XML parser has read and found well-formed:
    /// the complete tokens of the pending frame. For the differential fuzz target, which must
    /// not take a token still arriving (one that may yet be refused) for accepted.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn parsed_len(&self) -> usize {
        self.xml.parsed
    }

    pub(super) fn next_xml(&mut self) -> Result<Option<Frame>, Fault> {
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
}

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
pub(super) struct XmlState {
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
    pub(super) fn reset(&mut self) {
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

pub(super) fn is_xml_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Where `value`, a slice borrowed from `batch`, sits in the buffer.
pub(super) fn span_in(batch: &[u8], value: &str, start: usize) -> Option<Range<usize>> {
    let offset = (value.as_ptr() as usize).checked_sub(batch.as_ptr() as usize)?;
    let end = offset.checked_add(value.len())?;
    (end <= batch.len()).then(|| start + offset..start + end)
}
