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
    /// `GET /directory`: the directory's groups, their members, who is
    /// online (an admin token when tokens are on).
    Directory,
    /// `GET /push/vapid-public-key`: the key browsers subscribe with
    /// (`applicationServerKey`), base64url, as text.
    VapidPublicKey,
    /// `/app`, `/app/…`: the intercom page and its files.
    Page,
}

/// The table: exact paths, then the page's prefix.
const ROUTES: &[(&str, Route)] = &[
    ("/", Route::Health),
    ("/users", Route::Users),
    ("/healthz", Route::Alive),
    ("/metrics", Route::Metrics),
    ("/directory", Route::Directory),
    ("/push/vapid-public-key", Route::VapidPublicKey),
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
        if route == Route::Directory
            && let Some(refusal) = self.admin_refusal(request)
        {
            return Some(refusal.into());
        }
        let response = match route {
            Route::Page => return self.page.answer(request).map(Answer::from),
            Route::Directory if self.cluster().is_some() => {
                let intercom = self.clone();
                return Some(Answer::Later(Box::pin(async move {
                    intercom.cluster_page(route).await
                })));
            }
            Route::Directory => {
                let hub = self.signaling.hub();
                let online = |user: &str| hub.socket_of(user).is_some();
                let body = directory_page(hub.directory(), &online, &|user| {
                    (hub.device_count(user), hub.is_dnd(user))
                });
                Response::json(200, body)
            }
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
            Route::VapidPublicKey => Response::text(200, self.signaling.vapid_public_key()),
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
            Ok(overview) if route == Route::Directory => {
                let hub = self.signaling.hub();
                let online = |user: &str| overview.users.iter().any(|u| u.as_str() == user);
                // Devices and do-not-disturb as this node knows them.
                let body = directory_page(hub.directory(), &online, &|user| {
                    (hub.device_count(user), hub.is_dnd(user))
                });
                Response::json(200, body)
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

impl Intercom {
    /// Why `request` may not see the installer's pages: with tokens on,
    /// it needs `Authorization: Bearer <admin token>`.
    fn admin_refusal(&self, request: &Request) -> Option<Response> {
        let secret = self.config.signaling.auth_secret.as_ref()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = request
            .header("Authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let error = match token.map(|token| crate::auth::verify(secret, token, now)) {
            Some(Ok(user)) if user == crate::auth::ADMIN => return None,
            Some(Ok(_)) => "not an admin token".to_owned(),
            Some(Err(error)) => error.to_string(),
            None => "an admin token is needed: Authorization: Bearer <signalbox token --admin>"
                .to_owned(),
        };
        let body = json!({ "error": error }).to_string();
        Some(Response::json(401, body).header("WWW-Authenticate", "Bearer realm=\"signalbox\""))
    }
}

/// `GET /directory`: every group with its members as written, each with
/// whether it is online (a group member: whether any of its users is),
/// and for users their devices here and do-not-disturb.
fn directory_page(
    directory: &crate::signaling::directory::Directory,
    online: &dyn Fn(&str) -> bool,
    here: &dyn Fn(&str) -> (usize, bool),
) -> String {
    use crate::signaling::directory::Ring;
    let groups: Vec<serde_json::Value> = directory
        .groups()
        .into_iter()
        .map(|(name, group)| {
            let members: Vec<serde_json::Value> = group
                .members
                .iter()
                .map(|member| {
                    if directory.group(member).is_some() {
                        let online = directory.members_of(member).iter().any(|m| online(m));
                        json!({ "name": member, "group": true, "online": online })
                    } else {
                        let (devices, dnd) = here(member);
                        json!({ "name": member, "online": online(member), "devices": devices, "dnd": dnd })
                    }
                })
                .collect();
            let online = directory.members_of(name).iter().filter(|m| online(m)).count();
            let mut entry = json!({
                "name": name,
                "ring": match group.ring { Ring::All => "all", Ring::InOrder => "in-order" },
                "members": members,
                "online": online,
            });
            if group.ring == Ring::InOrder {
                entry["step"] = json!(format!("{}ms", group.step.as_millis()));
            }
            if let Some(forward) = &group.no_answer {
                entry["noAnswer"] = json!(forward.to);
                if let Some(after) = forward.after {
                    entry["noAnswerAfter"] = json!(format!("{}ms", after.as_millis()));
                }
            }
            entry
        })
        .collect();
    json!({ "totalGroups": groups.len(), "groups": groups }).to_string()
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
        assert_eq!(route("/directory"), Some(Route::Directory));
        assert_eq!(route("/push/vapid-public-key"), Some(Route::VapidPublicKey));
        assert_eq!(route("/app"), Some(Route::Page));
        assert_eq!(route("/app/app.js"), Some(Route::Page));
        assert_eq!(route("/users/"), None);
        assert_eq!(route("/nope"), None);
    }
}
