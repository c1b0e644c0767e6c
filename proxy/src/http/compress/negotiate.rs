//! `Accept-Encoding` (RFC 9110 §12.5.3): which content coding, if any, a client takes.

use http::header::{HeaderMap, ACCEPT_ENCODING};

use super::Coding;

/// The coding to send for `headers`, or `None` for identity. A coding is acceptable when the
/// client names it, or names `*`, with a non-zero weight; the highest weight wins, brotli before
/// gzip on a tie (smaller for the same CPU). Identity named with a higher weight than any coding
/// keeps the body as it is. No header, or an empty one, means identity only.
pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    let mut br = None;
    let mut gzip = None;
    let mut identity = None;
    let mut star = None;
    for element in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
    {
        let mut parts = element.split(|&b| b == b';');
        let name = parts.next().unwrap_or_default().trim_ascii();
        let Some(weight) = weight(parts) else {
            // A weight that does not parse says nothing certain: the element is ignored.
            continue;
        };
        let slot = if name.eq_ignore_ascii_case(b"br") {
            &mut br
        } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            &mut gzip
        } else if name.eq_ignore_ascii_case(b"identity") {
            &mut identity
        } else if name == b"*" {
            &mut star
        } else {
            continue;
        };
        // The highest weight given to a name counts when a client repeats it.
        *slot = Some(slot.map_or(weight, |w: u16| w.max(weight)));
    }
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    let (coding, best) = if br >= gzip {
        (Coding::Br, br)
    } else {
        (Coding::Gzip, gzip)
    };
    if best == 0 || identity.is_some_and(|w| w > best) {
        return None;
    }
    Some(coding)
}

/// The `q` parameter in thousandths (1000 when absent); `None` when it is malformed.
fn weight<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<u16> {
    for param in params {
        let param = param.trim_ascii();
        let Some(value) = param
            .strip_prefix(b"q=")
            .or_else(|| param.strip_prefix(b"Q="))
        else {
            continue;
        };
        return parse_qvalue(value.trim_ascii());
    }
    Some(1000)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (value.get(..dot)?, value.get(dot + 1..)?),
        None => (value, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}
