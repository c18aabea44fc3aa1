//! The heartbeat: the server pings every `pingInterval` after the last
//! pong, and a session whose pong does not come within `pingTimeout` ends.
//! Each session has exactly one deadline at a time (its next ping, its pong
//! check, or the end of its closing linger), set on its alarm in the
//! thread's one queue of deadlines ([`crate::rt::Alarm`]). A task and a
//! reactor timer per session would cost several hundred bytes each.

use std::time::Instant;

/// What a session's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a ping.
    Ping,
    /// The pong for the ping sent at this instant must have come.
    PongCheck(Instant),
    /// A server-closed session's last packets were not collected in time.
    Linger,
}
