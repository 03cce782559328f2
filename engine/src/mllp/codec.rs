//! The MLLP codec. Decoding never allocates until a whole frame is there, skips
//! and counts bytes outside frames, and caps the frame size: an oversized frame
//! is drained and handed up as [`MllpFrame::Oversized`] with its first bytes,
//! so the caller can still read MSH and answer it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

const VT: u8 = 0x0b;
const FS: u8 = 0x1c;
const CR: u8 = 0x0d;

/// Default largest frame accepted: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// How many bytes of an oversized frame are kept so its MSH can be read.
const OVERSIZED_HEAD: usize = 4096;

/// One item read off an MLLP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MllpFrame {
    /// A whole message (without the framing bytes).
    Message(Bytes),
    /// A frame longer than the limit: its first bytes and its full length.
    Oversized { head: Bytes, len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `<VT>`.
    Seeking,
    /// Inside a frame; `scanned` bytes after `<VT>` are known to hold no end marker.
    InFrame { scanned: usize },
    /// Draining an oversized frame; `len` bytes seen so far.
    Draining { len: usize },
}

/// MLLP framing for `tokio_util::codec::Framed`.
#[derive(Debug)]
pub struct MllpCodec {
    max_frame: usize,
    lenient: bool,
    state: State,
    head: BytesMut,
    skipped: u64,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME, false)
    }
}

impl MllpCodec {
    /// A codec with a frame size limit; `lenient` accepts `<FS>` without `<CR>`.
    pub fn new(max_frame: usize, lenient: bool) -> Self {
        MllpCodec {
            max_frame,
            lenient,
            state: State::Seeking,
            head: BytesMut::new(),
            skipped: 0,
        }
    }

    /// Bytes skipped outside frames so far (junk before `<VT>`).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Finds the end marker in `buf[from..]`. Returns (index of FS, marker length),
    /// or None when more bytes are needed.
    fn find_end(&self, buf: &[u8], from: usize) -> Option<(usize, usize)> {
        let mut i = from;
        while let Some(off) = memchr::memchr(FS, buf.get(i..)?) {
            let fs = i + off;
            match buf.get(fs + 1) {
                Some(&CR) => return Some((fs, 2)),
                Some(_) if self.lenient => return Some((fs, 1)),
                // Strict: an FS not followed by CR is data, keep looking.
                Some(_) => i = fs + 1,
                // FS is the last byte we have: in lenient mode it ends the frame
                // (a CR arriving later is skipped as inter-frame whitespace).
                None if self.lenient => return Some((fs, 1)),
                None => return None,
            }
        }
        None
    }
}

impl Decoder for MllpCodec {
    type Item = MllpFrame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<MllpFrame>, std::io::Error> {
        loop {
            match self.state {
                State::Seeking => match memchr::memchr(VT, buf) {
                    Some(pos) => {
                        self.skipped += count_junk(&buf[..pos]);
                        buf.advance(pos + 1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        self.skipped += count_junk(buf);
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::InFrame { scanned } => {
                    // A new <VT> before the end marker means the previous frame
                    // was cut off: drop what we had and start over there.
                    let limit = buf.len().min(self.max_frame + 2);
                    let window = buf.get(..limit).unwrap_or(buf);
                    let end = self.find_end(window, scanned.saturating_sub(1));
                    let restart = window
                        .get(scanned..)
                        .and_then(|w| memchr::memchr(VT, w))
                        .map(|p| p + scanned);
                    if let Some(vt) = restart
                        && end.is_none_or(|(fs, _)| vt < fs)
                    {
                        self.skipped += vt as u64;
                        buf.advance(vt + 1);
                        self.state = State::InFrame { scanned: 0 };
                        continue;
                    }
                    match end {
                        Some((fs, marker)) if fs <= self.max_frame => {
                            let frame = buf.split_to(fs).freeze();
                            buf.advance(marker);
                            self.state = State::Seeking;
                            return Ok(Some(MllpFrame::Message(frame)));
                        }
                        // Only decide "too long" once an end marker at the limit
                        // would have been seen, so the decision never depends on
                        // how the stream was split into reads.
                        Some(_) | None if buf.len() >= self.max_frame + 2 => {
                            let keep = self.max_frame.min(OVERSIZED_HEAD);
                            self.head = BytesMut::from(buf.get(..keep).unwrap_or(&[]));
                            self.state = State::Draining { len: 0 };
                        }
                        _ => {
                            self.state = State::InFrame { scanned: buf.len() };
                            return Ok(None);
                        }
                    }
                }
                State::Draining { len } => {
                    match self.find_end(buf, 0) {
                        Some((fs, marker)) => {
                            let total = len + fs;
                            buf.advance(fs + marker);
                            self.state = State::Seeking;
                            let head = std::mem::take(&mut self.head).freeze();
                            return Ok(Some(MllpFrame::Oversized { head, len: total }));
                        }
                        None => {
                            // Keep a trailing FS: its CR may be in the next read.
                            let keep = usize::from(buf.last() == Some(&FS));
                            let drop = buf.len() - keep;
                            buf.advance(drop);
                            self.state = State::Draining { len: len + drop };
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<MllpFrame>, std::io::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // A partial frame at end of stream cannot be answered; it is dropped.
                if !buf.is_empty() || self.state != State::Seeking {
                    self.skipped += buf.len() as u64;
                    buf.clear();
                    self.state = State::Seeking;
                    self.head.clear();
                }
                Ok(None)
            }
        }
    }
}

/// Junk bytes between frames; CR and LF after a frame are tolerated silently.
fn count_junk(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b != CR && b != b'\n').count() as u64
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let msg = item.as_ref();
        dst.reserve(msg.len() + 3);
        dst.put_u8(VT);
        dst.put_slice(msg);
        dst.put_u8(FS);
        dst.put_u8(CR);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![VT];
        v.extend_from_slice(msg);
        v.extend_from_slice(&[FS, CR]);
        v
    }

    fn decode_all(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<MllpFrame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn msg(s: &str) -> MllpFrame {
        MllpFrame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut bytes = frame(b"MSH|A");
        bytes.extend(frame(b"MSH|B"));
        let mut c = MllpCodec::default();
        assert_eq!(
            decode_all(&mut c, &[&bytes]),
            vec![msg("MSH|A"), msg("MSH|B")]
        );
    }

    #[test]
    fn one_frame_over_many_reads() {
        let bytes = frame(b"MSH|^~\\&|split");
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut c = MllpCodec::default();
        assert_eq!(decode_all(&mut c, &chunks), vec![msg("MSH|^~\\&|split")]);
    }

    #[test]
    fn junk_is_skipped_and_counted() {
        let mut bytes = b"junk".to_vec();
        bytes.extend(frame(b"MSH|A"));
        bytes.extend(b"\r\n");
        bytes.extend(b"xy");
        bytes.extend(frame(b"MSH|B"));
        let mut c = MllpCodec::default();
        assert_eq!(
            decode_all(&mut c, &[&bytes]),
            vec![msg("MSH|A"), msg("MSH|B")]
        );
        assert_eq!(c.skipped_bytes(), 6);
    }

    #[test]
    fn oversized_frame_keeps_head_and_resyncs() {
        let big = vec![b'x'; 5000];
        let mut bytes = frame(&[b"MSH|^~\\&|A|".as_slice(), &big].concat());
        bytes.extend(frame(b"MSH|next"));
        let mut c = MllpCodec::new(1000, false);
        let frames = decode_all(&mut c, &bytes.chunks(300).collect::<Vec<_>>());
        assert_eq!(frames.len(), 2);
        match &frames[0] {
            MllpFrame::Oversized { head, len } => {
                assert!(head.starts_with(b"MSH|^~\\&|A|"));
                assert_eq!(*len, 5000 + 11);
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert_eq!(frames[1], msg("MSH|next"));
    }

    #[test]
    fn frame_exactly_at_limit_is_accepted() {
        let body = vec![b'a'; 64];
        let mut c = MllpCodec::new(64, false);
        assert_eq!(
            decode_all(&mut c, &[&frame(&body)]),
            vec![MllpFrame::Message(body.into())]
        );
    }

    #[test]
    fn strict_needs_cr_lenient_does_not() {
        let bytes = [&[VT][..], b"MSH|A", &[FS], &[VT], b"MSH|B", &[FS, CR]].concat();
        let mut strict = MllpCodec::default();
        // Strict: the bare FS is data; the second VT restarts the frame.
        assert_eq!(decode_all(&mut strict, &[&bytes]), vec![msg("MSH|B")]);
        let mut lenient = MllpCodec::new(DEFAULT_MAX_FRAME, true);
        assert_eq!(
            decode_all(&mut lenient, &[&bytes]),
            vec![msg("MSH|A"), msg("MSH|B")]
        );
    }

    #[test]
    fn partial_frame_at_eof_is_dropped() {
        let mut c = MllpCodec::default();
        assert!(decode_all(&mut c, &[&[VT, b'M', b'S']]).is_empty());
    }

    #[test]
    fn encodes_frames() {
        let mut c = MllpCodec::default();
        let mut dst = BytesMut::new();
        c.encode(b"MSH|A", &mut dst).unwrap();
        assert_eq!(&dst[..], &frame(b"MSH|A")[..]);
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(b'a'..=b'z', 0..120).prop_map(|m| frame(&m)),
            proptest::collection::vec(b'a'..=b'z', 150..300).prop_map(|m| frame(&m)),
            Just(vec![FS]),
            Just(vec![VT]),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        /// However a byte stream is split into reads, the same frames come out.
        #[test]
        fn any_split_yields_same_frames(
            bytes in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
            lenient in any::<bool>(),
        ) {
            let whole = decode_all(&mut MllpCodec::new(128, lenient), &[&bytes]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let split = decode_all(&mut MllpCodec::new(128, lenient), &chunks);
            prop_assert_eq!(whole, split);
        }
    }
}
