//! The intercom's signaling service on top of Socket.IO: the seed's events,
//! presence and calls. It knows Socket.IO's small API and nothing below it.
//!
//! [`protocol`] types the events, [`calls`] and [`hub`] decide (no I/O, no
//! clock), [`service`] carries the decisions out on sockets and timers.

pub mod calls;
pub mod cluster;
pub mod directory;
pub mod door_commands;
pub mod ends;
pub mod fork;
pub mod hub;
pub mod ice;
pub mod limits;
pub mod peer;
pub mod protocol;
pub mod relay;
pub mod service;

use std::time::Duration;

pub use service::Signaling;

/// What the signaling service is told: ring time, limits, ICE servers,
/// tokens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a call may ring before it times out.
    pub call_timeout: Duration,
    /// Payload sizes and event and call rates.
    pub limits: limits::Limits,
    /// STUN and TURN servers for clients, and TURN credentials.
    pub ice: ice::IceConfig,
    /// When set, clients must connect with a token signed with this secret.
    pub auth_secret: Option<Vec<u8>>,
    /// How long a user whose connection was lost stays registered, and in
    /// their call, for their client to come back (zero: they leave at once).
    pub reconnect_grace: Duration,
    /// The longest an answered call may last (`--max-call-duration`).
    pub max_call_duration: Option<Duration>,
    /// The directory file (`--directory`): groups, devices, forwarding,
    /// who may call whom; read at start and on SIGHUP.
    pub directory: Option<std::path::PathBuf>,
    /// Where what must outlive a restart is kept (`--state-dir`): the
    /// VAPID key, for now. `None`: in memory.
    pub state_dir: Option<std::path::PathBuf>,
    /// Web Push: the key, the contact, which push services may be used.
    pub push: PushSettings,
}

/// How pushes are sent.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The VAPID key file (`--vapid-key-file`); without it, the key is
    /// made once and kept in the state directory, or in memory.
    pub vapid_key_file: Option<std::path::PathBuf>,
    /// The `sub` of VAPID signatures: how a push service reaches whoever
    /// runs this server (`--push-contact`, a `mailto:` or `https:` URL).
    pub contact: String,
    /// Push services that may be contacted over http or at a private
    /// address (`--push-allow`).
    pub allow: Vec<String>,
}

impl Default for PushSettings {
    fn default() -> PushSettings {
        PushSettings {
            vapid_key_file: None,
            contact: "mailto:admin@localhost".to_owned(),
            allow: Vec::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            call_timeout: Duration::from_secs(30),
            limits: limits::Limits::default(),
            ice: ice::IceConfig {
                turn_ttl: Duration::from_secs(24 * 3600),
                ..ice::IceConfig::default()
            },
            auth_secret: None,
            reconnect_grace: Duration::from_secs(10),
            max_call_duration: None,
            directory: None,
            state_dir: None,
            push: PushSettings::default(),
        }
    }
}
