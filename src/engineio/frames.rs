//! A client's byte stream, watched for WebSocket frame boundaries on its
//! way to tungstenite.
//!
//! tungstenite grows its read buffer to the largest frame a client sent and
//! its write buffer to the largest one it was sent, and keeps both for the
//! life of the socket: a client that sends one 1 MB message pins a megabyte
//! until it leaves. The buffers cannot be shrunk in place, so the serve loop
//! starts a fresh WebSocket over the same stream after a large frame, at a
//! moment when tungstenite holds no byte it has not turned into a message.
//! This stream tells when that is: it counts the messages whose last frame
//! has passed in full, and whether what passed ends on a frame boundary.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Where the client's frame stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// In a frame header (RFC 6455 §5.2): `have` of its `need` bytes read,
    /// of which `extended` after the first two hold the payload length;
    /// the length gathered so far; whether the frame ends a message.
    Header {
        have: u8,
        need: u8,
        extended: u8,
        len: u64,
        ends: bool,
    },
    /// In a payload, `left` bytes to go.
    Payload { left: u64, ends: bool },
}

const START: Position = Position::Header {
    have: 0,
    need: 2,
    extended: 0,
    len: 0,
    ends: false,
};

/// A stream that counts the frames read through it.
#[derive(Debug)]
pub(crate) struct Frames<S> {
    inner: S,
    position: Position,
    /// Messages whose last frame was read in full: control frames, and data
    /// frames with FIN set (tungstenite makes one message of each).
    ends: u64,
    /// The largest frame payload read since [`Frames::forget_largest`].
    largest: u64,
}

impl<S> Frames<S> {
    /// Watches `inner`, whose first bytes, `read`, were read already.
    pub fn new(inner: S, read: &[u8]) -> Frames<S> {
        let mut frames = Frames {
            inner,
            position: START,
            ends: 0,
            largest: 0,
        };
        frames.watch(read);
        frames
    }

    /// Messages whose last frame passed in full.
    pub fn ends(&self) -> u64 {
        self.ends
    }

    /// Whether what passed ends exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.position == START
    }

    /// The largest frame payload read since the last call to this.
    pub fn forget_largest(&mut self) -> u64 {
        std::mem::take(&mut self.largest)
    }

    /// Follows the frame boundaries through `bytes`.
    fn watch(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.position = match self.position {
                Position::Payload { left, ends } => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    if take == left {
                        self.ends += u64::from(ends);
                        START
                    } else {
                        Position::Payload {
                            left: left - take,
                            ends,
                        }
                    }
                }
                Position::Header {
                    have,
                    mut need,
                    mut extended,
                    mut len,
                    mut ends,
                } => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    match have {
                        // FIN, or a control frame (which cannot be fragmented).
                        0 => ends = byte & 0x80 != 0 || byte & 0x08 != 0,
                        1 => {
                            extended = match byte & 0x7f {
                                126 => 2,
                                127 => 8,
                                short => {
                                    len = u64::from(short);
                                    0
                                }
                            };
                            let mask = if byte & 0x80 != 0 { 4 } else { 0 };
                            need = 2 + extended + mask;
                        }
                        // The extended length, big-endian; then the mask.
                        _ if have < 2 + extended => len = len.wrapping_shl(8) | u64::from(byte),
                        _ => {}
                    }
                    let have = have + 1;
                    if have < need {
                        Position::Header {
                            have,
                            need,
                            extended,
                            len,
                            ends,
                        }
                    } else {
                        self.largest = self.largest.max(len);
                        if len == 0 {
                            self.ends += u64::from(ends);
                            START
                        } else {
                            Position::Payload { left: len, ends }
                        }
                    }
                }
            };
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Frames<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            self.watch(&buf[..n]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Frames<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN or not, opcode, masked with a zero key.
    fn frame(fin: bool, opcode: u8, payload: usize) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload {
            0..=125 => out.push(0x80 | payload as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend(std::iter::repeat_n(b'x', payload));
        out
    }

    #[test]
    fn counts_the_messages_whose_last_frame_passed_whole_at_any_split() {
        let stream: Vec<u8> = [
            frame(true, 1, 5),
            frame(false, 1, 200),
            frame(true, 9, 0),
            frame(false, 0, 70_000),
            frame(true, 0, 1),
            frame(true, 2, 0),
            frame(true, 8, 2),
        ]
        .concat();
        // Text, ping, the fragmented text (3 frames), binary, close.
        let ends_after: Vec<(usize, u64)> = {
            let mut frames = Frames::new((), &[]);
            (1..=stream.len())
                .map(|n| {
                    frames.watch(&stream[n - 1..n]);
                    (n, frames.ends())
                })
                .collect()
        };
        assert_eq!(ends_after.last().map(|e| e.1), Some(5));
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut frames = Frames::new((), &[]);
            for (i, piece) in stream.chunks(chunk).enumerate() {
                frames.watch(piece);
                let passed = ((i + 1) * chunk).min(stream.len());
                assert_eq!(frames.ends(), ends_after[passed - 1].1, "chunks of {chunk}");
            }
            assert!(frames.at_boundary());
            assert_eq!(frames.forget_largest(), 70_000);
            assert_eq!(frames.forget_largest(), 0);
        }
        let mut frames = Frames::new((), &stream[..3]);
        assert!(!frames.at_boundary());
        frames.watch(&stream[3..]);
        assert_eq!((frames.ends(), frames.at_boundary()), (5, true));
    }

    #[test]
    fn a_huge_length_is_followed_not_trusted() {
        let mut frames = Frames::new(
            (),
            &[0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        );
        frames.watch(&[0, 0, 0, 0]);
        frames.watch(&[1; 1000]);
        assert!(!frames.at_boundary());
        assert_eq!(frames.ends(), 0);
    }
}
