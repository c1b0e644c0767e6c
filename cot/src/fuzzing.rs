//! The harnesses of `cot/fuzz` (see its README): each takes the fuzzer's bytes, runs them through
//! the framer and asserts what must hold for every input, not just "no panic". They live in the
//! library so that the committed seed corpora also run under `cargo nextest`.

use std::path::Path;

use crate::framer::{
    Frame, FrameErrorKind, FrameKind, Framer, FramerConfig, MalformedPolicy, Negotiation,
    DEFAULT_MAX_FRAME, RESYNC_HOLD,
};

#[cfg(test)]
mod tests;

/// The committed seeds (`seed-*`) of one target's corpus, `corpus/<target>` under a fuzz crate's
/// folder, sorted by name: for running them as unit tests. Shared with `takgate::fuzzing`.
pub fn seeds(fuzz_dir: &Path, target: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fuzz_dir.join("corpus").join(target))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("seed-") {
            out.push((name, std::fs::read(entry.path())?));
        }
    }
    out.sort();
    Ok(out)
}

/// The frame limit byte `b` of an input chooses: 0–63 that many bytes, 64–127 multiples of 64,
/// above that the 1 MiB default.
fn max_frame(b: u8) -> usize {
    match b {
        l @ 0..=63 => usize::from(l),
        l @ 64..=127 => usize::from(l - 63) * 64,
        _ => DEFAULT_MAX_FRAME,
    }
}

/// `stream` cut into chunks of 0 (an empty read) to `seed % 64 + 1` bytes, varied along it.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let span = usize::from(seed % 64) + 1;
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = usize::from(seed);
    while !rest.is_empty() {
        i = i.wrapping_mul(31).wrapping_add(7);
        let (head, tail) = rest.split_at((i % (span + 1)).min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

// === framer ===

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

    /// Runs the framer over `chunks` as the relay would, checking the memory bound on the way.
    fn run<'a>(&self, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Outcome>, Vec<Frame>) {
        let mut f = self.framer();
        let mut out = Vec::new();
        let mut frames = Vec::new();
        let bound = self.config.max_frame.max(RESYNC_HOLD);
        'feed: for chunk in chunks {
            f.push(chunk);
            assert!(f.buffered_len() <= bound + chunk.len());
            loop {
                match f.next_frame() {
                    Ok(Some(frame)) => {
                        assert!(!frame.bytes().is_empty());
                        assert!(frame.bytes().len() <= self.config.max_frame);
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
}

/// Arbitrary bytes to one framer in arbitrary chunks. Byte 0 picks the policy (bit 0 set: Drop),
/// the mode (bit 1 set: protobuf) and the framer (bit 2 set: the trusted framer of the
/// OTS-to-client direction); byte 1 the frame limit; byte 2 the chunk sizes. The rest is the
/// stream. Checks: no panic; the framer never holds more than `max(max_frame, RESYNC_HOLD)`
/// bytes after a drain, nor that plus one chunk after a push; the frames and errors are the
/// same whole and chunked; every frame is at most `max_frame` bytes and reads back on its own
/// as exactly itself.
pub fn framer(data: &[u8]) {
    let [flags, limit, seed, stream @ ..] = data else {
        return;
    };
    let setup = Setup {
        config: FramerConfig {
            max_frame: max_frame(*limit),
            malformed: if flags & 1 == 0 {
                MalformedPolicy::Close
            } else {
                MalformedPolicy::Drop
            },
        },
        proto: flags & 2 != 0,
        trusted: flags & 4 != 0,
    };

    let (whole, frames) = setup.run([stream]);
    let (chunked, _) = setup.run(chunks(stream, *seed));
    assert_eq!(whole, chunked, "chunking changed the outcome");

    // A frame read back on its own is itself again.
    for frame in frames {
        let (again, _) = setup.run([frame.bytes().as_ref()]);
        let expected = Outcome::Frame(frame.bytes().to_vec(), frame.kind(), frame.class().as_str());
        assert_eq!(again, [expected]);
    }
}

// === framer_differential ===

/// A frame as the relay reads it: everything it acts on.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    bytes: Vec<u8>,
    kind: FrameKind,
    class: &'static str,
    ping: bool,
    negotiation: Option<Negotiation>,
    uid: Option<String>,
    /// Stream offset just past the frame.
    end: u64,
}

/// What one framer made of a whole stream.
#[derive(Debug)]
struct Framing {
    frames: Vec<Read>,
    /// The terminal error, if any, and its stream offset.
    refused: Option<(FrameErrorKind, u64)>,
    /// Stream offset up to which the framer had accepted the bytes when the last chunk before
    /// its refusal (or the last chunk) was drained: the end of its last frame and of the
    /// complete tokens of the pending one. Exact when fed one byte at a time.
    accepted: u64,
}

/// Runs a framer over `chunks` under the Close policy, switching to protobuf after a granted
/// negotiation as the relay does.
fn framing<'a>(mut f: Framer, chunks: impl IntoIterator<Item = &'a [u8]>) -> Framing {
    let mut pushed = 0u64;
    let mut frames = Vec::new();
    let mut accepted = 0;
    for chunk in chunks {
        f.push(chunk);
        pushed += chunk.len() as u64;
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => {
                    if frame.negotiation() == Some(Negotiation::Response { accepted: true }) {
                        f.switch_to_protobuf();
                    }
                    frames.push(Read {
                        bytes: frame.bytes().to_vec(),
                        kind: frame.kind(),
                        class: frame.class().as_str(),
                        ping: frame.is_ping(),
                        negotiation: frame.negotiation(),
                        uid: frame.uid().map(str::to_owned),
                        end: pushed - f.buffered_len() as u64,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    return Framing {
                        frames,
                        refused: Some((e.kind(), e.offset())),
                        accepted,
                    }
                }
            }
        }
        accepted = pushed - f.buffered_len() as u64 + f.parsed_len() as u64;
    }
    Framing {
        frames,
        refused: None,
        accepted,
    }
}

/// The trusted framer (`Framer::trusted`, OTS to client) against the validating one
/// (`Framer::new`) on the same bytes in the same chunks, both under the Close policy. Byte 0
/// picks the frame limit, byte 1 the chunk sizes; the rest is the stream. With `e` the offset
/// up to which the validating framer accepts the stream (the end of its last frame and of the
/// complete tokens of the one pending, before the token it refuses if it refuses one; a token
/// still arriving may yet be refused, and a longer input that completes it is the fuzzer's to
/// find):
///
/// 1. every frame the validating framer accepts, the trusted framer yields identically (bytes,
///    kind, class, ping, negotiation, uid, end offset), in the same order, and so switches to
///    protobuf at the same point;
/// 2. every other trusted frame ends after `e`: a trusted frame boundary at or before `e` where
///    the validating framer has none is a smuggling bug, a message cut short or one forged out
///    of another's content;
/// 3. the trusted framer refuses nothing the validating framer accepts: a stream the validating
///    framer does not refuse, it refuses only at or after `e`.
///
/// Past `e` the trusted framer may go on delimiting where the validating one has stopped: that
/// is what it is for (OTS's own output is relayed unvalidated), and what it does there is
/// bounded by `max_frame` and checked by the `framer` harness.
pub fn framer_differential(data: &[u8]) {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let config = FramerConfig {
        max_frame: max_frame(*limit),
        malformed: MalformedPolicy::Close,
    };
    let pieces = chunks(stream, *seed);
    let full = framing(Framer::new(config), pieces.iter().copied());
    let fast = framing(Framer::trusted(config), pieces.iter().copied());
    // Fed a byte at a time, the validating framer shows where the token it refuses began.
    let e = framing(Framer::new(config), stream.chunks(1)).accepted;

    let agreed = full.frames.len();
    assert!(
        fast.frames.len() >= agreed,
        "trusted framer stopped after {} of the {agreed} accepted frames: {:?}",
        fast.frames.len(),
        fast.refused,
    );
    for (i, (a, b)) in full.frames.iter().zip(&fast.frames).enumerate() {
        assert_eq!(a, b, "frame {i} differs");
    }
    if let Some(extra) = fast.frames.get(agreed) {
        assert!(
            extra.end > e,
            "trusted frame ends at {} inside what the validating framer accepted (accepted up to \
             {e}, refused: {:?}): {:?}",
            extra.end,
            full.refused,
            String::from_utf8_lossy(&extra.bytes),
        );
    }
    // Refusing the frame the validating framer refuses is agreement, whatever the kind and
    // offset (a frame too large is refused at its start); refusing what it took without
    // refusal must be about bytes it has not accepted.
    if let (Some((kind, at)), None) = (fast.refused, full.refused) {
        assert!(
            at >= e,
            "trusted framer refused ({kind} at {at}) what the validating one accepted (up to {e})",
        );
    }
}
