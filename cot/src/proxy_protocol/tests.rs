use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use proptest::prelude::*;

use super::*;

/// Built by hand from proxy-protocol.txt §2.2, not from the encoder:
/// 192.0.2.1:51234 → 198.51.100.7:8088, TLSv1.3, CN "alice", a verified cert.
#[rustfmt::skip]
const KNOWN: &[u8] = &[
    // signature
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    0x21,       // version 2, PROXY
    0x11,       // AF_INET, STREAM
    0x00, 0x3F, // 63 = 12 address bytes + 51 of SSL TLV
    192, 0, 2, 1,       // src
    198, 51, 100, 7,    // dst
    0xC8, 0x22,         // 51234
    0x1F, 0x98,         // 8088
    0x20, 0x00, 0x30,   // PP2_TYPE_SSL, 48 bytes
    0x07,               // SSL | CERT_CONN | CERT_SESS
    0x00, 0x00, 0x00, 0x00, // verify: ok
    0x21, 0x00, 0x07, b'T', b'L', b'S', b'v', b'1', b'.', b'3',
    0x22, 0x00, 0x05, b'a', b'l', b'i', b'c', b'e',
    0x23, 0x00, 0x16,
    b'T', b'L', b'S', b'_', b'A', b'E', b'S', b'_', b'1', b'2', b'8',
    b'_', b'G', b'C', b'M', b'_', b'S', b'H', b'A', b'2', b'5', b'6',
];

fn alice() -> SslInfo<'static> {
    SslInfo {
        version: Some("TLSv1.3"),
        cn: Some("alice"),
        cipher: Some("TLS_AES_128_GCM_SHA256"),
        client_cert_presented: true,
        verified: true,
    }
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((a, port))
}

#[test]
fn encodes_the_hand_built_vector() {
    let got = encode_v2(
        v4([192, 0, 2, 1], 51234),
        v4([198, 51, 100, 7], 8088),
        Some(&alice()),
    )
    .unwrap();
    assert_eq!(got, KNOWN);
}

#[test]
fn decodes_the_hand_built_vector() {
    let mut buf = KNOWN.to_vec();
    buf.extend_from_slice(b"<event/>");
    let d = decode_v2(&buf).unwrap();
    assert_eq!(d.command, Command::Proxy);
    assert_eq!(d.header_len, KNOWN.len());
    assert_eq!(
        d.addresses,
        Some((v4([192, 0, 2, 1], 51234), v4([198, 51, 100, 7], 8088)))
    );
    let ssl = d.ssl.unwrap();
    assert_eq!(ssl.client, 0x07);
    assert_eq!(ssl.verify, 0);
    assert_eq!(ssl.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(ssl.verified_cn(), Some("alice"));
    assert_eq!(ssl.cipher.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
}

#[test]
fn tcp6_layout_and_mixed_families() {
    let src = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 1));
    let dst = v4([10, 0, 0, 1], 2);
    let got = encode_v2(src, dst, None).unwrap();
    assert_eq!(got[13], 0x21);
    assert_eq!(&got[14..16], &[0, 36]);
    assert_eq!(got.len(), 16 + 36);
    assert_eq!(&got[16..32], &src_octets(src));
    assert_eq!(
        &got[32..48],
        &Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets()
    );
    assert_eq!(&got[48..52], &[0, 1, 0, 2]);
}

fn src_octets(a: SocketAddr) -> [u8; 16] {
    match a.ip() {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

#[test]
fn both_v4_mapped_are_sent_as_tcp4() {
    let mapped = |ip: [u8; 4], port| {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::from(ip).to_ipv6_mapped(),
            port,
            0,
            0,
        ))
    };
    let got = encode_v2(mapped([192, 0, 2, 1], 5), mapped([192, 0, 2, 2], 6), None).unwrap();
    assert_eq!(got[13], 0x11);
    let d = decode_v2(&got).unwrap();
    assert_eq!(
        d.addresses,
        Some((v4([192, 0, 2, 1], 5), v4([192, 0, 2, 2], 6)))
    );
}

#[test]
fn client_and_verify_bits() {
    let cases = [
        // presented, verified, client byte, verify
        (false, false, PP2_CLIENT_SSL, VERIFY_FAILED),
        // Verified without a certificate is contradictory: not trusted.
        (false, true, PP2_CLIENT_SSL, VERIFY_FAILED),
        (true, false, 0x07, VERIFY_FAILED),
        (true, true, 0x07, 0),
    ];
    for (presented, verified, client, verify) in cases {
        let ssl = SslInfo {
            client_cert_presented: presented,
            verified,
            ..alice()
        };
        let enc = encode_v2(v4([1, 2, 3, 4], 1), v4([5, 6, 7, 8], 2), Some(&ssl)).unwrap();
        let d = decode_v2(&enc).unwrap().ssl.unwrap();
        assert_eq!(
            (d.client, d.verify),
            (client, verify),
            "{presented} {verified}"
        );
        assert_eq!(d.cert_verified(), presented && verified);
    }
}

#[test]
fn haproxy_zero_verify_without_cert_is_not_trusted() {
    // What HAProxy sends for a client without a certificate: verify 0, no CERT bits.
    let mut buf = SIGNATURE.to_vec();
    buf.extend_from_slice(&[0x21, 0x11, 0x00, 12 + 3 + 5 + 3 + 3]);
    buf.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2, 0, 1, 0, 2]);
    buf.extend_from_slice(&[0x20, 0x00, 5 + 3 + 3, 0x01, 0, 0, 0, 0]);
    buf.extend_from_slice(&[0x22, 0x00, 0x03, b'b', b'o', b'b']);
    let ssl = decode_v2(&buf).unwrap().ssl.unwrap();
    assert_eq!(ssl.cn.as_deref(), Some("bob"));
    assert!(!ssl.cert_verified());
    assert_eq!(ssl.verified_cn(), None);
}

#[test]
fn no_ssl_means_no_tlv() {
    let enc = encode_v2(v4([1, 2, 3, 4], 1), v4([5, 6, 7, 8], 2), None).unwrap();
    assert_eq!(enc.len(), 28);
    assert_eq!(decode_v2(&enc).unwrap().ssl, None);
}

#[test]
fn refuses_long_or_control_strings() {
    let long = "a".repeat(MAX_STRING_LEN + 1);
    let exact = "a".repeat(MAX_STRING_LEN);
    let a = v4([1, 2, 3, 4], 1);
    let with_cn = |cn| SslInfo {
        cn: Some(cn),
        ..alice()
    };
    assert_eq!(
        encode_v2(a, a, Some(&with_cn(&long))),
        Err(ProxyProtocolError::TooLong {
            field: SslField::Cn,
            len: MAX_STRING_LEN + 1
        })
    );
    let enc = encode_v2(a, a, Some(&with_cn(&exact))).unwrap();
    assert_eq!(
        decode_v2(&enc).unwrap().ssl.unwrap().cn,
        Some(exact.clone())
    );
    for bad in ["ali\0ce", "alice\n", "a\u{7f}", "a\u{85}"] {
        assert_eq!(
            encode_v2(a, a, Some(&with_cn(bad))),
            Err(ProxyProtocolError::ControlCharacter {
                field: SslField::Cn
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn decode_errors() {
    assert_eq!(
        decode_v2(b""),
        Err(ProxyProtocolError::Incomplete {
            needed: 16,
            have: 0
        })
    );
    assert_eq!(
        decode_v2(&KNOWN[..5]),
        Err(ProxyProtocolError::Incomplete {
            needed: 16,
            have: 5
        })
    );
    assert_eq!(
        decode_v2(&KNOWN[..20]),
        Err(ProxyProtocolError::Incomplete {
            needed: KNOWN.len(),
            have: 20
        })
    );
    assert_eq!(
        decode_v2(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        Err(ProxyProtocolError::BadSignature)
    );

    let with = |at: usize, byte: u8| {
        let mut b = KNOWN.to_vec();
        b[at] = byte;
        decode_v2(&b)
    };
    assert_eq!(
        with(12, 0x11),
        Err(ProxyProtocolError::UnsupportedVersion(1))
    );
    assert_eq!(with(12, 0x22), Err(ProxyProtocolError::UnknownCommand(2)));
    assert_eq!(with(13, 0x41), Err(ProxyProtocolError::UnknownFamily(0x41)));
    // TCP6 needs 36 address bytes; the header has 63 in all, so the TLV
    // area starts mid-way through the old one and must not parse.
    assert!(with(13, 0x21).is_err());
    // SSL TLV length one byte too long for the header.
    assert_eq!(
        with(30, 0x31),
        Err(ProxyProtocolError::Malformed(
            "TLV longer than its container"
        ))
    );
    // CN not UTF-8.
    assert_eq!(
        with(51, 0xFF),
        Err(ProxyProtocolError::InvalidUtf8 {
            field: SslField::Cn
        })
    );
}

#[test]
fn duplicate_cn_is_refused() {
    let mut buf = SIGNATURE.to_vec();
    let tlv: &[u8] = &[
        0x20, 0x00, 17, 0x07, 0, 0, 0, 0, 0x22, 0, 3, b'b', b'o', b'b', 0x22, 0, 3, b'e', b'v',
        b'e',
    ];
    let len = 12 + tlv.len();
    buf.extend_from_slice(&[0x21, 0x11, 0, len as u8]);
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(tlv);
    assert_eq!(
        decode_v2(&buf),
        Err(ProxyProtocolError::DuplicateTlv { kind: 0x22 })
    );
}

#[test]
fn local_command_has_no_addresses() {
    let mut buf = SIGNATURE.to_vec();
    buf.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let d = decode_v2(&buf).unwrap();
    assert_eq!(d.command, Command::Local);
    assert_eq!(d.addresses, None);
    assert_eq!(d.header_len, 16);
}

#[test]
fn unknown_tlvs_are_skipped() {
    let mut enc = encode_v2(v4([1, 2, 3, 4], 1), v4([5, 6, 7, 8], 2), Some(&alice())).unwrap();
    // A NOOP TLV of 2 bytes after the SSL TLV.
    enc.extend_from_slice(&[0x04, 0x00, 0x02, 0xAA, 0xBB]);
    let len = u16::from_be_bytes([enc[14], enc[15]]) + 5;
    enc[14..16].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        decode_v2(&enc).unwrap().ssl.unwrap().cn.as_deref(),
        Some("alice")
    );
}

/// What the decoder should return for addresses the encoder was given.
fn on_the_wire(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (s, d) = (src.ip().to_canonical(), dst.ip().to_canonical());
    match (s, d) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ((s, src.port()).into(), (d, dst.port()).into()),
        _ => {
            let six = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            ((six(s), src.port()).into(), (six(d), dst.port()).into())
        }
    }
}

fn ssl_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[^\\p{Cc}]{0,80}")
}

proptest! {
    #[test]
    fn round_trip(
        src in any::<SocketAddr>(),
        dst in any::<SocketAddr>(),
        ssl in prop::option::of((ssl_string(), ssl_string(), ssl_string(), any::<bool>(), any::<bool>())),
    ) {
        let info = ssl.as_ref().map(|(version, cn, cipher, presented, verified)| SslInfo {
            version: version.as_deref(),
            cn: cn.as_deref(),
            cipher: cipher.as_deref(),
            client_cert_presented: *presented,
            verified: *verified,
        });
        let enc = encode_v2(src, dst, info.as_ref()).unwrap();
        let d = decode_v2(&enc).unwrap();
        prop_assert_eq!(d.header_len, enc.len());
        prop_assert_eq!(d.command, Command::Proxy);
        prop_assert_eq!(d.addresses, Some(on_the_wire(src, dst)));
        match (info, d.ssl) {
            (None, None) => {}
            (Some(i), Some(s)) => {
                prop_assert_eq!(s.version.as_deref(), i.version);
                prop_assert_eq!(s.cn.as_deref(), i.cn);
                prop_assert_eq!(s.cipher.as_deref(), i.cipher);
                prop_assert_eq!(s.cert_verified(), i.client_cert_presented && i.verified);
            }
            (i, s) => prop_assert!(false, "ssl mismatch: {:?} vs {:?}", i, s),
        }
    }

    #[test]
    fn encode_refuses_only_what_is_documented(cn in ".{0,40}") {
        let a = v4([1, 2, 3, 4], 1);
        let info = SslInfo { cn: Some(&cn), ..alice() };
        match encode_v2(a, a, Some(&info)) {
            Ok(enc) => prop_assert_eq!(decode_v2(&enc).unwrap().ssl.unwrap().cn, Some(cn)),
            Err(e) => {
                prop_assert!(cn.chars().any(char::is_control));
                prop_assert_eq!(e, ProxyProtocolError::ControlCharacter { field: SslField::Cn });
            }
        }
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_v2(&bytes);
    }

    #[test]
    fn decode_never_panics_past_the_signature(
        head in prop::collection::vec(any::<u8>(), 4..4+1),
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut buf = SIGNATURE.to_vec();
        buf.extend_from_slice(&head);
        // Often make the length match what follows, to reach the TLV parser.
        if head[0] & 1 == 0 {
            let len = u16::try_from(body.len()).unwrap();
            buf[14..16].copy_from_slice(&len.to_be_bytes());
        }
        buf.extend_from_slice(&body);
        let _ = decode_v2(&buf);
    }

    #[test]
    fn decode_never_panics_on_mutated_headers(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = KNOWN.to_vec();
        for (at, byte) in flips {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        buf.truncate(cut.index(buf.len() + 1));
        let _ = decode_v2(&buf);
    }
}
