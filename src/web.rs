//! The built-in intercom page at `/app/`: one HTML page, plain JavaScript and
//! CSS, embedded in the binary so it works on a LAN with no internet.

use crate::http::{Method, Request, Response};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

/// Answers requests under `/app`; `None` for other paths.
pub fn page(request: &Request) -> Option<Response> {
    let (body, kind) = match request.path.as_str() {
        "/app" => return Some(Response::new(308).header("Location", "/app/")),
        "/app/" | "/app/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/app/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/app/app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    if !matches!(request.method, Method::Get | Method::Head) {
        return Some(Response::error(405).header("Allow", "GET, HEAD, OPTIONS"));
    }
    Some(
        Response::new(200)
            .header("Content-Type", kind)
            .header("Cache-Control", "no-cache")
            .header("X-Content-Type-Options", "nosniff")
            .header(
                "Content-Security-Policy",
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; media-src 'self' blob:",
            )
            .body(body.as_bytes().to_vec()),
    )
}
