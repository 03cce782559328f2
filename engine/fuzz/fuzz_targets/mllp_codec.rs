//! Any bytes, in any split into reads: the MLLP decoder never panics, never
//! returns a frame over the limit, and splitting does not change the frames.
#![no_main]

use bytes::BytesMut;
use izhub_engine::mllp::{MllpCodec, MllpFrame};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn decode(chunks: &[&[u8]], lenient: bool) -> Vec<MllpFrame> {
    let mut codec = MllpCodec::new(256, lenient);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            out.push(f);
        }
    }
    while let Ok(Some(f)) = codec.decode_eof(&mut buf) {
        out.push(f);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let lenient = cut & 1 == 1;
    let at = (cut as usize).min(rest.len());
    let (a, b) = rest.split_at(at);
    let whole = decode(&[rest], lenient);
    for f in &whole {
        if let MllpFrame::Message(m) = f {
            assert!(m.len() <= 256);
        }
    }
    assert_eq!(whole, decode(&[a, b], lenient));
});
