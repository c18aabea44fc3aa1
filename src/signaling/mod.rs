//! The intercom's signaling service on top of Socket.IO: the seed's events,
//! presence and calls, and the REST pages.
//!
//! [`protocol`] types the events, [`calls`] and [`hub`] decide (no I/O, no
//! clock), [`service`] carries the decisions out on sockets and timers.

pub mod calls;
pub mod hub;
pub mod protocol;
pub mod service;

use std::rc::Rc;

use serde_json::json;

use crate::config::Config;
use crate::engineio::Engine;
use crate::http::{Cors, Method, Request, Response};
use crate::server::Site;
use crate::socketio;
use service::Signaling;

/// Builds the whole signalbox site for `config`.
pub fn site(config: &Config) -> Site {
    let io = socketio::Server::new(config.socketio.clone());
    let signaling = Signaling::install(&io, config.call_timeout);
    let engine = Engine::new(config.engine.clone(), io.handler());
    Site::new(Cors::new(config.cors_origins.clone()), config.http.clone())
        .mount(&config.path, engine)
        .pages(move |request| pages(&signaling, request))
}

/// `GET /` (the seed's health JSON) and `GET /users`.
fn pages(signaling: &Rc<Signaling>, request: &Request) -> Option<Response> {
    let hub = signaling.hub();
    let body = match request.path.as_str() {
        "/" => json!({
            "status": "WebRTC Signaling Server Running",
            "connectedUsers": hub.user_count(),
            "activeCalls": hub.call_count(),
            "timestamp": crate::timestamp::now(),
        }),
        "/users" => {
            let users = hub.users();
            json!({ "connectedUsers": users, "totalUsers": users.len() })
        }
        _ => return None,
    };
    Some(match request.method {
        Method::Get | Method::Head => Response::json(200, body.to_string()),
        _ => Response::error(405).header("Allow", "GET, HEAD, OPTIONS"),
    })
}
