//! The intercom's signaling service on top of Socket.IO: the seed's events,
//! presence and calls, and the HTTP pages.
//!
//! [`protocol`] types the events, [`calls`] and [`hub`] decide (no I/O, no
//! clock), [`service`] carries the decisions out on sockets and timers.

pub mod calls;
pub mod cluster;
pub mod hub;
pub mod ice;
pub mod limits;
pub mod peer;
pub mod protocol;
pub mod service;

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use smol::Timer;

use crate::config::Config;
use crate::engineio::Engine;
use crate::http::forwarded::Proxies;
use crate::http::{Cors, Method, Request, Response};
use crate::metrics;
use crate::server::{Activity, Answer, Site};
use crate::socketio;
use service::Signaling;

/// The whole intercom: Socket.IO with signaling on it, and its pages.
#[derive(Clone)]
pub struct Intercom {
    config: Config,
    io: socketio::Server,
    engine: Engine,
    signaling: Rc<Signaling>,
    page: crate::web::Page,
}

impl Intercom {
    /// Sets up signaling for `config` on this thread, as a single node.
    pub fn new(config: &Config) -> Intercom {
        Intercom::with_cluster(config, None)
    }

    /// Sets up signaling for `config` on this thread, as one node of a
    /// cluster when given its link.
    pub fn with_cluster(config: &Config, cluster: Option<service::ClusterLink>) -> Intercom {
        let io = socketio::Server::new(config.socketio.clone());
        let signaling = Signaling::install(&io, config, cluster);
        let engine = Engine::new(config.engine.clone(), io.handler());
        Intercom {
            config: config.clone(),
            io,
            engine,
            signaling,
            page: crate::web::Page::new(&config.path),
        }
    }

    /// The site that serves it: the Socket.IO endpoint and the pages.
    pub fn site(&self) -> Site {
        let intercom = self.clone();
        Site::new(
            Cors::new(self.config.cors_origins.clone()),
            self.config.http.clone(),
        )
        .trust(Proxies::new(self.config.trusted_proxies.iter().copied()))
        .mount(&self.config.path, self.engine.clone())
        .pages(move |request| intercom.page(request))
    }

    /// One line on what the server is doing, for `systemctl status`.
    pub fn status(&self) -> String {
        let hub = self.signaling.hub();
        format!(
            "{} users, {} calls, {} sessions",
            hub.user_count(),
            hub.call_count(),
            self.engine.session_count()
        )
    }

    /// Ends every call (reason `server_shutdown`), closes every session once
    /// what is queued for it went out, and waits for them to go, up to the
    /// shutdown timeout.
    /// `activity` is the site's, whose last answers are waited for too.
    pub async fn shutdown(&self, activity: &Activity) {
        self.signaling.end_all_calls();
        self.engine.close_all();
        let deadline = Instant::now() + self.config.shutdown_timeout;
        while (self.engine.session_count() > 0 || !activity.is_idle()) && Instant::now() < deadline
        {
            Timer::after(Duration::from_millis(20)).await;
        }
        let left = self.engine.session_count();
        if left > 0 {
            log::warn!("{left} sessions still open at the shutdown timeout");
        }
        if let Some(cluster) = self.signaling.cluster() {
            // The other nodes must hear that our users and calls are gone.
            cluster.flush(Duration::from_secs(2)).await;
        }
    }

    fn page(&self, request: &Request) -> Option<Answer> {
        if request.path.starts_with("/app") {
            return self.page.answer(request).map(Answer::from);
        }
        let path = request.path.as_str();
        if !matches!(path, "/" | "/users" | "/healthz" | "/metrics") {
            return None;
        }
        if !matches!(request.method, Method::Get | Method::Head) {
            return Some(
                Response::error(405)
                    .header("Allow", "GET, HEAD, OPTIONS")
                    .into(),
            );
        }
        if matches!(path, "/" | "/users") && self.signaling.cluster().is_some() {
            let intercom = self.clone();
            let users = path == "/users";
            return Some(Answer::Later(Box::pin(async move {
                intercom.cluster_page(users).await
            })));
        }
        let response = match path {
            "/" => {
                let hub = self.signaling.hub();
                Response::json(200, health(hub.user_count(), hub.call_count()))
            }
            "/users" => {
                let hub = self.signaling.hub();
                Response::json(200, users_page(&hub.users()))
            }
            "/healthz" => Response::text(200, "ok\n"),
            _ => Response::new(200)
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .body(self.metrics().into_bytes()),
        };
        Some(response.into())
    }

    /// `GET /` or `GET /users` for the whole cluster, from Redis.
    async fn cluster_page(&self, users: bool) -> Response {
        let Some(cluster) = self.signaling.cluster() else {
            return Response::error(404);
        };
        match cluster.overview().await {
            Ok(overview) if users => Response::json(200, users_page(&overview.users)),
            Ok(overview) => Response::json(200, health(overview.users.len(), overview.calls)),
            Err(error) => {
                log::warn!("cluster overview: {error}");
                let body = json!({ "error": format!("cluster state unavailable: {error}") });
                Response::json(503, body.to_string())
            }
        }
    }

    /// The Prometheus metrics page.
    pub fn metrics(&self) -> String {
        let hub = self.signaling.hub();
        let engine = self.engine.stats();
        let events = self.io.stats();
        let totals = hub.totals();
        let ringing = hub.ringing_count();
        let mut page = metrics::Page::default();
        page.single(
            "signalbox_connected_users",
            "gauge",
            "Users registered now.",
            hub.user_count(),
        )
        .family(
            "signalbox_sessions",
            "gauge",
            "Engine.IO sessions open now, by transport.",
        )
        .sample(
            "signalbox_sessions",
            r#"transport="polling""#,
            engine.polling,
        )
        .sample(
            "signalbox_sessions",
            r#"transport="websocket""#,
            engine.websocket,
        )
        .family("signalbox_calls", "gauge", "Calls in progress, by state.")
        .sample("signalbox_calls", r#"state="ringing""#, ringing)
        .sample(
            "signalbox_calls",
            r#"state="active""#,
            hub.call_count() - ringing,
        )
        .family(
            "signalbox_calls_total",
            "counter",
            "Calls since start, by outcome.",
        );
        for (outcome, count) in [
            ("answered", totals.answered),
            ("declined", totals.declined),
            ("timeout", totals.timeout),
            ("busy", totals.busy),
            ("failed", totals.failed),
        ] {
            page.sample(
                "signalbox_calls_total",
                &format!(r#"outcome="{outcome}""#),
                count,
            );
        }
        page.single(
            "signalbox_events_received_total",
            "counter",
            "Socket.IO events received from clients.",
            events.events_received,
        )
        .single(
            "signalbox_events_sent_total",
            "counter",
            "Socket.IO events sent to clients.",
            events.events_sent,
        )
        .single(
            "signalbox_bytes_received_total",
            "counter",
            "Engine.IO payload bytes received.",
            engine.bytes_received,
        )
        .single(
            "signalbox_bytes_sent_total",
            "counter",
            "Engine.IO payload bytes sent.",
            engine.bytes_sent,
        )
        .single(
            "signalbox_bytes_pending",
            "gauge",
            "Bytes queued for clients, or waiting for the rest of their message, now.",
            engine.bytes_pending,
        );
        if let Some(cluster) = self.signaling.cluster() {
            let stats = cluster.stats();
            page.single(
                "signalbox_cluster_up",
                "gauge",
                "1 while this node is subscribed to its Redis channel.",
                u64::from(stats.up),
            )
            .single(
                "signalbox_cluster_commands_total",
                "counter",
                "Commands sent to Redis.",
                stats.sent,
            )
            .single(
                "signalbox_cluster_messages_received_total",
                "counter",
                "Messages received from other nodes.",
                stats.received,
            )
            .single(
                "signalbox_cluster_failed_batches_total",
                "counter",
                "Batches of commands Redis did not answer.",
                stats.failed_batches,
            )
            .single(
                "signalbox_cluster_dropped_messages_total",
                "counter",
                "Messages for other nodes dropped while Redis lagged.",
                stats.dropped,
            );
        }
        page.family("signalbox_build_info", "gauge", "The running version.")
            .sample(
                "signalbox_build_info",
                &format!(r#"version="{}""#, env!("CARGO_PKG_VERSION")),
                1,
            )
            .process();
        page.finish()
    }
}

/// The seed's health JSON, keys in the seed's order.
fn health(users: usize, calls: usize) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Health {
        status: &'static str,
        connected_users: usize,
        active_calls: usize,
        timestamp: String,
    }
    let health = Health {
        status: "WebRTC Signaling Server Running",
        connected_users: users,
        active_calls: calls,
        timestamp: crate::timestamp::now(),
    };
    serde_json::to_string(&health).unwrap_or_default()
}

/// The seed's `GET /users` JSON.
fn users_page<S: AsRef<str>>(users: &[S]) -> String {
    let users: Vec<&str> = users.iter().map(AsRef::as_ref).collect();
    json!({ "connectedUsers": users, "totalUsers": users.len() }).to_string()
}

/// Builds the whole signalbox site for `config`.
pub fn site(config: &Config) -> Site {
    Intercom::new(config).site()
}
