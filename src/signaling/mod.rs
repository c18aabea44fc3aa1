//! The intercom's signaling service on top of Socket.IO: the seed's events,
//! presence and calls, and the REST pages.

use std::time::SystemTime;

use crate::config::Config;
use crate::engineio::Engine;
use crate::http::{Cors, Method, Request, Response};
use crate::server::Site;
use crate::socketio;

/// Builds the whole signalbox site for `config`.
pub fn site(config: &Config) -> Site {
    let io = socketio::Server::new(config.socketio.clone());
    io.of("/");
    let engine = Engine::new(config.engine.clone(), io.handler());
    Site::new(Cors::new(config.cors_origins.clone()), config.http.clone())
        .mount(&config.path, engine)
        .pages(pages)
}

fn pages(request: &Request) -> Option<Response> {
    let body = match request.path.as_str() {
        "/" => serde_json::json!({
            "status": "WebRTC Signaling Server Running",
            "connectedUsers": 0,
            "activeCalls": 0,
            "timestamp": crate::timestamp::iso8601(SystemTime::now()),
        }),
        "/users" => serde_json::json!({ "connectedUsers": [], "totalUsers": 0 }),
        _ => return None,
    };
    Some(match request.method {
        Method::Get | Method::Head => Response::json(200, body.to_string()),
        _ => Response::error(405).header("Allow", "GET, HEAD, OPTIONS"),
    })
}
