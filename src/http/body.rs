//! Chunked request bodies (RFC 9112 §7.1), decoded incrementally with no I/O.

use std::fmt;

/// Longest accepted chunk-size line (size, extensions) or trailer line.
const MAX_LINE: usize = 1024;
/// Largest accepted trailer section, in bytes (all its lines together).
const MAX_TRAILERS: usize = 8 * 1024;

/// Why a chunked body is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// Not valid chunked framing.
    Malformed,
    /// The decoded body is larger than the limit.
    TooLarge,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::Malformed => "malformed chunked body",
            ChunkedError::TooLarge => "chunked body too large",
        })
    }
}

impl std::error::Error for ChunkedError {}

/// Where a chunk-size line is: `chunk-size [BWS] *( ";" chunk-ext )`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizeLine {
    /// In the hex digits.
    Digits,
    /// In whitespace after them: only more of it, `;` or the line's end may follow.
    Space,
    /// After a `;`: extensions, which are ignored.
    Extensions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk-size line; `digits` seen so far, `len` bytes of it read.
    Size {
        digits: usize,
        part: SizeLine,
        len: usize,
    },
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section; `line` bytes into the current line.
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
    Done,
}

/// An incremental decoder for one chunked body.
///
/// ```
/// use signalbox::http::body::Chunked;
/// let mut body = Chunked::new(100);
/// let input = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT";
/// let used = body.feed(input).unwrap();
/// assert!(body.is_done());
/// assert_eq!(&input[used..], b"NEXT");
/// assert_eq!(body.into_body(), b"abcde");
/// ```
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    trailer_bytes: usize,
    limit: usize,
    body: Vec<u8>,
}

impl Chunked {
    /// A decoder that refuses bodies larger than `limit` bytes.
    pub fn new(limit: usize) -> Chunked {
        Chunked {
            state: State::Size {
                digits: 0,
                part: SizeLine::Digits,
                len: 0,
            },
            size: 0,
            trailer_bytes: 0,
            limit,
            body: Vec::new(),
        }
    }

    /// Whether the final chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The chunk data joined, without sizes, extensions or trailers.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Consumes as much of `input` as belongs to the body; returns how many
    /// bytes were used. Bytes after the end of the body are left alone.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            let b = input[i];
            self.state = match self.state {
                State::Size { digits, part, len } => {
                    if len >= MAX_LINE {
                        return Err(ChunkedError::Malformed);
                    }
                    let len = len + 1;
                    let next = |part| State::Size { digits, part, len };
                    match (part, b) {
                        (_, b'\r') if digits > 0 => State::SizeLf,
                        // A bare LF ends a line for some parsers and not for
                        // others: refuse it rather than disagree.
                        (_, b'\n') => return Err(ChunkedError::Malformed),
                        (SizeLine::Digits | SizeLine::Space, b' ' | b'\t') if digits > 0 => {
                            next(SizeLine::Space)
                        }
                        (SizeLine::Digits | SizeLine::Space, b';') if digits > 0 => {
                            next(SizeLine::Extensions)
                        }
                        // Names, values, quoted strings: any visible byte or
                        // blank, no other control character.
                        (SizeLine::Extensions, b' ' | b'\t' | 0x21..=0x7e | 0x80..) => {
                            next(SizeLine::Extensions)
                        }
                        (SizeLine::Digits, _) => {
                            let value = (b as char).to_digit(16).ok_or(ChunkedError::Malformed)?;
                            if digits >= 15 {
                                return Err(ChunkedError::TooLarge);
                            }
                            self.size = self.size * 16 + u64::from(value);
                            State::Size {
                                digits: digits + 1,
                                part,
                                len,
                            }
                        }
                        _ => return Err(ChunkedError::Malformed),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed);
                    }
                    let size = std::mem::take(&mut self.size);
                    if size == 0 {
                        State::Trailer { line: 0 }
                    } else if self.body.len() as u64 + size > self.limit as u64 {
                        return Err(ChunkedError::TooLarge);
                    } else {
                        State::Data(size)
                    }
                }
                State::Data(remaining) => {
                    let take = (input.len() - i).min(remaining as usize);
                    self.body.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    digits: 0,
                    part: SizeLine::Digits,
                    len: 0,
                },
                State::DataCr | State::DataLf => return Err(ChunkedError::Malformed),
                State::Trailer { line } => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILERS || line >= MAX_LINE {
                        return Err(ChunkedError::Malformed);
                    }
                    if b == b'\r' {
                        State::TrailerLf { line }
                    } else if b == b'\n' {
                        return Err(ChunkedError::Malformed);
                    } else {
                        State::Trailer { line: line + 1 }
                    }
                }
                State::TrailerLf { line } => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed);
                    }
                    if line == 0 {
                        State::Done
                    } else {
                        State::Trailer { line: 0 }
                    }
                }
                State::Done => State::Done,
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut c = Chunked::new(limit);
        let used = c.feed(input)?;
        assert!(c.is_done(), "not done");
        Ok((c.into_body(), used))
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"4\r\n4hel\r\nA\r\nlo\x1e4world!\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(
            decode(input, 100).unwrap(),
            (b"4hello\x1e4world!".to_vec(), input.len())
        );

        let mut c = Chunked::new(100);
        for byte in input.chunks(1) {
            assert_eq!(c.feed(byte).unwrap(), 1);
        }
        assert!(c.is_done());
        assert_eq!(c.into_body(), b"4hello\x1e4world!");
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut c = Chunked::new(10);
        assert_eq!(c.feed(b"0\r\n\r\nGET / HTTP/1.1").unwrap(), 5);
        assert!(c.is_done());
        assert_eq!(c.feed(b"more").unwrap(), 0);
    }

    #[test]
    fn enforces_the_limit() {
        assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n", 5).unwrap().0, b"hello");
        assert_eq!(
            decode(b"6\r\nhello!\r\n0\r\n\r\n", 5),
            Err(ChunkedError::TooLarge)
        );
        assert_eq!(
            decode(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5),
            Err(ChunkedError::TooLarge)
        );
        assert_eq!(
            decode(b"ffffffffffffffff\r\n", 5),
            Err(ChunkedError::TooLarge)
        );
    }

    #[test]
    fn the_chunk_size_line_follows_rfc_9112() {
        let good = [
            &b"3\r\nabc\r\n0\r\n\r\n"[..],
            b"3 \r\nabc\r\n0\r\n\r\n",
            b"3\t \r\nabc\r\n0\r\n\r\n",
            b"3;name\r\nabc\r\n0\r\n\r\n",
            b"3 ; name = value\r\nabc\r\n0\r\n\r\n",
            b"3;a=\"quoted; \\\"x\";b\r\nabc\r\n0;last\r\n\r\n",
            b"0003\r\nabc\r\n0\r\n\r\n",
        ];
        for input in good {
            assert_eq!(
                decode(input, 100).map(|(body, _)| body),
                Ok(b"abc".to_vec()),
                "{input:?}"
            );
        }
        let bad = [
            &b"3 x\r\n"[..],
            b"3 3\r\n",
            b"3x\r\n",
            b"3\x00\r\n",
            b"3 ;\x01\r\n",
            b"3;a\x7f\r\n",
            b"3\x0b\r\n",
            b" 3\r\n",
            b"-3\r\n",
            b"0x3\r\n",
            b"3;a\rb\n",
        ];
        for input in bad {
            let mut c = Chunked::new(100);
            assert_eq!(c.feed(input), Err(ChunkedError::Malformed), "{input:?}");
        }
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"3\rx",
            b"3\r\nabcX",
            b"3\r\nabc\rX",
            b"0\r\nTrailer\rX",
            b"0\r\n\rX",
            b"3;ext\nabc",
            b"3\nabc",
            b"0\r\nX-T: 1\n\r\n",
        ] {
            let mut c = Chunked::new(100);
            assert_eq!(c.feed(bad), Err(ChunkedError::Malformed), "{bad:?}");
        }
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        assert_eq!(
            Chunked::new(100).feed(&long_ext),
            Err(ChunkedError::Malformed)
        );
        let mut long_trailer = b"0\r\n".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        assert_eq!(
            Chunked::new(100).feed(&long_trailer),
            Err(ChunkedError::Malformed)
        );
    }
}
