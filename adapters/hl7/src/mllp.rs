//! MLLP framing: `0x0B` message `0x1C 0x0D`, as a `tokio_util` codec.
//!
//! Decoding is lenient (junk between frames is skipped, a missing final CR is tolerated) and
//! bounded: a frame longer than the limit is reported once and then discarded as it streams in,
//! so a sender cannot make the decoder buffer more than the limit plus one read.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// Start block.
pub const START_BLOCK: u8 = 0x0B;
/// End block, followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1C;
/// Ends the frame after [`END_BLOCK`].
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Default frame limit: PDF-bearing ORUs reach several MB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Framing errors.
#[derive(Debug, Error)]
pub enum MllpError {
    /// A frame exceeded the limit. Its remaining bytes are discarded and the decoder resumes at
    /// the next frame. Note that `FramedRead` yields `None` after any decoder error, so a server
    /// using it should answer AR and close the connection.
    #[error("MLLP frame exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed inside an MLLP frame ({received} bytes received)")]
    Truncated {
        /// Bytes of the unfinished frame.
        received: usize,
    },
    /// An outgoing message contains a framing byte and cannot be sent.
    #[error("message contains MLLP framing byte {byte:#04x} at offset {offset}")]
    FramingByteInMessage {
        /// The byte.
        byte: u8,
        /// Where.
        offset: usize,
    },
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a start block; anything else is junk.
    Seeking,
    /// Inside a frame that starts at buffer offset 1; `scanned` bytes after the start block have
    /// been checked for an end block already.
    InFrame { scanned: usize },
    /// Skipping the rest of an oversized frame.
    Discarding,
}

/// MLLP codec. Decodes frames into their payload (without framing bytes) and encodes payloads
/// into frames.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl MllpCodec {
    /// A codec accepting payloads up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            state: State::Seeking,
        }
    }

    /// The payload limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Decoder for MllpCodec {
    type Item = Bytes;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        loop {
            match self.state {
                State::Seeking => match buf.iter().position(|&b| b == START_BLOCK) {
                    Some(start) => {
                        buf.advance(start);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::Discarding => {
                    // Resume at the end of the oversized frame or at a new start block.
                    match buf.iter().position(|&b| b == END_BLOCK || b == START_BLOCK) {
                        Some(i) if buf[i] == START_BLOCK => {
                            buf.advance(i);
                            self.state = State::InFrame { scanned: 0 };
                        }
                        Some(i) => {
                            buf.advance(i + 1);
                            self.state = State::Seeking;
                        }
                        None => {
                            buf.clear();
                            return Ok(None);
                        }
                    }
                }
                State::InFrame { scanned } => {
                    let Some(body) = buf.get(1..) else {
                        self.state = State::Seeking;
                        return Ok(None);
                    };
                    let found = body[scanned..]
                        .iter()
                        .position(|&b| b == END_BLOCK || b == START_BLOCK)
                        .map(|p| p + scanned);
                    match found {
                        Some(i) if body[i] == START_BLOCK => {
                            // A new frame began before this one ended: the sender gave up on it.
                            buf.advance(i + 1);
                            self.state = State::InFrame { scanned: 0 };
                        }
                        Some(i) => {
                            if i > self.max_frame {
                                buf.advance(i + 2);
                                self.state = State::Seeking;
                                return Err(MllpError::FrameTooLarge {
                                    limit: self.max_frame,
                                });
                            }
                            let Some(&next) = body.get(i + 1) else {
                                // Cannot tell yet whether the CR follows.
                                self.state = State::InFrame { scanned: i };
                                return Ok(None);
                            };
                            // Lenient: without the CR, the frame still ends at the end block and
                            // whatever follows is handled by the start-block search.
                            let consumed = if next == CARRIAGE_RETURN {
                                i + 3
                            } else {
                                i + 2
                            };
                            let mut frame = buf.split_to(consumed);
                            frame.advance(1);
                            frame.truncate(i);
                            self.state = State::Seeking;
                            return Ok(Some(frame.freeze()));
                        }
                        None => {
                            if body.len() > self.max_frame {
                                buf.clear();
                                self.state = State::Discarding;
                                return Err(MllpError::FrameTooLarge {
                                    limit: self.max_frame,
                                });
                            }
                            self.state = State::InFrame {
                                scanned: body.len(),
                            };
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        match self.state {
            State::InFrame { .. } => {
                let body = buf.get(1..).unwrap_or_default();
                self.state = State::Seeking;
                if body.last() == Some(&END_BLOCK) {
                    // End block as the very last byte: the CR is missing, the frame is whole.
                    let mut frame = buf.split();
                    frame.advance(1);
                    frame.truncate(frame.len() - 1);
                    return Ok(Some(frame.freeze()));
                }
                let received = body.len();
                buf.clear();
                Err(MllpError::Truncated { received })
            }
            State::Seeking | State::Discarding => {
                buf.clear();
                self.state = State::Seeking;
                Ok(None)
            }
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), MllpError> {
        let payload = item.as_ref();
        if let Some(offset) = payload
            .iter()
            .position(|&b| b == START_BLOCK || b == END_BLOCK)
        {
            return Err(MllpError::FramingByteInMessage {
                byte: payload[offset],
                offset,
            });
        }
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_u8(END_BLOCK);
        dst.put_u8(CARRIAGE_RETURN);
        Ok(())
    }
}
