//! Socket.IO protocol 5 on top of Engine.IO: namespaces, events, acks both
//! ways and binary attachments.
//!
//! An application registers namespaces on a [`Server`] and handles events on
//! [`Socket`]s; it knows nothing of transports. The server is the
//! Engine.IO [`Handler`](crate::engineio::Handler) of the endpoint it runs on.
//!
//! ```
//! use signalbox::socketio::{Config, Server};
//! let io = Server::new(Config::default());
//! io.of("/").on("ping", |socket, message, ack| {
//!     if let Some(ack) = ack {
//!         ack.send(&message.args);
//!     }
//! });
//! ```

mod assembly;
mod namespace;
pub mod packet;
pub mod recovery;
mod server;
mod socket;

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::engineio::CloseReason;

pub(crate) use assembly::assemble;
pub use namespace::{Incoming, Namespace};
pub use recovery::Recovery;
pub use server::{Server, Stats};
pub use socket::{Ack, Socket};

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a new connection may take to join a namespace before it is
    /// closed.
    pub connect_timeout: Duration,
    /// The most bytes of binary attachments one packet may carry.
    pub max_attachment_bytes: usize,
    /// Connection state recovery.
    pub recovery: Recovery,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(45),
            max_attachment_bytes: 1_000_000,
            recovery: Recovery::default(),
        }
    }
}

/// The arguments of an event or ack, as raw JSON, and its binary
/// attachments (which `{"_placeholder":true,"num":N}` objects in the
/// arguments refer to).
#[derive(Debug, Default)]
pub struct Message {
    /// The arguments in order (after the event name, for an event), as raw JSON.
    pub args: Vec<Box<RawValue>>,
    /// The binary attachments; the placeholder with `num` N stands for the Nth (from 0).
    pub attachments: Vec<Vec<u8>>,
}

impl Message {
    /// The argument at `index`.
    pub fn arg(&self, index: usize) -> Option<&RawValue> {
        self.args.get(index).map(|a| &**a)
    }

    /// Deserializes the argument at `index`.
    pub fn parse<T: DeserializeOwned>(&self, index: usize) -> Result<T, serde_json::Error> {
        let raw = self.arg(index).map_or("null", RawValue::get);
        serde_json::from_str(raw)
    }
}

/// Serializes `value` as one argument.
///
/// ```
/// let arg = signalbox::socketio::to_arg(&serde_json::json!({"ok": true}));
/// assert_eq!(arg.get(), r#"{"ok":true}"#);
/// ```
pub fn to_arg<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|error| {
        log::error!("cannot serialize an event argument: {error}");
        RawValue::NULL.to_owned()
    })
}

/// A placeholder argument standing for attachment `num`.
pub fn placeholder(num: usize) -> Box<RawValue> {
    to_arg(&serde_json::json!({ "_placeholder": true, "num": num }))
}

/// A connect hook's refusal, sent to the client as CONNECT_ERROR.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// The message the client sees in its `connect_error` event.
    pub message: String,
    /// Optional details, as JSON.
    pub data: Option<Box<RawValue>>,
}

impl ConnectError {
    /// A refusal with `message`.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client left the namespace.
    ClientNamespaceDisconnect,
    /// The server disconnected the socket.
    ServerNamespaceDisconnect,
    /// The underlying connection ended.
    Connection(CloseReason),
}

impl DisconnectReason {
    /// Whether a client may recover from it, as socket.io decides: its
    /// transport closed or failed, or it missed a ping. Leaving, being
    /// disconnected by the server, and the server's own closes (a parse
    /// error, a client too slow to read, a shutdown) are not.
    pub fn recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::Connection(
                CloseReason::TransportClose
                    | CloseReason::TransportError
                    | CloseReason::PingTimeout
            )
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => {
                f.write_str("client namespace disconnect")
            }
            DisconnectReason::ServerNamespaceDisconnect => {
                f.write_str("server namespace disconnect")
            }
            DisconnectReason::Connection(reason) => reason.fmt(f),
        }
    }
}

/// Why an ack the server asked for did not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The client did not answer in time.
    Timeout,
    /// The socket disconnected first.
    Disconnected,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckError::Timeout => "ack timed out",
            AckError::Disconnected => "socket disconnected",
        })
    }
}

impl std::error::Error for AckError {}
