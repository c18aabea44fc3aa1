//! The seed's events as typed values, payload field names exactly as the
//! seed writes them. SDP and ICE payloads stay opaque raw JSON, bounded in
//! size.

use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::limits::Limits;

/// The longest user name, in characters.
pub const MAX_USER_NAME: usize = 64;

/// Checks a user name: 1 to 64 characters from `A-Z a-z 0-9 _ - . @`.
///
/// ```
/// use signalbox::signaling::protocol::valid_user_name;
/// assert!(valid_user_name("flat-12.door@north_gate"));
/// assert!(!valid_user_name(""));
/// assert!(!valid_user_name("Bob Smith"));
/// assert!(!valid_user_name(&"a".repeat(65)));
/// ```
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

/// An event a client sends.
#[derive(Debug)]
pub enum ClientEvent {
    /// `register_user {userId}`
    RegisterUser {
        /// The name to register (`userId`), as sent; the hub checks it.
        user_id: String,
    },
    /// `make_call {to, from, offer}`; `from` is ignored.
    MakeCall {
        /// Who to call.
        to: String,
        /// The SDP offer, opaque JSON of at most `max_sdp_bytes`.
        offer: Box<RawValue>,
    },
    /// `answer_call {to, from, answer}`; `from` is ignored.
    AnswerCall {
        /// The caller being answered.
        to: String,
        /// The SDP answer, opaque JSON of at most `max_sdp_bytes`.
        answer: Box<RawValue>,
    },
    /// `decline_call {to, from}`; `from` is ignored.
    DeclineCall {
        /// The caller being declined.
        to: String,
    },
    /// `end_call {to, from}`; `from` is ignored.
    EndCall {
        /// The other party.
        to: String,
    },
    /// `ice_candidate {to, from, candidate}`; `from` is ignored.
    IceCandidate {
        /// The other party.
        to: String,
        /// The ICE candidate, opaque JSON of at most `max_candidate_bytes`.
        candidate: Box<RawValue>,
    },
    /// `logout_user {userId}`.
    LogoutUser {
        /// The name to log out; when given it must be the socket's own.
        user_id: Option<String>,
    },
    /// `call_update {to, from, description}`: a new SDP offer or answer in
    /// an active call (an ICE restart, video added, hold); `from` is ignored.
    CallUpdate {
        /// The other party.
        to: String,
        /// An RTCSessionDescriptionInit, opaque JSON of at most `max_sdp_bytes`.
        description: Box<RawValue>,
    },
    /// `set_dnd {on}`: do-not-disturb on or off for the socket's user.
    SetDnd {
        /// Whether calls should pass the user by.
        on: bool,
    },
    /// `register_push {subscription}`: a push subscription of the
    /// socket's user (`PushSubscription.toJSON()`), to wake a device of
    /// theirs that sleeps.
    RegisterPush {
        /// The subscription, checked.
        subscription: crate::push::Subscription,
    },
    /// `missed_calls_seen {}`: the user saw their missed calls; forget them.
    MissedCallsSeen,
    /// `unregister_push {endpoint}`: forget that subscription.
    UnregisterPush {
        /// Its endpoint.
        endpoint: String,
    },
    /// `open_door {to, door}`: open a door of the door station `to`.
    OpenDoor {
        /// The door station.
        to: String,
        /// Which of its doors.
        door: String,
    },
}

/// The names of the events clients send.
pub const CLIENT_EVENTS: [&str; 13] = [
    "register_user",
    "make_call",
    "answer_call",
    "decline_call",
    "end_call",
    "ice_candidate",
    "logout_user",
    "call_update",
    "set_dnd",
    "open_door",
    "register_push",
    "unregister_push",
    "missed_calls_seen",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserIdPayload {
    user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OptionalUserIdPayload {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct ToPayload {
    to: String,
}

#[derive(Deserialize)]
struct OfferPayload {
    to: String,
    offer: Box<RawValue>,
}

#[derive(Deserialize)]
struct AnswerPayload {
    to: String,
    answer: Box<RawValue>,
}

#[derive(Deserialize)]
struct DescriptionPayload {
    to: String,
    description: Box<RawValue>,
}

#[derive(Deserialize)]
struct DndPayload {
    on: bool,
}

#[derive(Deserialize)]
struct DoorPayload {
    to: String,
    door: String,
}

#[derive(Deserialize)]
struct SubscriptionPayload<'a> {
    #[serde(borrow)]
    subscription: &'a RawValue,
}

#[derive(Deserialize)]
struct EndpointPayload {
    endpoint: String,
}

#[derive(Deserialize)]
struct CandidatePayload {
    to: String,
    candidate: Box<RawValue>,
}

impl ClientEvent {
    /// Parses the first argument of event `name`, within the size `limits`.
    /// `Ok(None)` for an event that is not part of the protocol.
    ///
    /// ```
    /// use serde_json::value::RawValue;
    /// use signalbox::signaling::{limits::Limits, protocol::ClientEvent};
    /// let limits = Limits::default();
    /// let arg = RawValue::from_string(r#"{"to":"bob","from":"eve","offer":{"type":"offer","sdp":"v=0"}}"#.into()).unwrap();
    /// let Ok(Some(ClientEvent::MakeCall { to, offer })) = ClientEvent::parse("make_call", Some(&arg), &limits) else { panic!() };
    /// assert_eq!((to.as_str(), offer.get()), ("bob", r#"{"type":"offer","sdp":"v=0"}"#));
    /// assert!(ClientEvent::parse("make_call", None, &limits).is_err());
    /// ```
    pub fn parse(
        name: &str,
        arg: Option<&RawValue>,
        limits: &Limits,
    ) -> Result<Option<ClientEvent>, SignalError> {
        if !CLIENT_EVENTS.contains(&name) {
            return Ok(None);
        }
        let json = arg.map_or("null", RawValue::get);
        if !json.starts_with('{') {
            return Err(SignalError::InvalidPayload(format!(
                "{name} expects an object"
            )));
        }
        let invalid = |e: serde_json::Error| {
            SignalError::InvalidPayload(format!("{name}: {}", without_position(&e)))
        };
        let event = match name {
            "register_user" => {
                let p: UserIdPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::RegisterUser { user_id: p.user_id }
            }
            "make_call" => {
                let p: OfferPayload = serde_json::from_str(json).map_err(invalid)?;
                bounded(name, "offer", &p.offer, limits.max_sdp_bytes)?;
                ClientEvent::MakeCall {
                    to: p.to,
                    offer: p.offer,
                }
            }
            "answer_call" => {
                let p: AnswerPayload = serde_json::from_str(json).map_err(invalid)?;
                bounded(name, "answer", &p.answer, limits.max_sdp_bytes)?;
                ClientEvent::AnswerCall {
                    to: p.to,
                    answer: p.answer,
                }
            }
            "decline_call" => {
                let p: ToPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::DeclineCall { to: p.to }
            }
            "end_call" => {
                let p: ToPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::EndCall { to: p.to }
            }
            "ice_candidate" => {
                let p: CandidatePayload = serde_json::from_str(json).map_err(invalid)?;
                bounded(name, "candidate", &p.candidate, limits.max_candidate_bytes)?;
                ClientEvent::IceCandidate {
                    to: p.to,
                    candidate: p.candidate,
                }
            }
            "call_update" => {
                let p: DescriptionPayload = serde_json::from_str(json).map_err(invalid)?;
                bounded(name, "description", &p.description, limits.max_sdp_bytes)?;
                ClientEvent::CallUpdate {
                    to: p.to,
                    description: p.description,
                }
            }
            "set_dnd" => {
                let p: DndPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::SetDnd { on: p.on }
            }
            "register_push" => {
                let p: SubscriptionPayload = serde_json::from_str(json).map_err(invalid)?;
                bounded(name, "subscription", p.subscription, 4096)?;
                let subscription = crate::push::Subscription::parse(p.subscription.get())
                    .map_err(|error| SignalError::InvalidPayload(format!("{name}: {error}")))?;
                ClientEvent::RegisterPush { subscription }
            }
            "missed_calls_seen" => ClientEvent::MissedCallsSeen,
            "unregister_push" => {
                let p: EndpointPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::UnregisterPush {
                    endpoint: p.endpoint,
                }
            }
            "open_door" => {
                let p: DoorPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::OpenDoor {
                    to: p.to,
                    door: p.door,
                }
            }
            _ => {
                let p: OptionalUserIdPayload = serde_json::from_str(json).map_err(invalid)?;
                ClientEvent::LogoutUser { user_id: p.user_id }
            }
        };
        Ok(Some(event))
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::RegisterUser { .. } => "register_user",
            ClientEvent::MakeCall { .. } => "make_call",
            ClientEvent::AnswerCall { .. } => "answer_call",
            ClientEvent::DeclineCall { .. } => "decline_call",
            ClientEvent::EndCall { .. } => "end_call",
            ClientEvent::IceCandidate { .. } => "ice_candidate",
            ClientEvent::LogoutUser { .. } => "logout_user",
            ClientEvent::CallUpdate { .. } => "call_update",
            ClientEvent::SetDnd { .. } => "set_dnd",
            ClientEvent::OpenDoor { .. } => "open_door",
            ClientEvent::RegisterPush { .. } => "register_push",
            ClientEvent::UnregisterPush { .. } => "unregister_push",
            ClientEvent::MissedCallsSeen => "missed_calls_seen",
        }
    }
}

/// serde's message without its " at line 1 column N" suffix: a payload
/// is one line, and the position says nothing to its sender.
pub fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rsplit_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => message,
    }
}

fn bounded(event: &str, field: &str, value: &RawValue, max: usize) -> Result<(), SignalError> {
    if value.get().len() > max {
        return Err(SignalError::InvalidPayload(format!(
            "{event}: {field} is larger than {max} bytes"
        )));
    }
    Ok(())
}

/// An event the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ServerEvent {
    /// `user_registered {success, userId[, error]}`
    UserRegistered {
        /// Whether the name is now the socket's.
        success: bool,
        /// The name asked for.
        #[serde(rename = "userId")]
        user_id: String,
        /// Why not, when refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `incoming_call {from, offer[, group]}`
    IncomingCall {
        /// The caller.
        from: Rc<str>,
        /// The caller's SDP offer.
        offer: Box<RawValue>,
        /// The group called, when the call rings a group's members.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<Rc<str>>,
    },
    /// `call_answered {from, answer}`
    CallAnswered {
        /// The callee.
        from: Rc<str>,
        /// The callee's SDP answer.
        answer: Box<RawValue>,
    },
    /// `call_declined {from}`
    CallDeclined {
        /// The callee who declined.
        from: Rc<str>,
    },
    /// `call_ended {from[, reason]}`
    CallEnded {
        /// The party who ended the call or left.
        from: Rc<str>,
        /// Why, when it was not an `end_call`.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// `call_timeout {user}`: `user` is the other party.
    CallTimeout {
        /// The other party of the call that rang out.
        user: Rc<str>,
    },
    /// `call_busy {targetUser}`
    CallBusy {
        /// The user who is busy.
        #[serde(rename = "targetUser")]
        target_user: Rc<str>,
    },
    /// `call_failed {error, targetUser}`
    CallFailed {
        /// Why, as the refusal's [`SignalError`] message.
        error: String,
        /// The user who was called.
        #[serde(rename = "targetUser")]
        target_user: Rc<str>,
    },
    /// `ice_candidate {from, candidate}`
    IceCandidate {
        /// The other party.
        from: Rc<str>,
        /// Their candidate.
        candidate: Box<RawValue>,
    },
    /// `force_disconnect {reason}`
    ForceDisconnect {
        /// Why this device is being disconnected.
        reason: Rc<str>,
    },
    /// `ice_servers {iceServers}`: STUN/TURN servers (with TURN credentials
    /// minted for this user), sent right after a successful registration.
    IceServers(super::ice::IceServers),
    /// `call_update {from, description}`: the other party's new SDP offer
    /// or answer in an active call.
    CallUpdate {
        /// The other party.
        from: Rc<str>,
        /// Their RTCSessionDescriptionInit.
        description: Box<RawValue>,
    },
    /// `peer_reconnecting {from}`: the other party's connection was lost;
    /// their call is held for the reconnect grace.
    PeerReconnecting {
        /// The other party.
        from: Rc<str>,
    },
    /// `peer_reconnected {from}`: the other party is back, the call goes on.
    PeerReconnected {
        /// The other party.
        from: Rc<str>,
    },
    /// `call_forwarded {from, to}`: nobody at `from` answered (or could),
    /// so the call rings `to` now.
    CallForwarded {
        /// The user or group that was rung.
        from: Rc<str>,
        /// The user or group that rings now.
        to: Rc<str>,
    },
    /// `dnd {on}`: the user's do-not-disturb, told to each of its devices
    /// when it changes and to a device that registers while it is on.
    Dnd {
        /// Whether calls pass the user by.
        on: bool,
    },
    /// `door_open {from, door}`: to a door station, `from` opened `door`
    /// (its app drives the relay).
    DoorOpen {
        /// Who opened it.
        from: Rc<str>,
        /// Which door.
        door: Rc<str>,
    },
    /// `call_ending {seconds}`: the call reaches its maximum length in
    /// that many seconds, and then ends (`max_duration`).
    CallEnding {
        /// Seconds left.
        seconds: u64,
    },
    /// `directory {doors, groups, users}`: what the directory holds for a
    /// newly registered client, when there is one: every door station's
    /// doors (a call with one offers its **Open door** buttons), and the
    /// groups and users this client may call (a door panel's buttons).
    Directory {
        /// Each door station's doors.
        doors: std::collections::BTreeMap<Rc<str>, Vec<Rc<str>>>,
        /// The groups this client may call.
        groups: Vec<Rc<str>>,
        /// The users this client may call.
        users: Vec<Rc<str>>,
    },
    /// `missed_calls {calls}`: to a device that registers, the calls that
    /// rang its user and ended unanswered since they last said
    /// `missed_calls_seen`, oldest first.
    MissedCalls {
        /// The calls.
        calls: Vec<MissedCall>,
    },
    /// `push_config {vapidPublicKey}`: right after `user_registered`, the
    /// key a browser needs for `pushManager.subscribe` (its
    /// `applicationServerKey`).
    PushConfig {
        /// The server's VAPID public key, base64url.
        #[serde(rename = "vapidPublicKey")]
        vapid_public_key: Rc<str>,
    },
    /// `signaling_error {event, error}`: a refused client event whose
    /// sender asked for no ack and that has no event of its own.
    SignalingError {
        /// The client event that was refused.
        event: String,
        /// Why: the [`SignalError`] message, or `unknown event`.
        error: String,
    },
}

impl ServerEvent {
    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::UserRegistered { .. } => "user_registered",
            ServerEvent::IncomingCall { .. } => "incoming_call",
            ServerEvent::CallAnswered { .. } => "call_answered",
            ServerEvent::CallDeclined { .. } => "call_declined",
            ServerEvent::CallEnded { .. } => "call_ended",
            ServerEvent::CallTimeout { .. } => "call_timeout",
            ServerEvent::CallBusy { .. } => "call_busy",
            ServerEvent::CallFailed { .. } => "call_failed",
            ServerEvent::IceCandidate { .. } => "ice_candidate",
            ServerEvent::ForceDisconnect { .. } => "force_disconnect",
            ServerEvent::IceServers(_) => "ice_servers",
            ServerEvent::SignalingError { .. } => "signaling_error",
            ServerEvent::CallUpdate { .. } => "call_update",
            ServerEvent::PeerReconnecting { .. } => "peer_reconnecting",
            ServerEvent::PeerReconnected { .. } => "peer_reconnected",
            ServerEvent::CallForwarded { .. } => "call_forwarded",
            ServerEvent::Dnd { .. } => "dnd",
            ServerEvent::DoorOpen { .. } => "door_open",
            ServerEvent::CallEnding { .. } => "call_ending",
            ServerEvent::Directory { .. } => "directory",
            ServerEvent::PushConfig { .. } => "push_config",
            ServerEvent::MissedCalls { .. } => "missed_calls",
        }
    }

    /// About how many bytes the event holds, for the bounds on what is
    /// kept for a user who is away.
    pub fn size(&self) -> usize {
        let payload = match self {
            ServerEvent::IncomingCall { offer: raw, .. }
            | ServerEvent::CallAnswered { answer: raw, .. }
            | ServerEvent::IceCandidate { candidate: raw, .. }
            | ServerEvent::CallUpdate {
                description: raw, ..
            } => raw.get().len(),
            ServerEvent::CallFailed { error, .. } => error.len(),
            ServerEvent::UserRegistered { user_id, .. } => user_id.len(),
            ServerEvent::SignalingError { event, error } => event.len() + error.len(),
            _ => 0,
        };
        64 + payload
    }
}

/// A call that rang a user and ended unanswered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedCall {
    /// Who called.
    pub from: Rc<str>,
    /// The group it rang the user for, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Rc<str>>,
    /// When it started ringing them (ISO 8601, UTC).
    pub at: String,
    /// How it ended: `timeout`, `cancelled` (the caller gave up),
    /// `answered_elsewhere`, `forwarded`, or another reason of `call_ended`.
    pub reason: Rc<str>,
}

/// Reasons in `call_ended` when a party left rather than hung up.
pub mod reason {
    /// The other party's connection closed.
    pub const DISCONNECTED: &str = "disconnected";
    /// The other party logged out.
    pub const LOGGED_OUT: &str = "logged_out";
    /// The other party logged in on another device, which replaced this one.
    pub const NEW_LOGIN: &str = "new_login";
    /// The server is shutting down.
    pub const SERVER_SHUTDOWN: &str = "server_shutdown";
    /// Another member of the group (or another device of the user) answered.
    pub const ANSWERED_ELSEWHERE: &str = "answered_elsewhere";
    /// Nobody answered in time: the call went on to someone else.
    pub const FORWARDED: &str = "forwarded";
    /// The door was opened from the call, and the station hangs up after
    /// it (`hang_up_after_open`).
    pub const DOOR_OPENED: &str = "door_opened";
    /// The call reached its maximum length.
    pub const MAX_DURATION: &str = "max_duration";
}

/// Why a client event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalError {
    /// The payload is not what the event needs.
    InvalidPayload(String),
    /// A user name outside the allowed set.
    InvalidUserName,
    /// A call event from a socket that has not registered.
    NotRegistered,
    /// `logout_user` naming someone else.
    NotYourName,
    /// `register_user` with a name other than the connection's token's.
    NotYourToken,
    /// The callee is not online.
    UserOffline,
    /// A call to oneself.
    CallingYourself,
    /// The caller is already ringing or in a call.
    AlreadyInCall,
    /// The callee is ringing or in a call.
    UserBusy,
    /// No ringing call from that user to answer or decline.
    NoIncomingCall,
    /// No call with that user to end or to send candidates in.
    NoSuchCall,
    /// Too many calls started in a short time.
    TooManyCalls,
    /// Too many events in a short time.
    RateLimited,
    /// Several nodes: Redis, which holds who is where and who is busy,
    /// cannot be reached.
    Unavailable,
    /// The directory does not let the caller call that name (`may_call`).
    NotAllowed,
    /// The callee is in do-not-disturb, and no forwarding is set.
    DoNotDisturb,
    /// `register_user` with the name of a group of the directory.
    GroupName,
    /// `open_door` by someone neither in a call with the station nor
    /// among its openers.
    NotAllowedToOpen,
    /// `open_door` for a name that is not a door station, or a door it
    /// does not control.
    NoSuchDoor,
    /// `open_door` for a door station that is not registered.
    DoorOffline,
    /// `register_push` refused: the endpoint is not allowed, or there are
    /// too many subscriptions.
    Push(String),
}

impl SignalError {
    /// Whether the refusal already reached the client as one of the seed's
    /// own events (`user_registered`, `call_failed`, `call_busy`).
    pub fn reported_by_seed_event(&self) -> bool {
        matches!(
            self,
            SignalError::InvalidUserName
                | SignalError::NotYourToken
                | SignalError::UserOffline
                | SignalError::CallingYourself
                | SignalError::AlreadyInCall
                | SignalError::UserBusy
                | SignalError::TooManyCalls
                | SignalError::Unavailable
                | SignalError::NotAllowed
                | SignalError::DoNotDisturb
                | SignalError::GroupName
        )
    }
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::InvalidPayload(why) => write!(f, "invalid payload: {why}"),
            SignalError::InvalidUserName => {
                f.write_str("invalid user name: use 1 to 64 characters from A-Z a-z 0-9 _ - . @")
            }
            SignalError::NotRegistered => f.write_str("not registered: send register_user first"),
            SignalError::NotYourName => f.write_str("cannot log out another user"),
            SignalError::NotYourToken => f.write_str("your token is for another user name"),
            SignalError::UserOffline => f.write_str("user is offline"),
            SignalError::CallingYourself => f.write_str("cannot call yourself"),
            SignalError::AlreadyInCall => f.write_str("you are already in a call"),
            SignalError::UserBusy => f.write_str("user is busy"),
            SignalError::NoIncomingCall => f.write_str("no incoming call from that user"),
            SignalError::NoSuchCall => f.write_str("no call with that user"),
            SignalError::TooManyCalls => f.write_str("too many calls: try again later"),
            SignalError::RateLimited => f.write_str("rate limit exceeded: slow down"),
            SignalError::Unavailable => {
                f.write_str("the intercom is briefly unavailable: try again")
            }
            SignalError::NotAllowed => f.write_str("not allowed to call this user"),
            SignalError::DoNotDisturb => f.write_str("user does not want to be disturbed"),
            SignalError::GroupName => f.write_str("that name is a group's: register your own"),
            SignalError::NotAllowedToOpen => f.write_str("not allowed to open this door"),
            SignalError::NoSuchDoor => f.write_str("no such door"),
            SignalError::DoorOffline => f.write_str("the door station is offline"),
            SignalError::Push(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SignalError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, json: &str) -> Result<Option<ClientEvent>, SignalError> {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        ClientEvent::parse(name, Some(&raw), &Limits::default())
    }

    #[test]
    fn every_client_event_parses() {
        let cases = [
            ("register_user", r#"{"userId":"alice"}"#),
            (
                "make_call",
                r#"{"to":"b","from":"a","offer":{"type":"offer","sdp":"x"}}"#,
            ),
            (
                "answer_call",
                r#"{"to":"a","from":"b","answer":{"type":"answer","sdp":"y"}}"#,
            ),
            ("decline_call", r#"{"to":"a","from":"b"}"#),
            ("end_call", r#"{"to":"a","from":"b"}"#),
            (
                "ice_candidate",
                r#"{"to":"a","from":"b","candidate":{"candidate":"c","sdpMid":"0"}}"#,
            ),
            ("ice_candidate", r#"{"to":"a","candidate":null}"#),
            ("logout_user", r#"{"userId":"alice"}"#),
            ("logout_user", r#"{}"#),
        ];
        for (name, json) in cases {
            let event = parse(name, json).unwrap().unwrap();
            assert_eq!(event.name(), name);
        }
        assert!(parse("something_else", "{}").unwrap().is_none());
    }

    #[test]
    fn bad_payloads_are_errors() {
        let bad = [
            ("register_user", "{}"),
            ("register_user", r#"{"userId":42}"#),
            ("register_user", r#"{"userId":null}"#),
            ("register_user", r#""alice""#),
            ("register_user", "[]"),
            ("register_user", "null"),
            ("make_call", r#"{"to":"b"}"#),
            ("make_call", r#"{"offer":{}}"#),
            ("make_call", r#"{"to":["b"],"offer":{}}"#),
            ("answer_call", r#"{"to":"a"}"#),
            ("decline_call", r#"{"to":1}"#),
            ("end_call", "{}"),
            ("ice_candidate", r#"{"to":"a"}"#),
            ("logout_user", r#"{"userId":7}"#),
            ("logout_user", "7"),
        ];
        for (name, json) in bad {
            assert!(
                matches!(parse(name, json), Err(SignalError::InvalidPayload(_))),
                "{name} {json}"
            );
        }
        assert!(ClientEvent::parse("end_call", None, &Limits::default()).is_err());
    }

    #[test]
    fn payloads_are_bounded() {
        let sdp = "x".repeat(Limits::default().max_sdp_bytes);
        let json = format!(r#"{{"to":"b","offer":{{"sdp":"{sdp}"}}}}"#);
        let Err(SignalError::InvalidPayload(why)) = parse("make_call", &json) else {
            panic!()
        };
        assert!(why.contains("offer is larger"), "{why}");
        let candidate = "c".repeat(Limits::default().max_candidate_bytes);
        let json = format!(r#"{{"to":"b","candidate":"{candidate}"}}"#);
        assert!(parse("ice_candidate", &json).is_err());
    }

    #[test]
    fn error_messages_drop_serde_positions() {
        let Err(SignalError::InvalidPayload(why)) = parse("end_call", "{}") else {
            panic!()
        };
        assert_eq!(why, "end_call: missing field `to`");
    }

    #[test]
    fn server_events_serialize_with_seed_field_names() {
        let offer = RawValue::from_string(r#"{"sdp":"x"}"#.into()).unwrap();
        let cases: Vec<(ServerEvent, &str)> = vec![
            (
                ServerEvent::UserRegistered {
                    success: true,
                    user_id: "a".into(),
                    error: None,
                },
                r#"{"success":true,"userId":"a"}"#,
            ),
            (
                ServerEvent::IncomingCall {
                    from: "a".into(),
                    offer: offer.clone(),
                    group: None,
                },
                r#"{"from":"a","offer":{"sdp":"x"}}"#,
            ),
            (
                ServerEvent::IncomingCall {
                    from: "a".into(),
                    offer,
                    group: Some("flat-12".into()),
                },
                r#"{"from":"a","offer":{"sdp":"x"},"group":"flat-12"}"#,
            ),
            (
                ServerEvent::CallEnded {
                    from: "a".into(),
                    reason: None,
                },
                r#"{"from":"a"}"#,
            ),
            (
                ServerEvent::CallEnded {
                    from: "a".into(),
                    reason: Some(reason::DISCONNECTED),
                },
                r#"{"from":"a","reason":"disconnected"}"#,
            ),
            (
                ServerEvent::CallTimeout { user: "b".into() },
                r#"{"user":"b"}"#,
            ),
            (
                ServerEvent::CallBusy {
                    target_user: "b".into(),
                },
                r#"{"targetUser":"b"}"#,
            ),
            (
                ServerEvent::CallFailed {
                    error: "user is offline".into(),
                    target_user: "b".into(),
                },
                r#"{"error":"user is offline","targetUser":"b"}"#,
            ),
            (
                ServerEvent::ForceDisconnect {
                    reason: reason::NEW_LOGIN.into(),
                },
                r#"{"reason":"new_login"}"#,
            ),
        ];
        for (event, json) in cases {
            assert_eq!(
                serde_json::to_string(&event).unwrap(),
                json,
                "{}",
                event.name()
            );
        }
    }
}
