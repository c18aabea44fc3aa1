//! Request heads: parsed by httparse from a byte buffer, no I/O.

use std::fmt;

use super::Method;

/// The most headers a request may carry.
pub const MAX_HEADERS: usize = 48;

/// A parsed request head: the request line and headers, not the body.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method; anything but GET, HEAD, POST and OPTIONS is [`Method::Other`].
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// The query string, without `?`; empty when there is none.
    pub query: String,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Headers in their order, names as sent.
    pub headers: Vec<(String, String)>,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Exact(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a request head is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    Malformed,
    /// More than [`MAX_HEADERS`] headers.
    TooManyHeaders,
    /// The head is longer than the limit.
    TooLarge,
    /// A `Content-Length` that is not a number, or two that disagree.
    BadContentLength,
    /// A transfer coding other than chunked, or chunked beside a length.
    BadTransferEncoding,
}

impl HeadError {
    /// The status code that answers this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooManyHeaders | HeadError::TooLarge => 431,
            HeadError::BadTransferEncoding => 501,
            HeadError::Malformed | HeadError::BadContentLength => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::Malformed => "malformed request head",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::TooLarge => "request head too large",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::BadTransferEncoding => "unsupported Transfer-Encoding",
        })
    }
}

impl std::error::Error for HeadError {}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, else the request and the
/// number of bytes the head took.
///
/// ```
/// use signalbox::http::{parse_head, Method};
/// let (req, len) = parse_head(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\nrest").unwrap().unwrap();
/// assert_eq!((req.method, req.path.as_str(), req.query.as_str(), len), (Method::Get, "/a", "b=c", 32));
/// assert!(parse_head(b"GET / HTTP/1.1\r\nHo").unwrap().is_none());
/// ```
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HeadError::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: Method::parse(method),
        path: path.to_owned(),
        query: query.to_owned(),
        version,
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    Ok(Some((request, len)))
}

impl Request {
    /// The first header named `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains `token`, case-insensitively.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            false
        } else {
            self.version >= 1 || self.header_has_token("connection", "keep-alive")
        }
    }

    /// Whether this is a WebSocket upgrade request.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
            && self.header_has_token("connection", "upgrade")
    }

    /// How the body is delimited, refusing the ambiguous cases that allow
    /// request smuggling.
    pub fn body_length(&self) -> Result<BodyLength, HeadError> {
        let encodings: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        let mut lengths = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim());
        if !encodings.is_empty() {
            let chunked_last = encodings
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
            if encodings.len() != 1 || !chunked_last || lengths.next().is_some() {
                return Err(HeadError::BadTransferEncoding);
            }
            return Ok(BodyLength::Chunked);
        }
        let Some(first) = lengths.next() else {
            return Ok(BodyLength::Empty);
        };
        let parse = |v: &str| -> Result<u64, HeadError> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadContentLength);
            }
            v.parse().map_err(|_| HeadError::BadContentLength)
        };
        let length = parse(first)?;
        for other in lengths {
            if parse(other)? != length {
                return Err(HeadError::BadContentLength);
            }
        }
        Ok(if length == 0 {
            BodyLength::Empty
        } else {
            BodyLength::Exact(length)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(Request, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    fn request(text: &str) -> Request {
        parse(text).unwrap().unwrap().0
    }

    #[test]
    fn parses_a_polling_request() {
        let text = "POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\n\
                    Host: localhost\r\nContent-Length: 6\r\nOrigin: http://a\r\n\r\n4hello";
        let (req, len) = parse(text).unwrap().unwrap();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/socket.io/");
        assert_eq!(req.query, "EIO=4&transport=polling&sid=abc");
        assert_eq!(req.header("ORIGIN"), Some("http://a"));
        assert_eq!(req.body_length(), Ok(BodyLength::Exact(6)));
        assert_eq!(&text[len..], "4hello");
        assert!(req.keep_alive());
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        let full = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 0..full.len() {
            assert!(parse(&full[..end]).unwrap().is_none(), "{end}");
        }
        assert!(parse(full).unwrap().is_some());
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty\r\n\r\n",
            "\u{0}\u{1}\u{2}\r\n\r\n",
            "GET /\u{7f} HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad).err(), Some(HeadError::Malformed), "{bad:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&text).err(), Some(HeadError::TooManyHeaders));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(request("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!request("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn websocket_upgrade_detection() {
        let req = request(
            "GET /socket.io/ HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
        );
        assert!(req.is_websocket_upgrade());
        assert!(!request("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").is_websocket_upgrade());
    }

    #[test]
    fn body_lengths() {
        let len = |extra: &str| request(&format!("POST / HTTP/1.1\r\n{extra}\r\n")).body_length();
        assert_eq!(len(""), Ok(BodyLength::Empty));
        assert_eq!(len("Content-Length: 0\r\n"), Ok(BodyLength::Empty));
        assert_eq!(len("Content-Length: 12\r\n"), Ok(BodyLength::Exact(12)));
        assert_eq!(
            len("Content-Length: 12\r\nContent-Length: 12\r\n"),
            Ok(BodyLength::Exact(12))
        );
        assert_eq!(
            len("Transfer-Encoding: chunked\r\n"),
            Ok(BodyLength::Chunked)
        );
        assert_eq!(
            len("Transfer-Encoding: Chunked\r\n"),
            Ok(BodyLength::Chunked)
        );
        for bad in [
            "Content-Length: -1\r\n",
            "Content-Length: 1x\r\n",
            "Content-Length: \r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: 1\r\nContent-Length: 2\r\n",
        ] {
            assert_eq!(len(bad), Err(HeadError::BadContentLength), "{bad:?}");
        }
        for bad in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ] {
            assert_eq!(len(bad), Err(HeadError::BadTransferEncoding), "{bad:?}");
        }
    }
}
