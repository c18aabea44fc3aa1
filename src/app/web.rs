//! The built-in intercom page at `/app/`, and the same page as a door panel
//! at `/app/door`: one HTML page, plain JavaScript and CSS, embedded in the
//! binary so it works on a LAN with no internet.

use crate::http::{Method, Request, Response};

const INDEX: &str = include_str!("web/index.html");
// Without comments and indentation (build.rs).
const SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/app.js"));
const STYLE: &str = include_str!(concat!(env!("OUT_DIR"), "/app.css"));

/// The page as served: the HTML knows the server's Socket.IO path and its
/// reconnect grace (how long a call waits for a page that lost its
/// connection).
#[derive(Debug, Clone)]
pub struct Page {
    index: std::rc::Rc<str>,
    /// The page in door-panel mode (`/app/door`).
    door: std::rc::Rc<str>,
}

impl Page {
    /// The page for a server whose Socket.IO endpoint is at `socket_path`
    /// and whose calls wait `grace` for a lost party.
    pub fn new(socket_path: &str, grace: std::time::Duration) -> Page {
        let escaped = socket_path
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let meta = |path: &str| format!(r#"<meta name="signalbox-path" content="{path}">"#);
        let grace_meta =
            |ms: &str| format!(r#"<meta name="signalbox-reconnect-grace" content="{ms}">"#);
        let index = INDEX
            .replace(&meta("/socket.io/"), &meta(&escaped))
            .replace(
                &grace_meta("10000"),
                &grace_meta(&grace.as_millis().to_string()),
            );
        let mode = |mode: &str| format!(r#"<meta name="signalbox-mode" content="{mode}">"#);
        let door = index.replace(&mode("resident"), &mode("door"));
        Page {
            index: index.into(),
            door: door.into(),
        }
    }

    /// Answers requests under `/app`; `None` for other paths.
    pub fn answer(&self, request: &Request) -> Option<Response> {
        page(request, self)
    }
}

fn page(request: &Request, page: &Page) -> Option<Response> {
    let (body, kind) = match request.path.as_str() {
        "/app" => return Some(Response::new(308).header("Location", "/app/")),
        "/app/" | "/app/index.html" => (&*page.index, "text/html; charset=utf-8"),
        "/app/door" => (&*page.door, "text/html; charset=utf-8"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_knows_the_socket_path() {
        let page = Page::new("/intercom/io\"<x>/", std::time::Duration::from_secs(3));
        let html = page.index.to_string();
        assert!(
            html.contains(r#"content="/intercom/io&quot;&lt;x&gt;/""#),
            "{html}"
        );
        assert!(!html.contains(r#"content="/socket.io/""#));
        assert!(html.contains(r#"<meta name="signalbox-reconnect-grace" content="3000">"#));
        assert!(
            Page::new("/socket.io/", std::time::Duration::from_secs(10))
                .index
                .contains(r#"content="/socket.io/""#)
        );
    }

    #[test]
    fn the_door_panel_is_the_page_in_door_mode() {
        let page = Page::new("/io/", std::time::Duration::from_secs(3));
        assert!(
            page.index
                .contains(r#"<meta name="signalbox-mode" content="resident">"#)
        );
        assert!(
            page.door
                .contains(r#"<meta name="signalbox-mode" content="door">"#)
        );
        assert!(
            page.door
                .contains(r#"<meta name="signalbox-path" content="/io/">"#)
        );
        assert_eq!(page.door.replace("\"door\"", "\"resident\""), *page.index);
    }
}
