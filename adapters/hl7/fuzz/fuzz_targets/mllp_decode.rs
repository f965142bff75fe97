//! `scripts/fuzz mllp_decode`: any bytes as an MLLP stream, fed to the codec in reads of varying
//! size. Nothing panics; frames and the buffered bytes stay within the frame limit.
#![no_main]

use bytes::BytesMut;
use hl7_v2::mllp::MllpCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size so frames are split at varying boundaries.
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut codec = MllpCodec::new(1024);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= 1024),
                Ok(None) => break,
                Err(_) => continue,
            }
        }
        assert!(buf.len() <= 1024 + 2);
    }
    let _ = codec.decode_eof(&mut buf);
});
