//! Realistic CoT: position reports (PLI) as ATAK sends them, and the real ATAK events of
//! `cot/tests/fixtures/cot` (markers, drawings, routes, range/bearing, geofence, telestration;
//! 0.7 to 4.4 KB), templated: each event gets a fresh `uid`, `time`, `start` and `stale`, and a
//! position that moves per client.
//!
//! The `uid` carries the measurement stamp, `loadtest-<client>-<seq>-<intended>-<sent>`
//! (nanoseconds since the process's epoch), so whoever reads the event back (an echo, or
//! another client through a relay) knows when it was meant to leave and when it did.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which events a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// 70 % position reports, 30 % the fixture events in turn.
    Mixed,
    /// Position reports only (about 750 bytes; `--size` pads them).
    Pli,
    /// The fixture events in turn.
    Fixtures,
}

/// A position report as ATAK sends it every few seconds; `{remarks}` is where `--size` pads.
const PLI: &str = "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\
<event version='2.0' uid='ANDROID-0000000000000000' type='a-f-G-U-C' time='2020-12-16T19:59:34.913Z' start='2020-12-16T19:59:34.913Z' stale='2020-12-16T20:01:34.913Z' how='m-g'>\
<point lat='38.85606343062312' lon='-77.0563755018233' hae='21.3' ce='4.9' le='9999999.0'/>\
<detail><takv device='loadtest' platform='ATAK-CIV' os='34' version='5.2.0.4 (loadtest)'/>\
<contact endpoint='*:-1:stcp' callsign='{callsign}'/>\
<uid Droid='{callsign}'/>\
<precisionlocation altsrc='GPS' geopointsrc='GPS'/>\
<__group role='Team Member' name='Cyan'/>\
<status battery='87'/>\
<track course='132.51' speed='1.24'/>\
<remarks>{remarks}</remarks>\
</detail></event>";

const FIXTURES: [(&str, &str); 12] = [
    (
        "drawing-circle",
        include_str!("../../cot/tests/fixtures/cot/drawing-circle.cot"),
    ),
    (
        "drawing-free-form",
        include_str!("../../cot/tests/fixtures/cot/drawing-free-form.cot"),
    ),
    (
        "drawing-rectangle",
        include_str!("../../cot/tests/fixtures/cot/drawing-rectangle.cot"),
    ),
    (
        "geo-fence",
        include_str!("../../cot/tests/fixtures/cot/geo-fence.cot"),
    ),
    (
        "marker-2525",
        include_str!("../../cot/tests/fixtures/cot/marker-2525.cot"),
    ),
    (
        "marker-icon-set",
        include_str!("../../cot/tests/fixtures/cot/marker-icon-set.cot"),
    ),
    (
        "marker-spot",
        include_str!("../../cot/tests/fixtures/cot/marker-spot.cot"),
    ),
    (
        "range-bearing-bullseye",
        include_str!("../../cot/tests/fixtures/cot/range-bearing-bullseye.cot"),
    ),
    (
        "range-bearing-circle",
        include_str!("../../cot/tests/fixtures/cot/range-bearing-circle.cot"),
    ),
    (
        "range-bearing-line",
        include_str!("../../cot/tests/fixtures/cot/range-bearing-line.cot"),
    ),
    (
        "route",
        include_str!("../../cot/tests/fixtures/cot/route.cot"),
    ),
    (
        "telestration",
        include_str!("../../cot/tests/fixtures/cot/telestration.cot"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Uid,
    Time,
    Start,
    Stale,
    Lat,
    Lon,
    Callsign,
    Remarks,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(Range<usize>),
    Field(Field),
}

/// An event with the places its varying fields go.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: &'static str,
    text: &'static str,
    parts: Vec<Part>,
    stale_after: Duration,
}

/// The range of the value of attribute `name` inside the tag `text[tag]`.
fn attr_value(text: &str, tag: Range<usize>, name: &str) -> Option<Range<usize>> {
    let t = text.get(tag.clone())?;
    for quote in ['\'', '"'] {
        let needle = format!(" {name}={quote}");
        if let Some(at) = t.find(&needle) {
            let start = tag.start + at + needle.len();
            let len = text.get(start..tag.end)?.find(quote)?;
            return Some(start..start + len);
        }
    }
    None
}

/// The range of the start tag beginning `<name` at or after `from`: up to its `>`.
fn start_tag(text: &str, name: &str, from: usize) -> Option<Range<usize>> {
    let open = format!("<{name} ");
    let start = from + text.get(from..)?.find(&open)?;
    let end = start + text.get(start..)?.find('>')?;
    Some(start..end)
}

impl Template {
    /// Finds the varying fields of `text`: the event tag's uid/time/start/stale, the
    /// coordinates of the event's own `<point>`, and PLI's callsign and remarks placeholders.
    fn parse(name: &'static str, text: &'static str, stale_after: Duration) -> Option<Self> {
        let event = start_tag(text, "event", 0)?;
        let point = start_tag(text, "point", event.end)?;
        let mut holes: Vec<(Range<usize>, Field)> = vec![
            (attr_value(text, event.clone(), "uid")?, Field::Uid),
            (attr_value(text, event.clone(), "time")?, Field::Time),
            (attr_value(text, event.clone(), "start")?, Field::Start),
            (attr_value(text, event, "stale")?, Field::Stale),
            (attr_value(text, point.clone(), "lat")?, Field::Lat),
            (attr_value(text, point, "lon")?, Field::Lon),
        ];
        for (placeholder, field) in [
            ("{callsign}", Field::Callsign),
            ("{remarks}", Field::Remarks),
        ] {
            let mut from = 0;
            while let Some(at) = text.get(from..).and_then(|t| t.find(placeholder)) {
                let start = from + at;
                holes.push((start..start + placeholder.len(), field));
                from = start + placeholder.len();
            }
        }
        holes.sort_by_key(|(r, _)| r.start);
        let mut parts = Vec::with_capacity(holes.len() * 2 + 1);
        let mut at = 0;
        for (r, field) in holes {
            parts.push(Part::Lit(at..r.start));
            parts.push(Part::Field(field));
            at = r.end;
        }
        parts.push(Part::Lit(at..text.len()));
        Some(Self {
            name,
            text,
            parts,
            stale_after,
        })
    }

    fn has(&self, field: Field) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field(f) if *f == field))
    }
}

/// The measurement stamp carried in a generated event's uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub client: u32,
    pub seq: u64,
    /// Intended send time, nanoseconds since [`crate::stats::epoch`].
    pub intended_ns: u64,
    /// Actual send time, same clock.
    pub sent_ns: u64,
}

const UID_PREFIX: &str = "loadtest-";

impl Stamp {
    pub fn write_uid(&self, out: &mut String) {
        let _ = write!(
            out,
            "{UID_PREFIX}{}-{}-{}-{}",
            self.client, self.seq, self.intended_ns, self.sent_ns
        );
    }

    /// The stamp in `uid`, if it is one of ours.
    pub fn parse(uid: &str) -> Option<Self> {
        let mut it = uid.strip_prefix(UID_PREFIX)?.split('-');
        let s = Self {
            client: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
            intended_ns: it.next()?.parse().ok()?,
            sent_ns: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(s)
    }
}

/// Generates the events of one client.
#[derive(Debug, Clone)]
pub struct CotGen {
    templates: Vec<Template>,
    /// Set (to 0) when the PLI template is first among others: the mixed payload.
    pli: Option<usize>,
    size: Option<usize>,
    client: u32,
    base: (f64, f64),
    scratch: String,
}

impl CotGen {
    pub fn new(client: u32, payload: Payload, size: Option<usize>) -> Self {
        let mut templates = Vec::new();
        let mut pli = None;
        // `--size` pads the position report's remarks, so it means position reports only.
        let payload = if size.is_some() {
            Payload::Pli
        } else {
            payload
        };
        if payload != Payload::Fixtures {
            pli = Some(0);
            templates.extend(Template::parse("pli", PLI, Duration::from_secs(120)));
        }
        if payload != Payload::Pli {
            for (name, text) in FIXTURES {
                templates.extend(Template::parse(name, text, Duration::from_secs(86_400)));
            }
        }
        // Spread the clients over a ~10 km square near the fixtures' own positions.
        let spread = |k: u64| (client as u64).wrapping_mul(k) % 1000;
        let base = (
            38.80 + spread(7919) as f64 / 10_000.0,
            -77.10 + spread(104_729) as f64 / 10_000.0,
        );
        Self {
            templates,
            pli: pli.filter(|_| payload == Payload::Mixed),
            size,
            client,
            base,
            scratch: String::new(),
        }
    }

    /// Every template this generator draws from (for tests).
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// Which template message `seq` uses.
    fn pick(&self, seq: u64) -> usize {
        let n = self.templates.len().max(1);
        match self.pli {
            // Mixed: PLI is template 0, the fixtures follow. 7 in 10 messages are position
            // reports; the others walk through the fixtures, each client from its own place.
            Some(0) if n > 1 => {
                let h = (seq + u64::from(self.client) * 3) % 10;
                if h < 7 {
                    0
                } else {
                    let k = (seq / 10 * 3 + (h - 7) + u64::from(self.client)) % (n as u64 - 1);
                    1 + k as usize
                }
            }
            _ => ((seq + u64::from(self.client)) % n as u64) as usize,
        }
    }

    /// Writes event `seq` with `stamp`, dated `now`, into `out` (cleared first).
    pub fn event(&mut self, stamp: &Stamp, now: SystemTime, out: &mut Vec<u8>) {
        let idx = self.pick(stamp.seq);
        self.event_from(idx, stamp, now, out);
    }

    /// Writes an event from template `idx`.
    pub fn event_from(&mut self, idx: usize, stamp: &Stamp, now: SystemTime, out: &mut Vec<u8>) {
        out.clear();
        let Some(t) = self.templates.get(idx) else {
            return;
        };
        let time = iso8601(now);
        let stale = iso8601(now + t.stale_after);
        // A slow walk: about 1 m per message, wrapping every 1000 messages.
        let step = (stamp.seq % 1000) as f64 * 0.00001;
        let (lat, lon) = (self.base.0 + step, self.base.1 + step * 0.7);
        let mut pad_at = None;
        for part in &t.parts {
            match part {
                Part::Lit(r) => {
                    out.extend_from_slice(t.text.as_bytes().get(r.clone()).unwrap_or_default())
                }
                Part::Field(f) => {
                    let s = &mut self.scratch;
                    s.clear();
                    match f {
                        Field::Uid => stamp.write_uid(s),
                        Field::Time | Field::Start => s.push_str(&time),
                        Field::Stale => s.push_str(&stale),
                        Field::Lat => {
                            let _ = write!(s, "{lat:.7}");
                        }
                        Field::Lon => {
                            let _ = write!(s, "{lon:.7}");
                        }
                        Field::Callsign => {
                            let _ = write!(s, "LT-{}", self.client);
                        }
                        Field::Remarks => pad_at = Some(out.len()),
                    }
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        if let (Some(size), Some(at)) = (self.size, pad_at) {
            let missing = size.saturating_sub(out.len());
            out.splice(at..at, std::iter::repeat_n(b'x', missing));
        }
    }

    /// Whether template `idx` can be padded (for tests).
    pub fn paddable(&self, idx: usize) -> bool {
        self.templates
            .get(idx)
            .is_some_and(|t| t.has(Field::Remarks))
    }
}

/// `2026-11-26T10:00:00.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use cot::framer::{FrameKind, Framer, FramerConfig};
    use quick_xml::events::Event;

    use super::*;

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            client: 42,
            seq,
            intended_ns: 1_000_000 + seq,
            sent_ns: 1_000_500 + seq,
        }
    }

    /// Parses `xml` completely (well-formed, end tags matched), returning the event's uid and
    /// time attributes and its own point's lat and lon.
    fn check_xml(xml: &[u8]) -> (String, String, String, String) {
        let mut reader = quick_xml::Reader::from_reader(xml);
        reader.config_mut().check_end_names = true;
        let (mut uid, mut time, mut lat, mut lon) = Default::default();
        let mut depth = 0;
        let mut events = 0;
        let mut buf = Vec::new();
        loop {
            let ev = reader
                .read_event_into(&mut buf)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(xml)));
            let attr = |e: &quick_xml::events::BytesStart<'_>, n: &str| -> String {
                e.attributes()
                    .map(|a| a.unwrap())
                    .find(|a| a.key.0 == n)
                    .map(|a| a.value.to_string())
                    .unwrap_or_default()
            };
            match &ev {
                Event::Start(e) | Event::Empty(e) => {
                    if e.name().0 == "event" {
                        assert_eq!(depth, 0);
                        events += 1;
                        uid = attr(e, "uid");
                        time = attr(e, "time");
                    }
                    if e.name().0 == "point" && depth == 1 {
                        lat = attr(e, "lat");
                        lon = attr(e, "lon");
                    }
                    if matches!(ev, Event::Start(_)) {
                        depth += 1;
                    }
                }
                Event::End(_) => depth -= 1,
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        assert_eq!(depth, 0);
        assert_eq!(events, 1);
        (uid, time, lat, lon)
    }

    fn frames_once(bytes: &[u8]) {
        let mut f = Framer::new(FramerConfig::default());
        f.push(bytes);
        let frame = f.next_frame().unwrap().expect("one whole frame");
        assert_eq!(frame.kind(), FrameKind::Event);
        assert_eq!(
            frame.bytes().as_ref(),
            bytes,
            "the frame is the whole event"
        );
        assert!(f.next_frame().unwrap().is_none(), "and nothing more");
        assert_eq!(f.buffered_len(), 0);
    }

    #[test]
    fn every_template_yields_well_formed_single_frames() {
        let now = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        for payload in [Payload::Mixed, Payload::Pli, Payload::Fixtures] {
            let mut g = CotGen::new(42, payload, None);
            let n = g.templates().len();
            assert_eq!(
                n,
                match payload {
                    Payload::Mixed => 13,
                    Payload::Pli => 1,
                    Payload::Fixtures => 12,
                },
                "every fixture parsed as a template"
            );
            let mut out = Vec::new();
            for idx in 0..n {
                for seq in [0, 7, 999, 123_456_789] {
                    let s = stamp(seq);
                    g.event_from(idx, &s, now, &mut out);
                    let (uid, time, lat, lon) = check_xml(&out);
                    assert_eq!(Stamp::parse(&uid), Some(s), "{}", g.templates()[idx].name);
                    assert_eq!(time, "2026-11-18T11:06:40.123Z");
                    let lat: f64 = lat.parse().unwrap();
                    let lon: f64 = lon.parse().unwrap();
                    assert!((38.8..38.92).contains(&lat), "{lat}");
                    assert!((-77.1..-76.98).contains(&lon), "{lon}");
                    frames_once(&out);
                    // Two events back to back frame as two.
                    let mut two = out.clone();
                    two.extend_from_slice(&out);
                    let mut f = Framer::new(FramerConfig::default());
                    f.push(&two);
                    assert_eq!(f.next_frame().unwrap().unwrap().uid(), Some(uid.as_str()));
                    assert!(f.next_frame().unwrap().is_some());
                }
            }
        }
    }

    #[test]
    fn mixed_streams_vary_types_and_sizes() {
        let mut g = CotGen::new(3, Payload::Mixed, None);
        let mut out = Vec::new();
        let mut sizes = std::collections::BTreeSet::new();
        let mut pli = 0;
        for seq in 0..1000 {
            g.event(&stamp(seq), SystemTime::now(), &mut out);
            frames_once(&out);
            sizes.insert(out.len() / 100);
            let pli_contact = b"<contact endpoint='*:-1:stcp'";
            if out.windows(pli_contact.len()).any(|w| w == pli_contact) {
                pli += 1;
            }
        }
        assert!((650..=750).contains(&pli), "{pli} position reports in 1000");
        assert!(sizes.len() >= 6, "sizes vary: {sizes:?}");
        assert!(
            sizes.iter().any(|s| *s >= 40),
            "the 4 KB telestration appears"
        );
    }

    #[test]
    fn size_pads_position_reports_exactly() {
        for size in [1024, 4096, 65_536] {
            let mut g = CotGen::new(1, Payload::Mixed, Some(size));
            assert!(g.paddable(0));
            let mut out = Vec::new();
            for seq in [0, 1, 99_999] {
                g.event(&stamp(seq), SystemTime::now(), &mut out);
                assert_eq!(out.len(), size);
                check_xml(&out);
                frames_once(&out);
            }
        }
        // Smaller than the event: left as it is.
        let mut g = CotGen::new(1, Payload::Pli, Some(10));
        let mut out = Vec::new();
        g.event(&stamp(0), SystemTime::now(), &mut out);
        assert!(out.len() > 500);
    }

    #[test]
    fn stamps_round_trip_and_foreign_uids_are_ignored() {
        let s = stamp(5);
        let mut uid = String::new();
        s.write_uid(&mut uid);
        assert_eq!(uid, "loadtest-42-5-1000005-1000505");
        assert_eq!(Stamp::parse(&uid), Some(s));
        for other in [
            "ANDROID-589520ccfcd20f01",
            "loadtest-1-2-3",
            "loadtest-1-2-3-4-5",
            "loadtest-x-2-3-4",
        ] {
            assert_eq!(Stamp::parse(other), None, "{other}");
        }
    }

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_millis(951_782_400_999)),
            "2000-02-29T00:00:00.999Z"
        );
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59.000Z"
        );
    }
}
