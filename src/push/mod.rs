//! Web Push: waking a phone whose app sleeps. A user's devices subscribe
//! (`register_push` with the browser's `PushSubscription.toJSON()`), and
//! when a call comes while none of them is connected, each subscription's
//! push service gets a small encrypted message (RFC 8030 delivery, RFC
//! 8291 encryption, RFC 8292 VAPID), the app wakes, registers, and gets
//! the call.
//!
//! [`crypto`] encrypts and signs, [`send`] makes one POST, [`Pusher`]
//! delivers with retries; what is subscribed, and when to push, is the
//! hub's to decide.

pub mod crypto;
pub mod send;

mod pusher;
pub mod subscription;

pub use pusher::{Delivered, PushTotals, Pusher};
pub use subscription::{Endpoint, Policy, Subscription, SubscriptionError};

use serde::Serialize;
use std::rc::Rc;
use std::time::Duration;

/// What a push tells an app: small JSON, encrypted end to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushMessage {
    /// `{type: "incoming_call", from, group?, call}`: register to take it.
    IncomingCall {
        /// The caller.
        from: Rc<str>,
        /// The group the call rings for, when it does.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<Rc<str>>,
        /// The call's id, which `call_cancelled` repeats.
        call: String,
    },
    /// `{type: "call_cancelled", call, reason}`: the call it woke the app
    /// for is over (no ghost call rings later).
    CallCancelled {
        /// The id `incoming_call` gave.
        call: String,
        /// Why: `ended` (the caller hung up), `timeout`,
        /// `answered_elsewhere`, or a reason of `call_ended`.
        reason: Rc<str>,
    },
    /// `{type: "missed_call", from, group?, at, reason, call}`: after
    /// `call_cancelled`, what to show the user (the call rang them while
    /// their app slept, and nobody of theirs took it); as `missed_calls`
    /// tells at their next registration.
    MissedCall {
        /// The caller.
        from: Rc<str>,
        /// The group it rang them for, when it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<Rc<str>>,
        /// When it started ringing them (ISO 8601, UTC).
        at: String,
        /// How it ended, as in `missed_calls`.
        reason: Rc<str>,
        /// The call's id, as `incoming_call` gave it.
        call: String,
    },
}

/// How long a push service keeps a missed call for a device that is off.
pub const MISSED_CALL_TTL: Duration = Duration::from_secs(24 * 3600);

impl PushMessage {
    /// Its Topic: the call, so that a newer message about a ringing call
    /// replaces one still waiting at the push service (`call_cancelled`
    /// an `incoming_call`); none for a missed call, which nothing replaces.
    pub fn topic(&self) -> Option<&str> {
        match self {
            PushMessage::IncomingCall { call, .. } | PushMessage::CallCancelled { call, .. } => {
                Some(call)
            }
            PushMessage::MissedCall { .. } => None,
        }
    }

    /// How long the push service may keep it (`TTL`): a ring and its end
    /// are worth nothing after the ring time; a missed call is for a day.
    pub fn ttl(&self, ring: Duration) -> Duration {
        match self {
            PushMessage::MissedCall { .. } => MISSED_CALL_TTL,
            _ => ring,
        }
    }

    /// Its `Urgency`: a ring wakes the phone now; a missed call may wait.
    pub fn urgency(&self) -> &'static str {
        match self {
            PushMessage::MissedCall { .. } => "normal",
            _ => "high",
        }
    }
}

/// The name of the VAPID key's file in the state directory.
pub const KEY_FILE: &str = "vapid-key.pem";

/// The VAPID key to sign with: from `key_file` when given; else the one
/// kept in `state_dir`, made and written there the first time; `None`
/// without either (a key made in memory serves until the next restart,
/// whose subscriptions must then be made again).
pub fn load_key(
    key_file: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
) -> Result<Option<crypto::VapidKey>, String> {
    let read = |path: &std::path::Path| -> Result<crypto::VapidKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the VAPID key {}: {error}", path.display()))?;
        crypto::VapidKey::from_text(&text)
            .map_err(|error| format!("the VAPID key {}: {error}", path.display()))
    };
    if let Some(path) = key_file {
        return read(path).map(Some);
    }
    let Some(dir) = state_dir else {
        return Ok(None);
    };
    let path = dir.join(KEY_FILE);
    if path.exists() {
        return read(&path).map(Some);
    }
    let key = crypto::VapidKey::generate()
        .map_err(|error| format!("cannot make a VAPID key: {error}"))?;
    write_private(&path, key.to_pem().as_bytes())
        .map_err(|error| format!("cannot write the VAPID key {}: {error}", path.display()))?;
    log::info!(
        "made a VAPID key in {}; its public key is {}",
        path.display(),
        key.public_key_base64url()
    );
    Ok(Some(key))
}

/// Writes `bytes` to a new file only its owner may read, synced.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
