mod common;

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use hl7_v2::mllp::{MllpCodec, MllpError};
use tokio_util::codec::{Decoder, Encoder, FramedRead};

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    MllpCodec::default().encode(payload, &mut dst).unwrap();
    dst.to_vec()
}

/// Feeds `input` in the given chunk boundaries and collects decoded frames and errors.
fn feed(codec: &mut MllpCodec, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut buf = BytesMut::new();
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    for chunk in chunks {
        buf.put_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f.to_vec()),
            Ok(None) => break,
            Err(e) => {
                errors.push(e.to_string());
                break;
            }
        }
    }
    (frames, errors)
}

#[test]
fn encoder_wraps_and_refuses_framing_bytes() {
    assert_eq!(frame(b"MSH|x\r"), b"\x0bMSH|x\r\x1c\x0d");
    let mut dst = BytesMut::new();
    let err = MllpCodec::default()
        .encode(&b"MSH\x1cx"[..], &mut dst)
        .unwrap_err();
    assert!(matches!(
        err,
        MllpError::FramingByteInMessage {
            byte: 0x1c,
            offset: 3
        }
    ));
}

#[test]
fn split_at_every_byte_boundary() {
    let a = common::siu_s12().into_bytes();
    let b = common::adt_a03().into_bytes();
    let mut stream = frame(&a);
    stream.extend_from_slice(b"\r\njunk\x1c\r");
    stream.extend(frame(&b));
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            if j - i > 3 && j != stream.len() {
                continue; // every single cut, and every pair of nearby cuts
            }
            let (frames, errors) = feed(
                &mut MllpCodec::default(),
                &[&stream[..i], &stream[i..j], &stream[j..]],
            );
            assert_eq!(frames, vec![a.clone(), b.clone()], "cut at {i}/{j}");
            assert!(errors.is_empty());
        }
    }
}

#[test]
fn byte_by_byte() {
    let a = common::adt_a03().into_bytes();
    let stream: Vec<u8> = [frame(&a), frame(&a), frame(&a)].concat();
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    let (frames, errors) = feed(&mut MllpCodec::default(), &chunks);
    assert_eq!(frames.len(), 3);
    assert!(errors.is_empty());
}

#[test]
fn junk_between_frames_and_missing_cr() {
    let mut stream = b"garbage before\r\n".to_vec();
    stream.extend_from_slice(b"\x0bMSH|1\r\x1c"); // no CR, next frame follows directly
    stream.extend_from_slice(b"\x0bMSH|2\r\x1c\x0d");
    stream.extend_from_slice(b"\x00\xff noise \x1c\x0d");
    stream.extend_from_slice(b"\x0bMSH|3\r\x1c"); // no CR at end of stream
    let (frames, errors) = feed(&mut MllpCodec::default(), &[&stream]);
    assert_eq!(
        frames,
        vec![
            b"MSH|1\r".to_vec(),
            b"MSH|2\r".to_vec(),
            b"MSH|3\r".to_vec()
        ]
    );
    assert!(errors.is_empty());
}

#[test]
fn restart_inside_a_frame_drops_the_partial_one() {
    let stream = b"\x0bMSH|partial\x0bMSH|whole\r\x1c\x0d";
    let (frames, _) = feed(&mut MllpCodec::default(), &[stream]);
    assert_eq!(frames, vec![b"MSH|whole\r".to_vec()]);
}

#[test]
fn oversized_frames_are_reported_and_skipped() {
    let big = vec![b'A'; 100];
    let mut stream = frame(&big);
    stream.extend(frame(b"MSH|ok\r"));
    // Delivered in one piece (end block visible) and in small pieces (limit hit before the end).
    for chunk in [stream.len(), 7] {
        let mut codec = MllpCodec::new(64);
        let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
        let (frames, errors) = feed(&mut codec, &chunks);
        assert_eq!(frames, vec![b"MSH|ok\r".to_vec()], "chunk {chunk}");
        assert_eq!(
            errors,
            vec!["MLLP frame exceeds the 64-byte limit".to_string()]
        );
    }
}

#[test]
fn decoder_never_buffers_past_the_limit() {
    let mut codec = MllpCodec::new(1000);
    let mut buf = BytesMut::new();
    buf.put_u8(0x0b);
    let mut errors = 0;
    for _ in 0..1000 {
        buf.put_slice(&[b'x'; 100]);
        if codec.decode(&mut buf).is_err() {
            errors += 1;
        }
        assert!(buf.len() <= 1100);
    }
    assert_eq!(errors, 1);
    buf.put_slice(b"\x1c\x0d\x0bMSH|after\r\x1c\x0d");
    assert_eq!(
        codec.decode(&mut buf).unwrap().unwrap().as_ref(),
        b"MSH|after\r"
    );
}

#[test]
fn truncated_frame_at_eof() {
    let (frames, errors) = feed(&mut MllpCodec::default(), &[b"\x0bMSH|half"]);
    assert!(frames.is_empty());
    assert_eq!(
        errors,
        vec!["connection closed inside an MLLP frame (8 bytes received)".to_string()]
    );
}

#[tokio::test]
async fn framed_read_over_a_stream() {
    let a = common::siu_s12().into_bytes();
    let data: Vec<u8> = [frame(&a), b"junk".to_vec(), frame(b"MSH|2\r")].concat();
    let reader = tokio_test_reader(data);
    let frames: Vec<_> = FramedRead::new(reader, MllpCodec::default())
        .collect()
        .await;
    let frames: Vec<Vec<u8>> = frames.into_iter().map(|f| f.unwrap().to_vec()).collect();
    assert_eq!(frames, vec![a, b"MSH|2\r".to_vec()]);
}

/// An AsyncRead over bytes, delivered in small pieces.
fn tokio_test_reader(data: Vec<u8>) -> impl tokio::io::AsyncRead + Unpin {
    let (mut tx, rx) = tokio::io::duplex(16);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in data.chunks(5) {
            tx.write_all(chunk).await.unwrap();
        }
    });
    rx
}
