//! PROXY protocol v2 headers, as HAProxy's `send-proxy-v2-ssl-cn` writes them.
//!
//! In `proxy-protocol` mode takgate terminates the client's TLS, opens the
//! upstream TCP connection and writes one of these headers first, so the upstream
//! learns the client's address and certificate CN. The decoder exists for tests
//! and fake upstreams; takgate itself only encodes.
//!
//! Two choices differ from HAProxy on purpose:
//! - `verify` is zero only when a certificate was presented *and* verified.
//!   HAProxy leaves it at zero for a client that presented nothing, so a consumer
//!   that trusts `verify == 0` alone would trust a CN-less or forged identity.
//! - Strings that could be misread downstream are refused rather than sent or
//!   truncated: a truncated CN can name a different user, and a CN with a NUL
//!   can be cut short by a C consumer in the same way.

use std::net::{IpAddr, SocketAddr};

#[cfg(test)]
mod tests;

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2 in the high nibble, command in the low one.
const VERSION_2: u8 = 0x20;
const CMD_LOCAL: u8 = 0x00;
const CMD_PROXY: u8 = 0x01;

const FAMILY_UNSPEC: u8 = 0x0;
const FAMILY_INET: u8 = 0x1;
const FAMILY_INET6: u8 = 0x2;
const FAMILY_UNIX: u8 = 0x3;
const TRANSPORT_STREAM: u8 = 0x1;

const FAM_TCP4: u8 = (FAMILY_INET << 4) | TRANSPORT_STREAM;
const FAM_TCP6: u8 = (FAMILY_INET6 << 4) | TRANSPORT_STREAM;

const ADDR_LEN_INET: usize = 12;
const ADDR_LEN_INET6: usize = 36;
const ADDR_LEN_UNIX: usize = 216;

/// Fixed part: signature, ver/cmd, family, length.
const FIXED_LEN: usize = 16;

pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;

pub const PP2_CLIENT_SSL: u8 = 0x01;
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// The `verify` value sent for anything but a presented and verified
/// certificate. OpenSSL's `X509_V_ERR_UNSPECIFIED`: consumers only compare to 0.
pub const VERIFY_FAILED: u32 = 1;

/// Longest version, CN or cipher string the encoder sends. X.509 bounds a CN
/// at 64 characters; 1024 bytes leaves room for any multi-byte spelling while
/// keeping the whole header far below the u16 length limit.
pub const MAX_STRING_LEN: usize = 1024;

/// TLS facts about the client connection, carried in the `PP2_TYPE_SSL` TLV.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SslInfo<'a> {
    /// Protocol version, spelled as OpenSSL does (`"TLSv1.3"`).
    pub version: Option<&'a str>,
    /// Subject CN of the client certificate.
    pub cn: Option<&'a str>,
    /// Negotiated cipher suite name.
    pub cipher: Option<&'a str>,
    /// The client sent a certificate on this connection.
    pub client_cert_presented: bool,
    /// That certificate verified against the configured CAs (and CRLs).
    pub verified: bool,
}

/// Which [`SslInfo`] string a [`ProxyProtocolError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslField {
    Version,
    Cn,
    Cipher,
}

impl SslField {
    fn as_str(self) -> &'static str {
        match self {
            Self::Version => "version",
            Self::Cn => "CN",
            Self::Cipher => "cipher",
        }
    }

    fn subtype(self) -> u8 {
        match self {
            Self::Version => PP2_SUBTYPE_SSL_VERSION,
            Self::Cn => PP2_SUBTYPE_SSL_CN,
            Self::Cipher => PP2_SUBTYPE_SSL_CIPHER,
        }
    }
}

impl std::fmt::Display for SslField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("SSL {field} is {len} bytes, longer than {MAX_STRING_LEN}")]
    TooLong { field: SslField, len: usize },
    #[error("SSL {field} contains a control character")]
    ControlCharacter { field: SslField },
    /// The buffer holds a valid beginning; `needed` bytes in all make a header.
    #[error("incomplete header: {needed} bytes needed, {have} available")]
    Incomplete { needed: usize, have: usize },
    #[error("not a PROXY protocol v2 signature")]
    BadSignature,
    #[error("unsupported PROXY protocol version {0:#x}")]
    UnsupportedVersion(u8),
    #[error("unknown PROXY protocol command {0:#x}")]
    UnknownCommand(u8),
    #[error("unknown address family {0:#04x}")]
    UnknownFamily(u8),
    #[error("malformed header: {0}")]
    Malformed(&'static str),
    #[error("SSL {field} is not UTF-8")]
    InvalidUtf8 { field: SslField },
    #[error("TLV {kind:#04x} appears twice")]
    DuplicateTlv { kind: u8 },
}

/// A v2 `PROXY` header for a TCP connection from `src` to `dst`.
///
/// Mixed families are sent as TCP6 with the IPv4 side v4-mapped, as the spec
/// requires one family per header. Conversely, when both sides are v4-mapped
/// IPv6 (a dual-stack listener), they are sent as TCP4 so that consumers see
/// the client's real IPv4 address.
///
/// With `ssl` a `PP2_TYPE_SSL` TLV follows; without it the header claims a
/// plain connection.
pub fn encode_v2(
    src: SocketAddr,
    dst: SocketAddr,
    ssl: Option<&SslInfo<'_>>,
) -> Result<Vec<u8>, ProxyProtocolError> {
    let ssl_value = ssl.map(ssl_tlv_value).transpose()?;

    let (src_ip, dst_ip) = (src.ip().to_canonical(), dst.ip().to_canonical());
    let mut addresses = Vec::with_capacity(ADDR_LEN_INET6);
    let family = match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            FAM_TCP4
        }
        (s, d) => {
            addresses.extend_from_slice(&as_v6(s));
            addresses.extend_from_slice(&as_v6(d));
            FAM_TCP6
        }
    };
    addresses.extend_from_slice(&src.port().to_be_bytes());
    addresses.extend_from_slice(&dst.port().to_be_bytes());

    let tlv_len = ssl_value.as_ref().map_or(0, |v| 3 + v.len());
    let body_len = addresses.len() + tlv_len;
    // Every string is bounded by MAX_STRING_LEN, so the body stays near 3 KiB.
    let body_len_u16 =
        u16::try_from(body_len).map_err(|_| ProxyProtocolError::Malformed("header too long"))?;

    let mut out = Vec::with_capacity(FIXED_LEN + body_len);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 | CMD_PROXY);
    out.push(family);
    out.extend_from_slice(&body_len_u16.to_be_bytes());
    out.extend_from_slice(&addresses);
    if let Some(value) = ssl_value {
        push_tlv(&mut out, PP2_TYPE_SSL, &value)?;
    }
    Ok(out)
}

fn as_v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ssl_tlv_value(ssl: &SslInfo<'_>) -> Result<Vec<u8>, ProxyProtocolError> {
    let mut client = PP2_CLIENT_SSL;
    if ssl.client_cert_presented {
        // The session's certificate is this connection's: takgate does not
        // renegotiate, so CONN and SESS always agree.
        client |= PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS;
    }
    let verify = if ssl.client_cert_presented && ssl.verified {
        0
    } else {
        VERIFY_FAILED
    };

    let mut value = Vec::with_capacity(5 + 3 * 3 + 64);
    value.push(client);
    value.extend_from_slice(&verify.to_be_bytes());
    for (field, s) in [
        (SslField::Version, ssl.version),
        (SslField::Cn, ssl.cn),
        (SslField::Cipher, ssl.cipher),
    ] {
        if let Some(s) = s {
            check_string(field, s)?;
            push_tlv(&mut value, field.subtype(), s.as_bytes())?;
        }
    }
    Ok(value)
}

fn check_string(field: SslField, s: &str) -> Result<(), ProxyProtocolError> {
    if s.len() > MAX_STRING_LEN {
        return Err(ProxyProtocolError::TooLong {
            field,
            len: s.len(),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(ProxyProtocolError::ControlCharacter { field });
    }
    Ok(())
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) -> Result<(), ProxyProtocolError> {
    let len =
        u16::try_from(value.len()).map_err(|_| ProxyProtocolError::Malformed("TLV too long"))?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// The command of a decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The connection was made by the proxy itself (health checks); no addresses.
    Local,
    Proxy,
}

/// A decoded v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub command: Command,
    /// Source and destination, for a `PROXY` header of the INET or INET6
    /// family; `None` for `LOCAL`, UNSPEC and UNIX.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    pub ssl: Option<DecodedSsl>,
    /// Bytes the header occupies; the proxied stream starts right after.
    pub header_len: usize,
}

/// The `PP2_TYPE_SSL` TLV as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSsl {
    pub client: u8,
    pub verify: u32,
    pub version: Option<String>,
    pub cn: Option<String>,
    pub cipher: Option<String>,
}

impl DecodedSsl {
    /// Whether the CN may be trusted: a certificate was presented *and*
    /// verified. Checking `verify == 0` alone is the HAProxy caveat.
    pub fn cert_verified(&self) -> bool {
        self.client & PP2_CLIENT_SSL != 0
            && self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) != 0
            && self.verify == 0
    }

    /// The CN, only when [`cert_verified`](Self::cert_verified).
    pub fn verified_cn(&self) -> Option<&str> {
        self.cn.as_deref().filter(|_| self.cert_verified())
    }
}

/// Decodes the v2 header at the start of `buf`; bytes after it are ignored.
///
/// A reader can call this on what it has so far: [`ProxyProtocolError::Incomplete`]
/// says how many bytes the whole header needs once the fixed part is in.
/// Duplicate SSL TLVs or sub-TLVs are refused rather than resolved, since the
/// two copies could name different users.
pub fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyProtocolError> {
    let sig_part = buf.len().min(SIGNATURE.len());
    if buf[..sig_part] != SIGNATURE[..sig_part] {
        return Err(ProxyProtocolError::BadSignature);
    }
    let Some(fixed) = buf.get(..FIXED_LEN) else {
        return Err(ProxyProtocolError::Incomplete {
            needed: FIXED_LEN,
            have: buf.len(),
        });
    };
    let ver_cmd = fixed[12];
    if ver_cmd & 0xF0 != VERSION_2 {
        return Err(ProxyProtocolError::UnsupportedVersion(ver_cmd >> 4));
    }
    let command = match ver_cmd & 0x0F {
        CMD_LOCAL => Command::Local,
        CMD_PROXY => Command::Proxy,
        other => return Err(ProxyProtocolError::UnknownCommand(other)),
    };
    let fam = fixed[13];
    let body_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let header_len = FIXED_LEN + body_len;
    let Some(body) = buf.get(FIXED_LEN..header_len) else {
        return Err(ProxyProtocolError::Incomplete {
            needed: header_len,
            have: buf.len(),
        });
    };

    let addr_len = match fam >> 4 {
        FAMILY_UNSPEC => 0,
        FAMILY_INET => ADDR_LEN_INET,
        FAMILY_INET6 => ADDR_LEN_INET6,
        FAMILY_UNIX => ADDR_LEN_UNIX,
        _ => return Err(ProxyProtocolError::UnknownFamily(fam)),
    };
    if fam & 0x0F > 0x2 {
        return Err(ProxyProtocolError::UnknownFamily(fam));
    }
    let (addr, tlvs) = body
        .split_at_checked(addr_len)
        .ok_or(ProxyProtocolError::Malformed(
            "address block longer than header",
        ))?;

    // LOCAL headers may carry addresses; the spec says to ignore them.
    let addresses = match command {
        Command::Local => None,
        Command::Proxy => parse_addresses(fam >> 4, addr),
    };

    let mut ssl = None;
    for tlv in Tlvs(tlvs) {
        let (kind, value) = tlv?;
        if kind == PP2_TYPE_SSL {
            if ssl.is_some() {
                return Err(ProxyProtocolError::DuplicateTlv { kind });
            }
            ssl = Some(parse_ssl(value)?);
        }
    }

    Ok(Decoded {
        command,
        addresses,
        ssl,
        header_len,
    })
}

fn parse_addresses(family: u8, addr: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    match family {
        FAMILY_INET => {
            let a: &[u8; ADDR_LEN_INET] = addr.try_into().ok()?;
            let src = [a[0], a[1], a[2], a[3]];
            let dst = [a[4], a[5], a[6], a[7]];
            Some((
                SocketAddr::from((src, u16::from_be_bytes([a[8], a[9]]))),
                SocketAddr::from((dst, u16::from_be_bytes([a[10], a[11]]))),
            ))
        }
        FAMILY_INET6 => {
            let a: &[u8; ADDR_LEN_INET6] = addr.try_into().ok()?;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            dst.copy_from_slice(&a[16..32]);
            Some((
                SocketAddr::from((src, u16::from_be_bytes([a[32], a[33]]))),
                SocketAddr::from((dst, u16::from_be_bytes([a[34], a[35]]))),
            ))
        }
        _ => None,
    }
}

fn parse_ssl(value: &[u8]) -> Result<DecodedSsl, ProxyProtocolError> {
    let (head, sub) = value
        .split_at_checked(5)
        .ok_or(ProxyProtocolError::Malformed(
            "SSL TLV shorter than 5 bytes",
        ))?;
    let mut ssl = DecodedSsl {
        client: head[0],
        verify: u32::from_be_bytes([head[1], head[2], head[3], head[4]]),
        version: None,
        cn: None,
        cipher: None,
    };
    for tlv in Tlvs(sub) {
        let (kind, value) = tlv?;
        let (field, slot) = match kind {
            PP2_SUBTYPE_SSL_VERSION => (SslField::Version, &mut ssl.version),
            PP2_SUBTYPE_SSL_CN => (SslField::Cn, &mut ssl.cn),
            PP2_SUBTYPE_SSL_CIPHER => (SslField::Cipher, &mut ssl.cipher),
            _ => continue,
        };
        if slot.is_some() {
            return Err(ProxyProtocolError::DuplicateTlv { kind });
        }
        let s =
            std::str::from_utf8(value).map_err(|_| ProxyProtocolError::InvalidUtf8 { field })?;
        *slot = Some(s.to_owned());
    }
    Ok(ssl)
}

/// Type-length-value records filling a byte slice exactly.
struct Tlvs<'a>(&'a [u8]);

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<(u8, &'a [u8]), ProxyProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = match *self.0 {
            [kind, hi, lo, ref rest @ ..] => {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                match rest.split_at_checked(len) {
                    Some((value, after)) => {
                        self.0 = after;
                        Ok((kind, value))
                    }
                    None => Err(ProxyProtocolError::Malformed(
                        "TLV longer than its container",
                    )),
                }
            }
            _ => Err(ProxyProtocolError::Malformed("truncated TLV")),
        };
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}
