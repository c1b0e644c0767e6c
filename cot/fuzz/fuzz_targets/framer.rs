//! Feeds arbitrary bytes to the framer in arbitrary chunks and checks what must always hold.
//!
//! Input layout: byte 0 picks the policy (bit 0), the mode (bit 1, protobuf) and the trusted
//! framer of the OTS→client direction (bit 2); byte 1 the
//! frame limit (0..=63: that many bytes, 64..=127: multiples of 64, above: the 1 MiB default);
//! byte 2 seeds the chunk sizes. The rest is the stream.

#![no_main]

use cot::framer::{
    Frame, FrameErrorKind, FrameKind, Framer, FramerConfig, MalformedPolicy, DEFAULT_MAX_FRAME,
    RESYNC_HOLD,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Frame(Vec<u8>, FrameKind, &'static str),
    Error(FrameErrorKind, u64, bool),
}

struct Setup {
    config: FramerConfig,
    proto: bool,
    trusted: bool,
}

impl Setup {
    fn framer(&self) -> Framer {
        let mut f = if self.trusted {
            Framer::trusted(self.config)
        } else {
            Framer::new(self.config)
        };
        if self.proto {
            f.switch_to_protobuf();
        }
        f
    }
}

/// Runs the framer over `chunks` as the relay would, checking the memory bound on the way.
fn run<'a>(setup: &Setup, chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Outcome>, Vec<Frame>) {
    let mut f = setup.framer();
    let mut out = Vec::new();
    let mut frames = Vec::new();
    let bound = setup.config.max_frame.max(RESYNC_HOLD);
    'feed: for chunk in chunks {
        f.push(chunk);
        assert!(f.buffered_len() <= bound + chunk.len());
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!frame.bytes().is_empty());
                    assert!(frame.bytes().len() <= setup.config.max_frame);
                    out.push(Outcome::Frame(
                        frame.bytes().to_vec(),
                        frame.kind(),
                        frame.class().as_str(),
                    ));
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Outcome::Error(e.kind(), e.offset(), e.is_terminal()));
                    if e.is_terminal() {
                        break 'feed;
                    }
                }
            }
        }
        assert!(f.buffered_len() <= bound);
    }
    (out, frames)
}

fuzz_target!(|data: &[u8]| {
    let [flags, limit, seed, stream @ ..] = data else {
        return;
    };
    let max_frame = match *limit {
        l @ 0..=63 => usize::from(l),
        l @ 64..=127 => usize::from(l - 63) * 64,
        _ => DEFAULT_MAX_FRAME,
    };
    let setup = Setup {
        config: FramerConfig {
            max_frame,
            malformed: if flags & 1 == 0 {
                MalformedPolicy::Close
            } else {
                MalformedPolicy::Drop
            },
        },
        proto: flags & 2 != 0,
        trusted: flags & 4 != 0,
    };

    // Chunk sizes from 0 (an empty read) to `span`, varied along the stream.
    let span = usize::from(seed % 64) + 1;
    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut i = usize::from(*seed);
    while !rest.is_empty() {
        i = i.wrapping_mul(31).wrapping_add(7);
        let (head, tail) = rest.split_at((i % (span + 1)).min(rest.len()));
        chunks.push(head);
        rest = tail;
    }

    let (whole, frames) = run(&setup, std::iter::once(stream));
    let (chunked, _) = run(&setup, chunks.iter().copied());
    assert_eq!(whole, chunked, "chunking changed the outcome");

    // A frame read back on its own is itself again.
    for frame in frames {
        let (again, _) = run(&setup, std::iter::once(frame.bytes().as_ref()));
        let expected = Outcome::Frame(frame.bytes().to_vec(), frame.kind(), frame.class().as_str());
        assert_eq!(again, [expected]);
    }
});
