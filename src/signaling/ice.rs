//! The ICE servers handed to each client after it registers, with
//! short-lived TURN credentials in the coturn REST API scheme
//! (`use-auth-secret`): username `<expiry unix time>:<user>`, credential
//! base64(HMAC-SHA1(secret, username)). No static TURN password sits in an app.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha1::Sha1;

/// What to tell clients about STUN and TURN.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// Server URLs such as `stun:stun.example.org:3478` or
    /// `turn:turn.example.org:3478?transport=udp`.
    pub urls: Vec<String>,
    /// The secret shared with coturn; without it TURN URLs get no credentials.
    pub turn_secret: Option<String>,
    /// How long minted credentials stay valid.
    pub turn_ttl: Duration,
}

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// One URL from the configured list (a single string, not an array).
    pub urls: String,
    /// The TURN username, when credentials apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// base64(HMAC-SHA1(secret, username)), for TURN URLs when a secret is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The payload of the `ice_servers` event: `{iceServers: [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServers {
    /// The servers, ready for `new RTCPeerConnection({iceServers})`.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

/// The coturn REST API credential for `username`.
///
/// ```
/// use signalbox::signaling::ice::turn_credential;
/// // echo -n "1700000000:alice" | openssl dgst -sha1 -hmac "north-gate-secret" -binary | base64
/// assert_eq!(turn_credential("north-gate-secret", "1700000000:alice"), "642dp6NcauD2vsLWPaeZstav8F0=");
/// ```
pub fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(username.as_bytes());
    let mut out = String::new();
    crate::base64::encode_into(&mac.finalize().into_bytes(), &mut out);
    out
}

impl IceConfig {
    /// The servers for `user` at `now_unix` (seconds since the epoch).
    pub fn servers_for(&self, user: &str, now_unix: u64) -> IceServers {
        let ice_servers = self
            .urls
            .iter()
            .map(|url| {
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                match (&self.turn_secret, turn) {
                    (Some(secret), true) => {
                        let expiry = now_unix + self.turn_ttl.as_secs();
                        let username = format!("{expiry}:{user}");
                        IceServer {
                            urls: url.clone(),
                            credential: Some(turn_credential(secret, &username)),
                            username: Some(username),
                        }
                    }
                    _ => IceServer {
                        urls: url.clone(),
                        username: None,
                        credential: None,
                    },
                }
            })
            .collect();
        IceServers { ice_servers }
    }
}

/// Checks an ICE server URL's scheme.
///
/// ```
/// use signalbox::signaling::ice::parse_ice_url;
/// assert!(parse_ice_url("stun:stun.example.org:3478").is_ok());
/// assert!(parse_ice_url("turns:turn.example.org:5349?transport=tcp").is_ok());
/// assert!(parse_ice_url("http://example.org").is_err());
/// ```
pub fn parse_ice_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let known = ["stun:", "stuns:", "turn:", "turns:"];
    if known.iter().any(|p| text.starts_with(p))
        && text.len() > 6
        && !text.contains(char::is_whitespace)
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid ICE server {text:?}: expected stun:, stuns:, turn: or turns: and a host"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_an_independent_vector() {
        // Computed with: echo -n "1700086400:bob" | openssl dgst -sha1 -hmac "s3cret" -binary | base64
        assert_eq!(
            turn_credential("s3cret", "1700086400:bob"),
            "hh5nfI3KpobvjZcuf5nGuIxPzLM="
        );
    }

    #[test]
    fn turn_urls_get_credentials_and_stun_urls_do_not() {
        let config = IceConfig {
            urls: vec![
                "stun:stun.example.org:3478".into(),
                "turn:turn.example.org:3478?transport=udp".into(),
            ],
            turn_secret: Some("north-gate-secret".into()),
            turn_ttl: Duration::from_secs(86_400),
        };
        let servers = config.servers_for("alice", 1_699_913_600);
        assert_eq!(
            serde_json::to_value(&servers).unwrap(),
            serde_json::json!({"iceServers": [
                {"urls": "stun:stun.example.org:3478"},
                {"urls": "turn:turn.example.org:3478?transport=udp",
                 "username": "1700000000:alice",
                 "credential": "642dp6NcauD2vsLWPaeZstav8F0="}
            ]})
        );
        let without_secret = IceConfig {
            turn_secret: None,
            ..config
        };
        let servers = without_secret.servers_for("alice", 0);
        assert!(servers.ice_servers.iter().all(|s| s.username.is_none()));
    }
}
