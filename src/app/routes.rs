//! Every route the intercom answers besides the Socket.IO endpoint, in one
//! table, and the pages behind them.

use serde_json::json;

use super::Intercom;
use crate::http::{Method, Request, Response};
use crate::server::Answer;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `GET /`: the seed's health JSON.
    Health,
    /// `GET /users`: the seed's list of users online.
    Users,
    /// `GET /healthz`: `ok`, for load balancers.
    Alive,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `/app`, `/app/…`: the intercom page and its files.
    Page,
}

/// The table: exact paths, then the page's prefix.
const ROUTES: &[(&str, Route)] = &[
    ("/", Route::Health),
    ("/users", Route::Users),
    ("/healthz", Route::Alive),
    ("/metrics", Route::Metrics),
];

/// The prefix of the intercom page's paths.
const PAGE: &str = "/app";

fn route(path: &str) -> Option<Route> {
    ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, route)| *route)
        .or_else(|| path.starts_with(PAGE).then_some(Route::Page))
}

impl Intercom {
    /// The answer to `request`; `None` for a path the table lacks (404).
    pub(super) fn answer(&self, request: &Request) -> Option<Answer> {
        let route = route(&request.path)?;
        // The page answers its own methods.
        if route != Route::Page && !matches!(request.method, Method::Get | Method::Head) {
            return Some(
                Response::error(405)
                    .header("Allow", "GET, HEAD, OPTIONS")
                    .into(),
            );
        }
        let response = match route {
            Route::Page => return self.page.answer(request).map(Answer::from),
            Route::Health | Route::Users if self.cluster().is_some() => {
                let intercom = self.clone();
                return Some(Answer::Later(Box::pin(async move {
                    intercom.cluster_page(route).await
                })));
            }
            Route::Health => {
                let hub = self.signaling.hub();
                Response::json(200, health(hub.user_count(), hub.call_count()))
            }
            Route::Users => {
                let hub = self.signaling.hub();
                Response::json(200, users_page(&hub.users()))
            }
            Route::Alive => Response::text(200, "ok\n"),
            Route::Metrics => Response::new(200)
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .body(self.metrics().into_bytes()),
        };
        Some(response.into())
    }

    /// `GET /` or `GET /users` for the whole cluster, from Redis.
    async fn cluster_page(&self, route: Route) -> Response {
        let Some(cluster) = self.cluster() else {
            return Response::error(404);
        };
        match cluster.overview().await {
            Ok(overview) if route == Route::Users => {
                Response::json(200, users_page(&overview.users))
            }
            Ok(overview) => Response::json(200, health(overview.users.len(), overview.calls)),
            Err(error) => {
                log::warn!("cluster overview: {error}");
                let body = json!({ "error": format!("cluster state unavailable: {error}") });
                Response::json(503, body.to_string())
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_table() {
        assert_eq!(route("/"), Some(Route::Health));
        assert_eq!(route("/users"), Some(Route::Users));
        assert_eq!(route("/healthz"), Some(Route::Alive));
        assert_eq!(route("/metrics"), Some(Route::Metrics));
        assert_eq!(route("/app"), Some(Route::Page));
        assert_eq!(route("/app/app.js"), Some(Route::Page));
        assert_eq!(route("/users/"), None);
        assert_eq!(route("/nope"), None);
    }
}
