//! Every route the intercom answers besides the Socket.IO endpoint, in one
//! table, and the pages behind them.

use serde_json::json;

use super::Intercom;
use crate::http::{Method, Request, Response};
use crate::server::{Answer, Visitor};

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
    /// `GET /api/calls`: the call log, newest first (admin).
    ApiCalls,
    /// `GET /api/calls/live`: calls ringing and active (admin).
    ApiLive,
    /// `POST /api/users/NAME/disconnect`: sends a user's devices away (admin).
    ApiDisconnect,
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
    ("/api/calls", Route::ApiCalls),
    ("/api/calls/live", Route::ApiLive),
];

/// `/api/users/NAME/disconnect`: NAME.
fn disconnect_target(path: &str) -> Option<&str> {
    path.strip_prefix("/api/users/")?
        .strip_suffix("/disconnect")
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// The prefix of the intercom page's paths.
const PAGE: &str = "/app";

fn route(path: &str) -> Option<Route> {
    ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, route)| *route)
        .or_else(|| path.starts_with(PAGE).then_some(Route::Page))
        .or_else(|| disconnect_target(path).map(|_| Route::ApiDisconnect))
}

impl Intercom {
    /// The answer to `request`; `None` for a path the table lacks (404).
    pub(super) fn answer(&self, request: &Request, visitor: &Visitor) -> Option<Answer> {
        let route = route(&request.path)?;
        // The page answers its own methods.
        let allowed = match route {
            Route::Page => true,
            Route::ApiDisconnect => request.method == Method::Post,
            _ => matches!(request.method, Method::Get | Method::Head),
        };
        if !allowed {
            let allow = if route == Route::ApiDisconnect {
                "POST, OPTIONS"
            } else {
                "GET, HEAD, OPTIONS"
            };
            return Some(Response::error(405).header("Allow", allow).into());
        }
        let api = matches!(
            route,
            Route::ApiCalls | Route::ApiLive | Route::ApiDisconnect
        );
        if (route == Route::Directory || api)
            && let Some(refusal) = self.admin_refusal(request, visitor, api)
        {
            return Some(refusal.into());
        }
        let response = match route {
            Route::ApiCalls => return Some(self.api_calls(request)),
            Route::ApiLive => {
                let calls = self.signaling.hub().live_calls();
                Response::json(200, json!({ "calls": calls }).to_string())
            }
            Route::ApiDisconnect => {
                let user = disconnect_target(&request.path).unwrap_or_default();
                return Some(self.api_disconnect(user, visitor.body));
            }
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
    /// it needs `Authorization: Bearer <admin token>`; without, the admin
    /// API (`api`) is served only to loopback.
    fn admin_refusal(&self, request: &Request, visitor: &Visitor, api: bool) -> Option<Response> {
        let Some(secret) = self.config.signaling.auth_secret.as_ref() else {
            if api && !visitor.address.is_loopback() {
                let error = "the admin API is served only on loopback without --auth-secret-file";
                return Some(Response::json(403, json!({ "error": error }).to_string()));
            }
            return None;
        };
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

/// The most records `GET /api/calls` gives at once.
const MAX_PAGE: usize = 500;

impl Intercom {
    /// `GET /api/calls?user=&group=&since=&until=&limit=&offset=`: the
    /// call log, newest first, read on a blocking thread.
    fn api_calls(&self, request: &Request) -> Answer {
        let Some(log) = self.signaling.call_log() else {
            let error = "no call log: start the server with --state-dir";
            return Response::json(404, json!({ "error": error }).to_string()).into();
        };
        let filter = match CallFilter::parse(&request.query) {
            Ok(filter) => filter,
            Err(error) => return Response::json(400, json!({ "error": error }).to_string()).into(),
        };
        let files = log.files().clone();
        Answer::Later(Box::pin(async move {
            let lines = smol::unblock(move || files.read_all()).await;
            match lines {
                Ok(lines) => Response::json(200, filter.page(&lines).to_string()),
                Err(error) => {
                    let error = format!("cannot read the call log: {error}");
                    Response::json(500, json!({ "error": error }).to_string())
                }
            }
        }))
    }

    /// `POST /api/users/NAME/disconnect` with `{"reason": "…"}` (optional):
    /// every device of NAME hears `force_disconnect {reason}` and goes (on
    /// several nodes, through the node they are on).
    fn api_disconnect(&self, user: &str, body: &[u8]) -> Answer {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default)]
            reason: Option<String>,
        }
        let reason = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<Body>(body) {
                Ok(body) => body.reason,
                Err(error) => {
                    let error = format!("expected {{\"reason\": \"…\"}}: {error}");
                    return Response::json(400, json!({ "error": error }).to_string()).into();
                }
            }
        };
        let reason = reason.unwrap_or_else(|| "disconnected by the administrator".to_owned());
        if reason.is_empty() || reason.len() > 200 {
            let error = "reason: 1 to 200 bytes";
            return Response::json(400, json!({ "error": error }).to_string()).into();
        }
        let reason: std::rc::Rc<str> = reason.into();
        let offline = || {
            let error = "no such user online";
            Response::json(404, json!({ "error": error }).to_string())
        };
        match (self.signaling.kick(user, reason.clone()), self.cluster()) {
            (0, None) => offline().into(),
            (0, Some(cluster)) => {
                let message = crate::signaling::peer::PeerMessage::SendAway {
                    user: user.into(),
                    reason,
                };
                let delivered = cluster.deliver(&message);
                Answer::Later(Box::pin(async move {
                    match delivered.await {
                        Ok(true) => Response::json(200, json!({ "ok": true }).to_string()),
                        Ok(false) => offline(),
                        Err(error) => {
                            let body = json!({ "error": format!("cluster unavailable: {error}") });
                            Response::json(503, body.to_string())
                        }
                    }
                }))
            }
            (devices, _) => {
                let body = json!({ "ok": true, "devices": devices });
                Response::json(200, body.to_string()).into()
            }
        }
    }
}

/// What `GET /api/calls` keeps of the log, and which page of it.
#[derive(Debug, Default, PartialEq, Eq)]
struct CallFilter {
    user: Option<String>,
    group: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: usize,
    offset: usize,
}

impl CallFilter {
    fn parse(query: &str) -> Result<CallFilter, String> {
        let mut filter = CallFilter {
            limit: 50,
            ..CallFilter::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = crate::http::percent_decode(value)
                .ok_or_else(|| format!("{key}: bad percent-encoding"))?;
            let number = |value: &str| {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{key} must be a number"))
            };
            match key {
                "user" => filter.user = Some(value),
                "group" => filter.group = Some(value),
                "since" => filter.since = Some(time(key, &value)?),
                "until" => filter.until = Some(time(key, &value)?),
                "limit" => filter.limit = number(&value)?.clamp(1, MAX_PAGE),
                "offset" => filter.offset = number(&value)?,
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?}: use user, group, since, until, limit, offset"
                    ));
                }
            }
        }
        Ok(filter)
    }

    fn keeps(&self, record: &serde_json::Value) -> bool {
        let text = |field: &str| record.get(field).and_then(|v| v.as_str());
        if let Some(user) = &self.user {
            let named = ["caller", "called", "answered_by"]
                .iter()
                .any(|field| text(field) == Some(user))
                || record
                    .get("rang")
                    .and_then(|r| r.as_array())
                    .is_some_and(|rang| rang.iter().any(|u| u.as_str() == Some(user)));
            if !named {
                return false;
            }
        }
        if let Some(group) = &self.group
            && text("group") != Some(group)
        {
            return false;
        }
        let started = text("started").unwrap_or_default();
        self.since.as_deref().is_none_or(|since| started >= since)
            && self.until.as_deref().is_none_or(|until| started < until)
    }

    /// The page of `lines` (newest first) this filter asks for.
    fn page(&self, lines: &[String]) -> serde_json::Value {
        let kept: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| self.keeps(record))
            .collect();
        let calls: Vec<&serde_json::Value> =
            kept.iter().skip(self.offset).take(self.limit).collect();
        json!({ "total": kept.len(), "offset": self.offset, "limit": self.limit, "calls": calls })
    }
}

/// An ISO 8601 UTC time as the log writes it (`2026-12-03T14:02:00.000Z`),
/// or a date (`2026-12-03`), to compare with the records' `started`.
fn time(key: &str, value: &str) -> Result<String, String> {
    let shape = value.len() >= 10
        && value.is_char_boundary(10)
        && value[..10].bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if shape
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-:.".contains(&b))
    {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{key} must be an ISO 8601 UTC time, like 2026-12-03T14:02:00Z"
        ))
    }
}

#[cfg(test)]
mod api_tests {
    use super::*;

    #[test]
    fn the_call_log_is_filtered_and_paged() {
        let lines: Vec<String> = [
            r#"{"call":"c3","caller":"door","called":"flat-12","group":"flat-12","rang":["anna","ben"],"started":"2026-12-03T14:00:00.000Z","outcome":"timeout"}"#,
            r#"{"call":"c2","caller":"anna","called":"ben","rang":["ben"],"started":"2026-12-02T10:00:00.000Z","outcome":"answered"}"#,
            r#"{"call":"c1","caller":"door","called":"carl","rang":["carl"],"started":"2026-12-01T09:00:00.000Z","outcome":"declined"}"#,
            "not json",
        ]
        .map(str::to_owned)
        .to_vec();
        let ids = |query: &str| -> Vec<String> {
            let page = CallFilter::parse(query).unwrap().page(&lines);
            page["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["call"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(""), ["c3", "c2", "c1"]);
        assert_eq!(ids("user=ben"), ["c3", "c2"]);
        assert_eq!(ids("group=flat-12"), ["c3"]);
        assert_eq!(ids("since=2026-12-02"), ["c3", "c2"]);
        assert_eq!(ids("until=2026-12-02T00:00:00Z"), ["c1"]);
        assert_eq!(ids("limit=1&offset=1"), ["c2"]);
        let page = CallFilter::parse("user=door&limit=1").unwrap().page(&lines);
        assert_eq!(
            (page["total"].as_u64(), page["limit"].as_u64()),
            (Some(2), Some(1))
        );
        for bad in ["limit=x", "since=yesterday", "color=red", "user=%zz"] {
            assert!(CallFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_disconnect_paths_name_a_user() {
        assert_eq!(
            disconnect_target("/api/users/flat-12/disconnect"),
            Some("flat-12")
        );
        assert_eq!(disconnect_target("/api/users//disconnect"), None);
        assert_eq!(disconnect_target("/api/users/a/b/disconnect"), None);
        assert_eq!(route("/api/users/x/disconnect"), Some(Route::ApiDisconnect));
        assert_eq!(route("/api/calls/live"), Some(Route::ApiLive));
    }
}
