//! Messages between the hubs of several nodes: what one node tells another
//! about a call whose other party is connected there. Each is addressed to
//! a user (`to`) and carries what that user's hub needs to change its state
//! and tell its client.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::protocol::{ServerEvent, SignalError, reason};

/// A message for the hub of the node where `to` (or `user`) is connected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerMessage {
    /// `from` calls `to`; the caller's node holds the claims, the timeout
    /// and, for a group, the race between its members.
    Ring {
        /// The caller.
        from: Rc<str>,
        /// The callee.
        to: Rc<str>,
        /// The caller's SDP offer.
        offer: Box<RawValue>,
        /// The group `to` rings for, as a member.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<Rc<str>>,
    },
    /// The callee could not be rung.
    Refused {
        /// The callee who could not be rung.
        from: Rc<str>,
        /// The caller, who hears `call_busy` or `call_failed`.
        to: Rc<str>,
        /// True for busy, false for offline.
        busy: bool,
        /// The callee is in do-not-disturb (`busy` is false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dnd: bool,
    },
    /// The callee answered.
    Answered {
        /// The callee.
        from: Rc<str>,
        /// The caller.
        to: Rc<str>,
        /// The callee's SDP answer.
        answer: Box<RawValue>,
    },
    /// The callee declined.
    Declined {
        /// The callee.
        from: Rc<str>,
        /// The caller.
        to: Rc<str>,
    },
    /// `from` hung up or left.
    Ended {
        /// Who ended it.
        from: Rc<str>,
        /// The other party.
        to: Rc<str>,
        /// Why, when `from` left rather than hung up.
        reason: Option<String>,
    },
    /// A trickle-ICE candidate.
    Candidate {
        /// Who sent it; dropped unless `to` is in a call with them.
        from: Rc<str>,
        /// The other party.
        to: Rc<str>,
        /// The sender's ICE candidate, opaque JSON as their client sent it.
        candidate: Box<RawValue>,
    },
    /// A new SDP offer or answer in an active call.
    Update {
        /// Who sent it; dropped unless `to` is in an active call with them.
        from: Rc<str>,
        /// The other party.
        to: Rc<str>,
        /// The sender's RTCSessionDescriptionInit, opaque JSON.
        description: Box<RawValue>,
    },
    /// The call of `to` reaches its maximum length in `seconds`.
    Ending {
        /// A party of the call.
        to: Rc<str>,
        /// Seconds left.
        seconds: u64,
    },
    /// Several nodes: `from` (on the sending node, which checked that they
    /// may) opens `door` of the door station `to`, here: the station hears
    /// `door_open`, its command runs here, and the sending node hears
    /// [`PeerMessage::DoorAnswer`].
    OpenDoor {
        /// Who opens it.
        from: Rc<str>,
        /// The door station.
        to: Rc<str>,
        /// Which door.
        door: Rc<str>,
        /// Whether `from` opens it from a call with the station.
        in_call: bool,
    },
    /// The answer to [`PeerMessage::OpenDoor`], for the ack of `to`'s
    /// `open_door`.
    DoorAnswer {
        /// Who opened it.
        to: Rc<str>,
        /// The door station.
        station: Rc<str>,
        /// Which door.
        door: Rc<str>,
        /// The ack (`{ok, error?, exitStatus?}`).
        ack: serde_json::Value,
    },
    /// `from` opened `door` of the door station `to`.
    DoorOpen {
        /// Who opened it.
        from: Rc<str>,
        /// The door station.
        to: Rc<str>,
        /// Which door.
        door: Rc<str>,
    },
    /// `from` lost its connection and is held for the reconnect grace.
    Reconnecting {
        /// The held user.
        from: Rc<str>,
        /// The other party of their call.
        to: Rc<str>,
    },
    /// `from` is back after a lost connection.
    Reconnected {
        /// The user who is back.
        from: Rc<str>,
        /// The other party of their call.
        to: Rc<str>,
    },
    /// The call rang out (sent by the caller's node, which owns the timeout).
    TimedOut {
        /// The caller.
        from: Rc<str>,
        /// The callee.
        to: Rc<str>,
    },
    /// `user`, held on the sending node after their connection was lost,
    /// registered again on this one: their call moves here, with what was
    /// kept for them.
    Resume {
        /// The user who is back, now registered here.
        user: Rc<str>,
        /// Their call, if they were in one.
        call: Option<HandedCall>,
        /// What was kept for them, in order, as it would have reached this
        /// node had they been here.
        events: Vec<PeerMessage>,
    },
    /// `from`, whom a call from `to` was waking with a push, registered on
    /// another node (sent by the registration's script, which found the
    /// call's claim): the call rings them there now.
    Woken {
        /// The user who registered.
        from: Rc<str>,
        /// The caller, whose node holds the call.
        to: Rc<str>,
    },
    /// The admin API on another node sends `user`'s devices here away
    /// (`POST /api/users/NAME/disconnect`).
    SendAway {
        /// Whose devices.
        user: Rc<str>,
        /// What each hears in `force_disconnect`.
        reason: Rc<str>,
    },
    /// `user` registered on another node: this node's device is replaced.
    Kick {
        /// The user who registered on another node; their device here goes.
        user: Rc<str>,
        /// The socket being replaced, as Redis last knew it. A kick for
        /// another socket is stale (the user registered here again since)
        /// and changes nothing. (`conn` on the wire, as older nodes send it.)
        #[serde(rename = "conn", default, skip_serializing_if = "Option::is_none")]
        socket: Option<Rc<str>>,
    },
}

/// A call handed from one node to another with one of its parties.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandedCall {
    /// Who called.
    pub caller: Rc<str>,
    /// Who was called.
    pub callee: Rc<str>,
    /// While it rings: how many milliseconds it has left before it times
    /// out. `None` once answered.
    pub rings_for_ms: Option<u64>,
    /// The group the caller called, for a group's answered call (the
    /// claims name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Rc<str>>,
}

impl PeerMessage {
    /// The message that carries `event` for a user on another node, for
    /// the events that concern a call.
    pub fn for_event(to: &Rc<str>, event: ServerEvent) -> Option<PeerMessage> {
        let to = to.clone();
        Some(match event {
            ServerEvent::IncomingCall { from, offer, group } => PeerMessage::Ring {
                from,
                to,
                offer,
                group,
            },
            ServerEvent::CallAnswered { from, answer } => {
                PeerMessage::Answered { from, to, answer }
            }
            ServerEvent::CallDeclined { from } => PeerMessage::Declined { from, to },
            ServerEvent::CallEnded { from, reason } => PeerMessage::Ended {
                from,
                to,
                reason: reason.map(str::to_owned),
            },
            ServerEvent::IceCandidate { from, candidate } => PeerMessage::Candidate {
                from,
                to,
                candidate,
            },
            ServerEvent::CallTimeout { user } => PeerMessage::TimedOut { from: user, to },
            ServerEvent::CallUpdate { from, description } => PeerMessage::Update {
                from,
                to,
                description,
            },
            ServerEvent::CallEnding { seconds } => PeerMessage::Ending { to, seconds },
            ServerEvent::DoorOpen { from, door } => PeerMessage::DoorOpen { from, to, door },
            ServerEvent::PeerReconnecting { from } => PeerMessage::Reconnecting { from, to },
            ServerEvent::PeerReconnected { from } => PeerMessage::Reconnected { from, to },
            ServerEvent::CallBusy { target_user } => PeerMessage::Refused {
                from: target_user,
                to,
                busy: true,
                dnd: false,
            },
            ServerEvent::CallFailed { error, target_user } => PeerMessage::Refused {
                from: target_user,
                to,
                busy: false,
                dnd: error == SignalError::DoNotDisturb.to_string(),
            },
            _ => return None,
        })
    }

    /// The event a message carries for its recipient's client, as it is
    /// sent to them once their hub has acted on it (the inverse of
    /// [`for_event`](PeerMessage::for_event)).
    pub fn into_event(self) -> Option<ServerEvent> {
        Some(match self {
            PeerMessage::Ring {
                from, offer, group, ..
            } => ServerEvent::IncomingCall { from, offer, group },
            PeerMessage::Answered { from, answer, .. } => {
                ServerEvent::CallAnswered { from, answer }
            }
            PeerMessage::Declined { from, .. } => ServerEvent::CallDeclined { from },
            PeerMessage::Ended { from, reason, .. } => ServerEvent::CallEnded {
                from,
                reason: known_reason(reason.as_deref()),
            },
            PeerMessage::Candidate {
                from, candidate, ..
            } => ServerEvent::IceCandidate { from, candidate },
            PeerMessage::Update {
                from, description, ..
            } => ServerEvent::CallUpdate { from, description },
            PeerMessage::TimedOut { from, .. } => ServerEvent::CallTimeout { user: from },
            PeerMessage::Refused {
                from, busy, dnd, ..
            } => match refusal(busy, dnd) {
                SignalError::UserBusy => ServerEvent::CallBusy { target_user: from },
                error => ServerEvent::CallFailed {
                    error: error.to_string(),
                    target_user: from,
                },
            },
            PeerMessage::Ending { seconds, .. } => ServerEvent::CallEnding { seconds },
            PeerMessage::DoorOpen { from, door, .. } => ServerEvent::DoorOpen { from, door },
            PeerMessage::Reconnecting { from, .. } => ServerEvent::PeerReconnecting { from },
            PeerMessage::Reconnected { from, .. } => ServerEvent::PeerReconnected { from },
            PeerMessage::Resume { .. }
            | PeerMessage::Kick { .. }
            | PeerMessage::Woken { .. }
            | PeerMessage::SendAway { .. }
            | PeerMessage::OpenDoor { .. }
            | PeerMessage::DoorAnswer { .. } => return None,
        })
    }

    /// The user the message is for.
    pub fn recipient(&self) -> &Rc<str> {
        match self {
            PeerMessage::Ring { to, .. }
            | PeerMessage::Refused { to, .. }
            | PeerMessage::Answered { to, .. }
            | PeerMessage::Declined { to, .. }
            | PeerMessage::Ended { to, .. }
            | PeerMessage::Candidate { to, .. }
            | PeerMessage::Update { to, .. }
            | PeerMessage::Reconnecting { to, .. }
            | PeerMessage::Reconnected { to, .. }
            | PeerMessage::Ending { to, .. }
            | PeerMessage::DoorOpen { to, .. }
            | PeerMessage::TimedOut { to, .. }
            | PeerMessage::Woken { to, .. }
            | PeerMessage::OpenDoor { to, .. }
            | PeerMessage::DoorAnswer { to, .. } => to,
            PeerMessage::Kick { user, .. }
            | PeerMessage::Resume { user, .. }
            | PeerMessage::SendAway { user, .. } => user,
        }
    }
}

/// Why the callee's node refused to ring them, from a
/// [`PeerMessage::Refused`]'s flags.
pub fn refusal(busy: bool, dnd: bool) -> SignalError {
    if busy {
        SignalError::UserBusy
    } else if dnd {
        SignalError::DoNotDisturb
    } else {
        SignalError::UserOffline
    }
}

/// The known reason a peer named, as the constant this node sends.
pub fn known_reason(name: Option<&str>) -> Option<&'static str> {
    name.map(|name| {
        [
            reason::DISCONNECTED,
            reason::LOGGED_OUT,
            reason::NEW_LOGIN,
            reason::SERVER_SHUTDOWN,
            reason::ANSWERED_ELSEWHERE,
            reason::FORWARDED,
            reason::DOOR_OPENED,
            reason::MAX_DURATION,
        ]
        .into_iter()
        .find(|known| *known == name)
        .unwrap_or(reason::DISCONNECTED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_wire() {
        let offer = RawValue::from_string(r#"{"sdp":"v=0"}"#.into()).unwrap();
        let message = PeerMessage::Ring {
            from: "door".into(),
            to: "flat".into(),
            offer,
            group: None,
        };
        let wire = serde_json::to_string(&message).unwrap();
        assert_eq!(
            wire,
            r#"{"Ring":{"from":"door","to":"flat","offer":{"sdp":"v=0"}}}"#
        );
        let back: PeerMessage = serde_json::from_str(&wire).unwrap();
        assert_eq!(&**back.recipient(), "flat");
        assert!(serde_json::from_str::<PeerMessage>(r#"{"Nope":{}}"#).is_err());
    }

    #[test]
    fn reasons_map_to_known_constants() {
        assert_eq!(known_reason(Some("new_login")), Some(reason::NEW_LOGIN));
        assert_eq!(known_reason(Some("weird")), Some(reason::DISCONNECTED));
        assert_eq!(known_reason(None), None);
    }
}
