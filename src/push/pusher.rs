//! Delivering push messages: each one encrypted for its subscription,
//! signed with the server's VAPID key, posted by a task of its own (the
//! event loop never waits for a push service), and tried again after a
//! failure, a bounded number of times.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::crypto::VapidKey;
use super::send::{Connector, SendError};
use super::{Policy, PushMessage, Subscription};
use crate::logging::untrusted;

/// How many pushes may be in flight at once; past it, new ones are
/// dropped (and counted): a push service that hangs costs tasks, not
/// memory without bound.
pub const MAX_IN_FLIGHT: usize = 256;

/// The waits before each retry of a failed push: three more tries within
/// seven seconds, inside any call's ring time.
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a VAPID signature is good for (RFC 8292 allows up to 24 h).
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What became of a push, for the one who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The push service took it (2xx).
    Sent,
    /// The subscription is gone (404 or 410): forget it.
    Gone {
        /// Whose it was.
        user: Rc<str>,
        /// Its endpoint.
        endpoint: String,
    },
    /// Every attempt failed, or it could not be made.
    Failed,
}

/// Counts for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushTotals {
    /// Taken by a push service.
    pub sent: u64,
    /// Answered 404 or 410: subscriptions removed.
    pub gone: u64,
    /// Failed after every attempt, or refused by the policy.
    pub failed: u64,
    /// Dropped because too many were in flight.
    pub dropped: u64,
}

struct Inner {
    /// `None` only when the system gave no randomness to make one.
    key: Option<VapidKey>,
    contact: String,
    policy: Policy,
    connector: Connector,
    in_flight: Cell<usize>,
    totals: Cell<PushTotals>,
    done: Box<dyn Fn(Delivered)>,
}

/// Sends push messages; `done` hears what became of each.
#[derive(Clone)]
pub struct Pusher(Rc<Inner>);

impl Pusher {
    /// A pusher signing with `key`, naming `contact` (a `mailto:` or
    /// `https:` URL) to push services, posting only where `policy` allows.
    pub fn new(
        key: Option<VapidKey>,
        contact: String,
        policy: Policy,
        done: impl Fn(Delivered) + 'static,
    ) -> Pusher {
        Pusher(Rc::new(Inner {
            key,
            contact,
            policy,
            connector: Connector::new(),
            in_flight: Cell::new(0),
            totals: Cell::new(PushTotals::default()),
            done: Box::new(done),
        }))
    }

    /// The VAPID public key, base64url: the `applicationServerKey` of
    /// `pushManager.subscribe`.
    pub fn public_key(&self) -> String {
        self.0
            .key
            .as_ref()
            .map_or_else(String::new, VapidKey::public_key_base64url)
    }

    /// Where pushes may go.
    pub fn policy(&self) -> &Policy {
        &self.0.policy
    }

    /// What became of pushes since start.
    pub fn totals(&self) -> PushTotals {
        self.0.totals.get()
    }

    fn count(&self, add: impl FnOnce(&mut PushTotals)) {
        let mut totals = self.0.totals.get();
        add(&mut totals);
        self.0.totals.set(totals);
    }

    /// Pushes `message` to `user`'s `subscription`, to be kept by the
    /// push service for [`PushMessage::ttl`] of the ring time `ring`.
    pub fn push(
        &self,
        user: Rc<str>,
        subscription: Subscription,
        message: &PushMessage,
        ring: Duration,
    ) {
        if self.0.in_flight.get() >= MAX_IN_FLIGHT {
            self.count(|t| t.dropped += 1);
            log::warn!(
                "push to {}: dropped, {MAX_IN_FLIGHT} in flight",
                untrusted(&user)
            );
            return;
        }
        let plaintext = match serde_json::to_vec(message) {
            Ok(json) => json,
            Err(error) => {
                log::error!("push: cannot encode a message: {error}");
                return;
            }
        };
        let body =
            match super::crypto::encrypt(&subscription.p256dh, &subscription.auth, &plaintext) {
                Ok(body) => body,
                Err(error) => {
                    log::warn!("push to {}: cannot encrypt: {error}", untrusted(&user));
                    self.count(|t| t.failed += 1);
                    return;
                }
            };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let audience = subscription.target.origin();
        let Some(key) = &self.0.key else {
            self.count(|t| t.failed += 1);
            return;
        };
        let authorization =
            match key.authorization(&audience, &self.0.contact, now + VAPID_LIFETIME.as_secs()) {
                Ok(header) => header,
                Err(error) => {
                    log::error!("push: cannot sign: {error}");
                    self.count(|t| t.failed += 1);
                    return;
                }
            };
        let mut headers = vec![
            ("TTL", message.ttl(ring).as_secs().to_string()),
            ("Urgency", message.urgency().to_owned()),
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Content-Encoding", "aes128gcm".to_owned()),
            ("Authorization", authorization),
        ];
        if let Some(call) = message.topic() {
            headers.push(("Topic", topic(call)));
        }
        self.0.in_flight.set(self.0.in_flight.get() + 1);
        let pusher = self.clone();
        crate::rt::spawn(async move {
            let delivered = pusher.deliver(&user, &subscription, &headers, &body).await;
            pusher.0.in_flight.set(pusher.0.in_flight.get() - 1);
            (pusher.0.done)(delivered);
        })
        .detach();
    }

    async fn deliver(
        &self,
        user: &Rc<str>,
        subscription: &Subscription,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Delivered {
        let target = &subscription.target;
        let mut waits = RETRIES.iter();
        loop {
            let attempt = self
                .0
                .connector
                .post(target, &self.0.policy, headers, body, ATTEMPT_TIMEOUT)
                .await;
            let retry = match attempt {
                Ok(status) if (200..300).contains(&status) => {
                    self.count(|t| t.sent += 1);
                    log::debug!("push to {}: {status}", untrusted(user));
                    return Delivered::Sent;
                }
                Ok(404 | 410) => {
                    self.count(|t| t.gone += 1);
                    log::info!(
                        "push to {}: the subscription at {} is gone; removed",
                        untrusted(user),
                        untrusted(&target.host)
                    );
                    return Delivered::Gone {
                        user: user.clone(),
                        endpoint: subscription.endpoint.clone(),
                    };
                }
                // Too many requests, or the service's trouble: try again.
                Ok(status) if status == 429 || status >= 500 => format!("answered {status}"),
                Ok(status) => {
                    self.count(|t| t.failed += 1);
                    log::warn!(
                        "push to {} at {}: refused with {status}",
                        untrusted(user),
                        untrusted(&target.host)
                    );
                    return Delivered::Failed;
                }
                Err(SendError::NotAllowed(why)) => {
                    self.count(|t| t.failed += 1);
                    log::warn!("push to {}: {}", untrusted(user), untrusted(&why));
                    return Delivered::Failed;
                }
                Err(error) => error.to_string(),
            };
            let Some(wait) = waits.next() else {
                self.count(|t| t.failed += 1);
                log::warn!(
                    "push to {} at {}: gave up ({})",
                    untrusted(user),
                    untrusted(&target.host),
                    untrusted(&retry)
                );
                return Delivered::Failed;
            };
            log::debug!("push to {}: {retry}; again in {wait:?}", untrusted(user));
            smol::Timer::after(*wait).await;
        }
    }
}

/// A call's Topic: at most 32 characters of the base64url alphabet.
fn topic(call: &str) -> String {
    call.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_stay_in_the_alphabet_and_the_length() {
        assert_eq!(topic("c42"), "c42");
        assert_eq!(topic("a.b/c d"), "abcd");
        assert_eq!(topic(&"x".repeat(40)).len(), 32);
    }
}
