//! quick-xml over one markup token: well-formedness, CoT's own refusals, and what the root says.

use quick_xml::errors::SyntaxError;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{is_xml_whitespace, span_in, XmlState};
use crate::framer::error::{clip, Fault, Reason};
use crate::framer::{Control, CotClass, FrameKind, Negotiation};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl XmlState {
    /// Runs quick-xml over one markup token and the text before it (`batch`, starting at buffer
    /// index `start`). True when the root element closed.
    pub(super) fn parse(&mut self, batch: &[u8], start: usize) -> Result<bool, Fault> {
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
        // A raw `<` is not well-formed anywhere in a tag, and quick-xml lets it through in
        // names and values: `<x</event>` is a start tag named `x</event` to it, and a `</event>`
        // in a name or value ends the event early for anyone who splits streams on `</event>`
        // (OTS itself, the trusted framer of another client's session). An end tag's name must
        // match a start tag's, so it is clean too.
        if memchr::memchr(b'<', e.as_bytes()).is_some() {
            return Err(Fault::new(at, Reason::LtInTag(clip(name))));
        }
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

/// Lets quick-xml classify `<!` followed by a byte that opens neither a comment nor CDATA.
/// It takes `<!D`/`<!d` for a DOCTYPE, which is refused right there: its internal subset
/// (where entity bombs live) is never buffered or read.
pub(super) fn classify_bang(token: &[u8]) -> Reason {
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

#[cfg(test)]
mod tests {
    use super::first_control_char;

    #[test]
    fn the_first_control_character_is_found_in_any_block() {
        let clean = b"<detail>\t\r\n".repeat(40);
        let last = clean.len() - 1;
        assert_eq!(first_control_char(&clean), None);
        for at in [0, 63, 64, 65, 200, last] {
            let mut text = clean.clone();
            text[at] = 0x1f;
            text[last] = 0x00;
            assert_eq!(first_control_char(&text), Some(at));
        }
    }
}
