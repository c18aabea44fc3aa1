//! Cross-origin resource sharing: which web origins may call the server.

use super::{Request, Response};

/// The CORS policy: any origin (the default), or a list of allowed origins.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    allowed: Vec<String>,
}

impl Cors {
    /// A policy allowing `origins`; an empty list, or one containing `*`,
    /// allows any origin.
    pub fn new(origins: impl IntoIterator<Item = String>) -> Cors {
        let allowed: Vec<String> = origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        if allowed.iter().any(|o| o == "*") {
            return Cors::default();
        }
        Cors { allowed }
    }

    /// Whether any origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Whether `origin` may call the server.
    pub fn allows(&self, origin: &str) -> bool {
        self.allows_any() || self.allowed.iter().any(|o| o == origin)
    }

    /// Whether `request` comes from an allowed origin, from a page of the
    /// server it was sent to (its `Origin` is the request's own scheme and
    /// `Host`; `secure` tells whether the connection is TLS), or from no
    /// browser page at all (no `Origin` header: apps and devices).
    ///
    /// ```
    /// use signalbox::http::{parse_head, Cors};
    /// let cors = Cors::new(["https://door.test".to_string()]);
    /// let head = b"GET / HTTP/1.1\r\nHost: Box.test:443\r\nOrigin: https://box.test\r\n\r\n";
    /// let (req, _) = parse_head(head).unwrap().unwrap();
    /// assert!(cors.allows_request(&req, true));
    /// assert!(!cors.allows_request(&req, false), "http://box.test is another origin");
    /// ```
    pub fn allows_request(&self, request: &Request, secure: bool) -> bool {
        request.header("origin").is_none_or(|origin| {
            self.allows(origin) || same_origin(origin, request.header("host"), secure)
        })
    }

    /// Adds the CORS headers that answer `request` to `response`. A request
    /// from an origin that is not allowed gets none, so browsers refuse it.
    ///
    /// ```
    /// use signalbox::http::{parse_head, Cors, Response};
    /// let (req, _) = parse_head(b"GET / HTTP/1.1\r\nOrigin: http://a.test\r\n\r\n").unwrap().unwrap();
    /// let resp = Cors::default().apply(&req, Response::new(200));
    /// assert!(resp.headers.contains(&("Access-Control-Allow-Origin", "http://a.test".into())));
    /// let resp = Cors::new(["http://b.test".to_string()]).apply(&req, Response::new(200));
    /// assert!(!resp.headers.iter().any(|(n, _)| *n == "Access-Control-Allow-Origin"));
    /// ```
    pub fn apply(&self, request: &Request, response: Response) -> Response {
        match request.header("origin") {
            // Reflecting the origin (not `*`) lets credentialed requests work.
            Some(origin) if self.allows(origin) => response
                .header("Access-Control-Allow-Origin", origin)
                .header("Access-Control-Allow-Credentials", "true")
                .header("Vary", "Origin"),
            Some(_) => response.header("Vary", "Origin"),
            None if self.allows_any() => response.header("Access-Control-Allow-Origin", "*"),
            None => response,
        }
    }

    /// The answer to an `OPTIONS` preflight request, before [`Cors::apply`].
    pub fn preflight(&self, request: &Request) -> Response {
        let mut response = Response::new(204);
        let allowed = request.header("origin").is_none_or(|o| self.allows(o));
        if allowed {
            response = response
                .header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
                .header("Access-Control-Max-Age", "86400");
            if let Some(headers) = request.header("access-control-request-headers") {
                response = response.header("Access-Control-Allow-Headers", headers);
            }
        }
        response
    }
}

/// Whether `origin` is the origin a request to `host` has: the scheme of
/// the connection, the host without regard to case, default ports explicit.
fn same_origin(origin: &str, host: Option<&str>, secure: bool) -> bool {
    let (scheme, default_port) = if secure { ("https", 443) } else { ("http", 80) };
    let Some((origin_scheme, origin_authority)) = origin.split_once("://") else {
        return false;
    };
    if !origin_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    match (
        authority(origin_authority, default_port),
        host.and_then(|host| authority(host.trim(), default_port)),
    ) {
        (Some((a, a_port)), Some((b, b_port))) => a.eq_ignore_ascii_case(b) && a_port == b_port,
        _ => false,
    }
}

/// Splits `host[:port]` (or `[v6]:port`) into host and port, `default_port`
/// when none is given; `None` for anything else (paths, user info, spaces).
fn authority(text: &str, default_port: u16) -> Option<(&str, u16)> {
    if text.is_empty()
        || text
            .bytes()
            .any(|b| matches!(b, b'/' | b'@' | b'?' | b'#' | b'\\') || b.is_ascii_whitespace())
    {
        return None;
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            (
                &text[..inside.len() + 2],
                after.strip_prefix(':').or(after.is_empty().then_some(""))?,
            )
        }
        None => text.split_once(':').unwrap_or((text, "")),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        "" => default_port,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
        _ => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_scheme_host_and_port() {
        let plain = |origin, host| same_origin(origin, Some(host), false);
        let tls = |origin, host| same_origin(origin, Some(host), true);
        assert!(plain("http://box.test:3000", "box.test:3000"));
        assert!(plain("HTTP://Box.Test:3000", "box.TEST:3000"));
        assert!(plain("http://box.test", "box.test:80"));
        assert!(plain("http://box.test:80", "box.test"));
        assert!(tls("https://box.test", "box.test:443"));
        assert!(tls("https://192.168.1.5:3000", "192.168.1.5:3000"));
        assert!(plain("http://[::1]:3000", "[::1]:3000"));
        assert!(plain("http://[::1]", "[::1]:80"));

        assert!(!plain("https://box.test:3000", "box.test:3000"), "scheme");
        assert!(!tls("http://box.test:3000", "box.test:3000"), "scheme");
        assert!(!tls("https://box.test", "box.test:80"), "port");
        assert!(!plain("http://box.test:3001", "box.test:3000"), "port");
        assert!(!plain("http://evil.test:3000", "box.test:3000"), "host");
        assert!(!plain("http://box.test.evil.test", "box.test"), "host");
        assert!(!plain("null", "box.test"));
        assert!(!plain("http://box.test/", "box.test"), "not an origin");
        assert!(!plain("http://u@box.test", "box.test"));
        assert!(!plain("http://", ""));
        assert!(!plain("http://box.test:x", "box.test:x"));
        assert!(!plain("http://box.test:99999", "box.test:99999"));
        assert!(!plain("http://::1:80", "::1:80"));
        assert!(!same_origin("http://box.test", None, false), "no Host");
    }
}
