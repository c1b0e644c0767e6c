//! TAK protocol version 1 (streaming): `0xbf`, a base-128 varint length, a protobuf payload.

use super::error::{Fault, Reason};
use super::{Frame, Framer};

/// First byte of every TAK protocol version 1 frame.
pub const PROTO_MAGIC: u8 = 0xbf;

const MAX_VARINT_LEN: usize = 10;

impl Framer {
    pub(super) fn next_proto(&mut self) -> Result<Option<Frame>, Fault> {
        if self.resync {
            match memchr::memchr(PROTO_MAGIC, &self.buf) {
                Some(at) => {
                    self.discard(at);
                    self.resync = false;
                }
                None => {
                    self.discard(self.buf.len());
                    return Ok(None);
                }
            }
        }
        let Some(&magic) = self.buf.first() else {
            return Ok(None);
        };
        if magic != PROTO_MAGIC {
            return Err(Fault::new(0, Reason::BadMagic(magic)));
        }
        let mut len: u64 = 0;
        let mut header = None;
        for i in 0..MAX_VARINT_LEN {
            // A header still growing cannot fit either; deciding before looking at the byte
            // keeps the outcome independent of how the stream was chunked.
            if i + 2 > self.max_frame {
                let limit = self.max_frame;
                return Err(Fault::new(0, Reason::TooLarge { limit }));
            }
            let Some(&b) = self.buf.get(1 + i) else {
                return Ok(None);
            };
            // The tenth byte holds bit 63 only; anything more overflows u64 or goes on.
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(Fault::new(0, Reason::BadVarint));
            }
            let bits = u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
            len |= bits;
            if b & 0x80 == 0 {
                header = Some(2 + i);
                break;
            }
        }
        let Some(header) = header else {
            return Err(Fault::new(0, Reason::BadVarint));
        };
        let total = (header as u64)
            .checked_add(len)
            .and_then(|t| usize::try_from(t).ok())
            .filter(|&t| t <= self.max_frame);
        match total {
            None => {
                let limit = self.max_frame;
                Err(Fault::new(0, Reason::TooLarge { limit }))
            }
            Some(total) if self.buf.len() < total => Ok(None),
            Some(total) => Ok(Some(Frame::proto(self.take(total)))),
        }
    }
}
