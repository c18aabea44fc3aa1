//! A push subscription as a browser gives it, checked; and which push
//! services may be contacted at all.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The longest endpoint URL kept (FCM's are about 200 bytes).
pub const MAX_ENDPOINT_BYTES: usize = 1024;

/// A device's push subscription: where its push service takes messages
/// for it, and the keys its messages are encrypted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// The push service's URL for this subscription.
    pub endpoint: String,
    /// Where that is, parsed.
    #[serde(skip)]
    pub target: Endpoint,
    /// The subscription's P-256 public key, uncompressed (65 bytes).
    #[serde(skip)]
    pub p256dh: Vec<u8>,
    /// Its authentication secret (16 bytes).
    #[serde(skip)]
    pub auth: Vec<u8>,
    /// The keys as the browser wrote them, for storing it again.
    pub keys: Keys,
}

/// `keys` of `PushSubscription.toJSON()`, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    /// The P-256 public key.
    pub p256dh: String,
    /// The authentication secret.
    pub auth: String,
}

#[derive(Deserialize)]
struct Wire {
    endpoint: String,
    keys: Keys,
}

/// Why a subscription is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionError {
    /// Not the shape of `PushSubscription.toJSON()`.
    Shape(String),
    /// The endpoint is not a URL signalbox can post to.
    Endpoint(&'static str),
    /// A key of the wrong size or encoding.
    Key(&'static str),
    /// The endpoint is not allowed (see [`Policy`]).
    NotAllowed(String),
}

impl fmt::Display for SubscriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionError::Shape(why) => write!(f, "invalid subscription: {why}"),
            SubscriptionError::Endpoint(why) => write!(f, "invalid subscription endpoint: {why}"),
            SubscriptionError::Key(why) => write!(f, "invalid subscription key: {why}"),
            SubscriptionError::NotAllowed(why) => write!(f, "push endpoint not allowed: {why}"),
        }
    }
}

impl std::error::Error for SubscriptionError {}

impl Subscription {
    /// Reads `PushSubscription.toJSON()`'s JSON (`endpoint`,
    /// `keys.p256dh`, `keys.auth`; other fields are ignored).
    pub fn parse(json: &str) -> Result<Subscription, SubscriptionError> {
        let wire: Wire = serde_json::from_str(json).map_err(|e| {
            SubscriptionError::Shape(crate::signaling::protocol::without_position(&e))
        })?;
        Subscription::new(wire.endpoint, wire.keys)
    }

    /// A subscription from its parts, checked.
    pub fn new(endpoint: String, keys: Keys) -> Result<Subscription, SubscriptionError> {
        let target = Endpoint::parse(&endpoint).map_err(SubscriptionError::Endpoint)?;
        let p256dh = crate::base64::decode_url(&keys.p256dh)
            .ok()
            .filter(|k| k.len() == 65 && k[0] == 4)
            .ok_or(SubscriptionError::Key(
                "p256dh must be a 65-byte uncompressed P-256 point, base64url",
            ))?;
        let auth = crate::base64::decode_url(&keys.auth)
            .ok()
            .filter(|k| k.len() == 16)
            .ok_or(SubscriptionError::Key("auth must be 16 bytes, base64url"))?;
        Ok(Subscription {
            endpoint,
            target,
            p256dh,
            auth,
            keys,
        })
    }
}

/// A push service's URL, as far as a POST needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// `https` (true) or `http`.
    pub secure: bool,
    /// The host: a name, or an address (IPv6 without brackets).
    pub host: String,
    /// The port, given or the scheme's.
    pub port: u16,
    /// The path and query, from the first `/`.
    pub path: String,
}

impl Endpoint {
    /// Reads an `http(s)://host[:port]/path` URL.
    pub fn parse(url: &str) -> Result<Endpoint, &'static str> {
        if url.len() > MAX_ENDPOINT_BYTES {
            return Err("longer than 1024 bytes");
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("it holds spaces or control characters");
        }
        let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("expected an https:// or http:// URL");
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("no user or password in it");
        }
        let (host, port) = crate::http::split_host_port(authority)?;
        if host.is_empty() {
            return Err("no host");
        }
        let port = match port {
            None => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(port) => port.parse().map_err(|_| "a port that is not a number")?,
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Endpoint {
            secure,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// `scheme://host[:port]`: the VAPID `aud`.
    pub fn origin(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        let default = if self.secure { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }
}

/// Which push services may be contacted: any on https at a public
/// address; over http, or at a private, loopback or link-local address,
/// only those listed (`--push-allow HOST`, a LAN distributor such as
/// ntfy). A name is checked again once resolved, so that a name that
/// points inside the network is no way around it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allowed: Vec<String>,
}

impl Policy {
    /// The policy with `hosts` listed (names or addresses, any case).
    pub fn new(hosts: impl IntoIterator<Item = String>) -> Policy {
        let allowed = hosts
            .into_iter()
            .map(|host| host.trim_matches(['[', ']']).to_ascii_lowercase())
            .collect();
        Policy { allowed }
    }

    fn listed(&self, host: &str) -> bool {
        self.allowed.iter().any(|allowed| allowed == host)
    }

    /// Whether `endpoint` may be posted to, as far as its URL tells.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), SubscriptionError> {
        if self.listed(&endpoint.host) {
            return Ok(());
        }
        if !endpoint.secure {
            return Err(SubscriptionError::NotAllowed(format!(
                "{} is http, and not listed with --push-allow",
                endpoint.host
            )));
        }
        match endpoint.host.parse::<IpAddr>() {
            Ok(address) => self.check_address(&endpoint.host, address),
            Err(_) => Ok(()),
        }
    }

    /// Whether `host`, resolved to `address`, may be posted to.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), SubscriptionError> {
        if self.listed(host) || !inside(address) {
            return Ok(());
        }
        Err(SubscriptionError::NotAllowed(format!(
            "{host} is at {address}, a private, loopback or link-local address not listed with --push-allow"
        )))
    }
}

/// Whether an address is not on the internet: loopback, link-local,
/// private (RFC 1918, unique local), unspecified, multicast, or carrier NAT.
fn inside(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return inside(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xffc0) == 0xfe80
                || (first & 0xfe00) == 0xfc00
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn subscription(endpoint: &str) -> Result<Subscription, SubscriptionError> {
        Subscription::parse(&format!(
            r#"{{"endpoint":"{endpoint}","expirationTime":null,"keys":{{"p256dh":"{P256DH}","auth":"{AUTH}"}}}}"#
        ))
    }

    #[test]
    fn subscriptions_are_read_as_browsers_write_them() {
        let s = subscription("https://fcm.googleapis.com/fcm/send/abc:def").unwrap();
        assert_eq!((s.p256dh.len(), s.auth.len()), (65, 16));
        assert_eq!(s.target.host, "fcm.googleapis.com");
        assert_eq!(
            (s.target.port, s.target.path.as_str()),
            (443, "/fcm/send/abc:def")
        );
        assert_eq!(s.target.origin(), "https://fcm.googleapis.com");
        for (bad, why) in [
            (r#"{"endpoint":"https://x/y"}"#, "missing field `keys`"),
            (r#"[1]"#, "invalid type"),
        ] {
            let error = Subscription::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let short = Keys {
            p256dh: "BAAA".into(),
            auth: AUTH.into(),
        };
        assert!(matches!(
            Subscription::new("https://x/y".into(), short),
            Err(SubscriptionError::Key(_))
        ));
        let bad_auth = Keys {
            p256dh: P256DH.into(),
            auth: "!!".into(),
        };
        assert!(Subscription::new("https://x/y".into(), bad_auth).is_err());
    }

    #[test]
    fn endpoints_are_parsed_strictly() {
        let e = Endpoint::parse("http://[fd00::5]:2586/up123?x=1").unwrap();
        assert_eq!(
            (e.secure, e.host.as_str(), e.port, e.path.as_str()),
            (false, "fd00::5", 2586, "/up123?x=1")
        );
        assert_eq!(e.origin(), "http://[fd00::5]:2586");
        assert_eq!(Endpoint::parse("https://Push.LAN").unwrap().path, "/");
        assert_eq!(Endpoint::parse("https://h?q").unwrap().path, "/?q");
        for bad in [
            "ftp://x/",
            "https://",
            "https://u:p@x/",
            "https://x:port/",
            "https://x:99999/",
            "https://x/a b",
            "https://[::1/",
            "https://x/\n",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::parse(&format!("https://x/{}", "a".repeat(1100))).is_err());
    }

    #[test]
    fn only_public_https_unless_listed() {
        let policy = Policy::new(["ntfy.lan".to_owned(), "[fd00::5]".to_owned()]);
        let check = |url: &str| policy.check(&Endpoint::parse(url).unwrap());
        assert!(check("https://updates.push.services.mozilla.com/wpush/v2/x").is_ok());
        assert!(check("http://ntfy.lan/up1").is_ok(), "listed");
        assert!(check("http://[fd00::5]:2586/up1").is_ok(), "listed");
        for refused in [
            "http://push.example.com/x",
            "https://127.0.0.1/x",
            "https://10.0.0.7/x",
            "https://192.168.1.9/x",
            "https://169.254.1.1/x",
            "https://[::1]/x",
            "https://[fe80::1]/x",
            "https://[fd12::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
        ] {
            let error = check(refused).unwrap_err().to_string();
            assert!(
                error.starts_with("push endpoint not allowed"),
                "{refused}: {error}"
            );
        }
        // A name is allowed by its URL, and checked again once resolved.
        assert!(check("https://sneaky.example/x").is_ok());
        let resolved = policy.check_address("sneaky.example", "127.0.0.1".parse().unwrap());
        assert!(resolved.is_err());
        assert!(
            policy
                .check_address("ntfy.lan", "192.168.1.2".parse().unwrap())
                .is_ok()
        );
        assert!(
            policy
                .check_address("push.example", "203.0.113.9".parse().unwrap())
                .is_ok()
        );
    }
}
