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

    /// Whether `request` comes from an allowed origin, or from no browser
    /// page at all (no `Origin` header: apps and devices).
    pub fn allows_request(&self, request: &Request) -> bool {
        request
            .header("origin")
            .is_none_or(|origin| self.allows(origin))
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
