//! engine.io v4 heartbeat packets, as the edge sees them (protocol:
//! <https://socket.io/docs/v4/engine-io-protocol/>): over WebSocket one packet per text frame,
//! over long-polling a payload of packets separated by the record separator `\x1e`. The packet
//! type is the first character: `2` PING, `3` PONG (`2probe`/`3probe` are the upgrade's probe,
//! not a heartbeat), `1` CLOSE.
//!
//! Everything here reads untrusted bytes: it never panics and never allocates more than its
//! input.

/// Separates the packets of a long-polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The heartbeat packets, as text.
pub const PING: &str = "2";
pub const PONG: &str = "3";
pub const CLOSE: &str = "1";

/// How many PINGs a long-polling payload from the server holds.
pub fn pings_in_payload(payload: &[u8]) -> usize {
    payload
        .split(|b| *b == SEPARATOR)
        .filter(|p| *p == PING.as_bytes())
        .count()
}

/// A browser's long-polling payload without its PONGs, and how many there were. `None` when it
/// has none (the payload goes on untouched).
pub fn without_pongs(payload: &[u8]) -> Option<(Vec<u8>, usize)> {
    let pongs = payload
        .split(|b| *b == SEPARATOR)
        .filter(|p| *p == PONG.as_bytes())
        .count();
    if pongs == 0 {
        return None;
    }
    let mut rest = Vec::with_capacity(payload.len());
    for packet in payload
        .split(|b| *b == SEPARATOR)
        .filter(|p| *p != PONG.as_bytes())
    {
        if !rest.is_empty() {
            rest.push(SEPARATOR);
        }
        rest.extend_from_slice(packet);
    }
    Some((rest, pongs))
}

/// A server's OPEN packet (`0{"sid":…,"pingInterval":25000,"pingTimeout":1000,…}`, alone or
/// first in a payload) with `pingTimeout` raised to `ms`: the browser then waits
/// `pingInterval + ms` for the next PING before it gives the server up, instead of OTS's
/// `25 s + 1 s`, which a PING delayed by a slow link overruns. `None` when `payload` does not
/// start with an OPEN packet whose JSON has a numeric `pingTimeout` below `ms`.
pub fn with_ping_timeout(payload: &[u8], ms: u64) -> Option<Vec<u8>> {
    let end = payload
        .iter()
        .position(|b| *b == SEPARATOR)
        .unwrap_or(payload.len());
    let (open, rest) = payload.split_at(end);
    let json = open.strip_prefix(b"0")?;
    let mut handshake: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).ok()?;
    let current = handshake.get("pingTimeout")?.as_u64()?;
    if current >= ms {
        return None;
    }
    handshake.insert("pingTimeout".to_owned(), ms.into());
    let mut out = b"0".to_vec();
    serde_json::to_writer(&mut out, &handshake).ok()?;
    out.extend_from_slice(rest);
    Some(out)
}

/// The `sid` of a long-polling request's query (`EIO=4&transport=polling&t=…&sid=…`), if it is
/// one: a handshake has none, and a WebSocket is not polling.
pub fn polling_sid(query: Option<&str>) -> Option<&str> {
    let query = query?;
    let mut polling = false;
    let mut sid = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("transport", "polling")) => polling = true,
            Some(("sid", value)) if !value.is_empty() && value.len() <= MAX_SID => {
                sid = Some(value)
            }
            _ => {}
        }
    }
    sid.filter(|_| polling)
}

/// python-engineio's sids are 20 characters; anything much longer is not one, and is not kept.
pub const MAX_SID: usize = 64;

/// Whether a query is a long-polling handshake (`transport=polling`, no `sid`), whose answer is
/// the OPEN packet.
pub fn is_polling_handshake(query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    let pairs = || query.split('&').filter_map(|p| p.split_once('='));
    pairs().any(|kv| kv == ("transport", "polling")) && !pairs().any(|(k, _)| k == "sid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_packet_gets_the_edge_ping_timeout() {
        let open = br#"0{"sid":"abc","upgrades":["websocket"],"pingTimeout":1000,"pingInterval":25000,"maxPayload":1000000}"#;
        let out = with_ping_timeout(open, 20_000).expect("rewritten");
        let json: serde_json::Value = serde_json::from_slice(&out[1..]).unwrap();
        assert_eq!(out[0], b'0');
        assert_eq!(json["pingTimeout"], 20_000);
        assert_eq!(json["pingInterval"], 25_000);
        assert_eq!(json["sid"], "abc");
        // What follows the OPEN packet in a payload is kept.
        let mut payload = open.to_vec();
        payload.extend_from_slice(b"\x1e40");
        assert!(with_ping_timeout(&payload, 20_000)
            .unwrap()
            .ends_with(b"}\x1e40"));
        // Already long enough, not an OPEN packet, not JSON, no number: left alone.
        assert_eq!(with_ping_timeout(open, 500), None);
        assert_eq!(with_ping_timeout(b"42[\"x\"]", 20_000), None);
        assert_eq!(with_ping_timeout(b"0{not json", 20_000), None);
        assert_eq!(with_ping_timeout(br#"0{"pingTimeout":"1"}"#, 20_000), None);
        assert_eq!(with_ping_timeout(b"0[1000]", 20_000), None);
        assert_eq!(with_ping_timeout(b"", 20_000), None);
    }

    #[test]
    fn polling_handshakes_are_told_from_session_requests() {
        assert!(is_polling_handshake(Some("EIO=4&transport=polling&t=x")));
        assert!(!is_polling_handshake(Some(
            "EIO=4&transport=polling&t=x&sid=a"
        )));
        assert!(!is_polling_handshake(Some("EIO=4&transport=websocket")));
        assert!(!is_polling_handshake(None));
    }

    #[test]
    fn pings_are_whole_packets_only() {
        assert_eq!(pings_in_payload(b"2"), 1);
        assert_eq!(
            pings_in_payload(b"42[\"point\",{}]\x1e2\x1e42[\"eud\",{}]"),
            1
        );
        assert_eq!(pings_in_payload(b"2\x1e2"), 2);
        // The upgrade probe, a message that starts with 2, a NOOP: none is a heartbeat.
        assert_eq!(pings_in_payload(b"2probe\x1e22\x1e6"), 0);
        assert_eq!(pings_in_payload(b""), 0);
        assert_eq!(pings_in_payload(b"\x1e\x1e\x1e"), 0);
    }

    #[test]
    fn pongs_are_taken_out_of_a_payload_and_the_rest_kept_in_order() {
        assert_eq!(without_pongs(b"3"), Some((Vec::new(), 1)));
        assert_eq!(
            without_pongs(b"3\x1e40/socket.io,\x1e3"),
            Some((b"40/socket.io,".to_vec(), 2))
        );
        assert_eq!(
            without_pongs(b"42[\"a\"]\x1e3\x1e42[\"b\"]"),
            Some((b"42[\"a\"]\x1e42[\"b\"]".to_vec(), 1))
        );
        assert_eq!(without_pongs(b"3probe"), None);
        assert_eq!(without_pongs(b"42[\"3\"]"), None);
        assert_eq!(without_pongs(b""), None);
    }

    #[test]
    fn hostile_payloads_neither_panic_nor_grow() {
        let noise: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 256) as u8).collect();
        for payload in [
            &noise[..],
            b"\x1e3\x1e\x1e3\x1e",
            b"\xff\xfe3",
            &[SEPARATOR; 4096],
        ] {
            let _ = pings_in_payload(payload);
            let _ = with_ping_timeout(payload, 20_000);
            if let Some((rest, _)) = without_pongs(payload) {
                assert!(rest.len() <= payload.len());
            }
        }
    }

    #[test]
    fn only_polling_requests_with_a_sid_have_one() {
        assert_eq!(
            polling_sid(Some("EIO=4&transport=polling&t=abc&sid=Ab_12-x")),
            Some("Ab_12-x")
        );
        assert_eq!(polling_sid(Some("EIO=4&transport=polling&t=abc")), None);
        assert_eq!(polling_sid(Some("EIO=4&transport=websocket&sid=x")), None);
        assert_eq!(polling_sid(Some("sid=&transport=polling")), None);
        assert_eq!(polling_sid(None), None);
        let long = format!("transport=polling&sid={}", "a".repeat(MAX_SID + 1));
        assert_eq!(polling_sid(Some(&long)), None);
        assert_eq!(
            polling_sid(Some("&&==&transport=polling&sid=a=b")),
            Some("a=b")
        );
    }
}
