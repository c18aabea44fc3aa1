//! HTTP/1.1, as much as a signaling server needs: request heads parsed with
//! httparse, bodies by length or chunked, small responses, CORS.
//!
//! Nothing here knows about Engine.IO; [`conn`] is the only part that does I/O.

pub mod body;
pub mod conn;
pub mod cors;
pub mod forwarded;
pub mod head;

use std::fmt;

pub use conn::{Conn, Limits};
pub use cors::Cors;
pub use head::{Request, parse_head};

/// An HTTP request method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `OPTIONS`
    Options,
    /// Any other method, as sent (method names are case-sensitive).
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        })
    }
}

/// A response, built whole before it is written.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code; the reason phrase comes from [`reason`].
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`, which are added when
    /// the response is written.
    pub headers: Vec<(&'static str, String)>,
    /// The body; not written for a `HEAD` request, nor with 204 or 304.
    pub body: Vec<u8>,
    /// Close the connection after this response (for example because the
    /// request body was not read).
    pub close: bool,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=UTF-8")
            .body(body.into().into_bytes())
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(body.into().into_bytes())
    }

    /// A short plain-text error response: the reason phrase as the body.
    pub fn error(status: u16) -> Response {
        Response::text(status, format!("{}\n", reason(status)))
    }

    /// Appends a header; one already there of the same name is kept.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body, replacing any before; `Content-Type` is left as it is.
    pub fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// Marks the response as the last one on its connection.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// Serializes the response; without the body for a `HEAD` request.
    ///
    /// ```
    /// use signalbox::http::Response;
    /// let bytes = Response::text(200, "ok").serialize(true, false);
    /// let text = String::from_utf8(bytes).unwrap();
    /// assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
    /// assert!(text.contains("Content-Length: 2\r\n"));
    /// assert!(text.ends_with("\r\n\r\nok"));
    /// ```
    pub fn serialize(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = String::with_capacity(128 + self.headers.len() * 40);
        out.push_str("HTTP/1.1 ");
        out.push_str(&self.status.to_string());
        out.push(' ');
        out.push_str(reason(self.status));
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        if self.status != 204 && self.status != 304 {
            out.push_str("Content-Length: ");
            out.push_str(&self.body.len().to_string());
            out.push_str("\r\n");
        }
        out.push_str(if keep_alive && !self.close {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut bytes = out.into_bytes();
        if !head_only && self.status != 204 && self.status != 304 {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Decodes `%XX` escapes; `None` for a broken one or bytes that are not UTF-8.
///
/// ```
/// use signalbox::http::percent_decode;
/// assert_eq!(percent_decode("flat%2012%C3%A9").as_deref(), Some("flat 12é"));
/// assert_eq!(percent_decode("%2"), None);
/// assert_eq!(percent_decode("%+1"), None);
/// assert_eq!(percent_decode("%FF"), None);
/// ```
pub fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail
                .get(..2)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Splits a URL's `host[:port]` or `[v6]:port` into the host (without
/// brackets) and the port as written, if any.
///
/// ```
/// use signalbox::http::split_host_port;
/// assert_eq!(split_host_port("redis.lan:6380"), Ok(("redis.lan", Some("6380"))));
/// assert_eq!(split_host_port("[::1]:7000"), Ok(("::1", Some("7000"))));
/// assert_eq!(split_host_port("push.example"), Ok(("push.example", None)));
/// assert!(split_host_port("[::1").is_err());
/// ```
pub fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        return Ok((host, after.strip_prefix(':')));
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// The value of `key` in a query string, undecoded; the first one wins.
///
/// ```
/// use signalbox::http::query_param;
/// assert_eq!(query_param("EIO=4&transport=polling", "transport"), Some("polling"));
/// assert_eq!(query_param("EIO=4&flag", "flag"), Some(""));
/// assert_eq!(query_param("EIO=4", "sid"), None);
/// ```
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}
