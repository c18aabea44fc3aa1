//! Door stations: who may open which door (`open_door`), the audit line
//! and counter of every attempt, the hang-up after an opening, and the
//! maximum length of a call (see [`crate::signaling::ends`]).

use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Effect, Hub};
use crate::logging::untrusted;
use crate::signaling::calls::CallId;
use crate::signaling::directory::matches;
use crate::signaling::ends::End;
use crate::signaling::peer::PeerMessage;
use crate::signaling::protocol::{ServerEvent, SignalError, reason};

/// One `open_door`: who asked, for which door, and from which call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorAttempt {
    /// Who asked.
    pub by: Rc<str>,
    /// The door station, as asked.
    pub station: Rc<str>,
    /// The door, as asked.
    pub door: Rc<str>,
    /// The call with the station it was asked from, and its parties
    /// (`caller -> called`); `None`: as one of the station's openers.
    pub call: Option<(CallId, String)>,
    /// Asked on another node (which checked it), whose ack waits for the
    /// answer ([`PeerMessage::DoorAnswer`]).
    pub remote: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoorResult {
    /// Opened; with the exit status of the station's `open_command`
    /// (0) when it has one.
    Opened(Option<i32>),
    /// Not allowed, or nothing to open.
    Refused(SignalError),
    /// The command failed: its exit status, or `None` when a signal
    /// ended it or it could not be started.
    Failed(Option<i32>, String),
    /// The command ran past its timeout and was killed.
    TimedOut(Duration),
}

impl DoorResult {
    /// The ack of the `open_door` that ended so.
    pub fn ack(&self) -> Value {
        match self {
            DoorResult::Opened(None) => json!({ "ok": true }),
            DoorResult::Opened(Some(status)) => json!({ "ok": true, "exitStatus": status }),
            DoorResult::Refused(error) => json!({ "ok": false, "error": error.to_string() }),
            DoorResult::Failed(status, why) => {
                let mut ack =
                    json!({ "ok": false, "error": format!("the door's command failed: {why}") });
                if let Some(status) = status {
                    ack["exitStatus"] = json!(status);
                }
                ack
            }
            DoorResult::TimedOut(after) => json!({
                "ok": false,
                "error": format!("the door's command did not finish within {after:?}"),
            }),
        }
    }

    /// The `result` label of the counter.
    pub fn label(&self) -> &'static str {
        match self {
            DoorResult::Opened(_) => "opened",
            DoorResult::Refused(_) => "refused",
            DoorResult::Failed(..) => "failed",
            DoorResult::TimedOut(_) => "timeout",
        }
    }
}

impl std::fmt::Display for DoorResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DoorResult::Opened(None) => f.write_str("opened"),
            DoorResult::Opened(Some(status)) => write!(f, "opened, command exited {status}"),
            DoorResult::Refused(why) => write!(f, "refused ({why})"),
            DoorResult::Failed(_, why) => write!(f, "failed ({why})"),
            DoorResult::TimedOut(after) => {
                write!(f, "timeout (command killed after {after:?})")
            }
        }
    }
}

/// The counter's key for an attempt: the station and door when the
/// directory has them, else empty (what strangers send does not make
/// new series).
pub type DoorKey = (Rc<str>, Rc<str>, &'static str);

impl<S: Clone + Eq + Hash> Hub<S> {
    /// `open_door {to, door}` from `me` on `socket`: allowed for the other
    /// party of a ringing or active call with the station, and for its
    /// `openers` at any time. The station hears `door_open`; its
    /// `open_command`, if any, runs ([`Effect::OpenDoor`], then
    /// [`Hub::door_done`]). On several nodes, a station on another node
    /// is that node's to open ([`Effect::AskDoor`]).
    pub(super) fn open_door(
        &mut self,
        socket: &S,
        me: Rc<str>,
        to: String,
        door: String,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let directory = self.directory.clone();
        let station: Rc<str> = to.into();
        let call = self
            .calls
            .of(&me)
            .filter(|(_, call)| call.is_between(&me, &station) && self.routes_to(&me, socket))
            .map(|(id, call)| (id, format!("{} -> {}", call.caller, call.called())));
        let attempt = DoorAttempt {
            by: me,
            station: station.clone(),
            door: door.into(),
            call,
            remote: false,
        };
        let spec = directory.door_of(&station, &attempt.door);
        let refusal = match spec {
            None => Some(SignalError::NoSuchDoor),
            Some(spec) if attempt.call.is_none() => {
                let opener = spec
                    .openers
                    .iter()
                    .any(|pattern| matches(pattern, &attempt.by));
                (!opener).then_some(SignalError::NotAllowedToOpen)
            }
            Some(_) => None,
        };
        if let Some(error) = refusal {
            self.door_done(attempt, DoorResult::Refused(error.clone()), now, effects);
            return Err(error);
        }
        if !self.users.contains_key(&station) && self.several_nodes {
            effects.push(Effect::AskDoor { attempt });
            return Ok(());
        }
        self.open(attempt, now, effects)
    }

    /// Several nodes: `from`, on another node, opens `door` of our station
    /// `to` (that node checked that they may, from a call with it when
    /// `in_call`): as [`Hub::open_door`] from here, answered there.
    pub(super) fn open_door_asked(
        &mut self,
        from: Rc<str>,
        station: Rc<str>,
        door: Rc<str>,
        in_call: bool,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let call = self
            .calls
            .of(&station)
            .filter(|(_, call)| in_call && call.is_between(&station, &from))
            .map(|(id, call)| (id, format!("{} -> {}", call.caller, call.called())));
        let attempt = DoorAttempt {
            by: from,
            station,
            door,
            call,
            remote: true,
        };
        if self
            .directory
            .door_of(&attempt.station, &attempt.door)
            .is_none()
        {
            // The other node's directory differs: refused, as there.
            self.door_done(
                attempt,
                DoorResult::Refused(SignalError::NoSuchDoor),
                now,
                effects,
            );
            return;
        }
        let _ = self.open(attempt, now, effects);
    }

    /// Opens an allowed attempt's door of a station that should be here.
    fn open(
        &mut self,
        attempt: DoorAttempt,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let directory = self.directory.clone();
        let spec = directory.door_of(&attempt.station, &attempt.door);
        let (Some(spec), true) = (spec, self.users.contains_key(&attempt.station)) else {
            let error = SignalError::DoorOffline;
            self.door_done(attempt, DoorResult::Refused(error.clone()), now, effects);
            return Err(error);
        };
        let event = ServerEvent::DoorOpen {
            from: attempt.by.clone(),
            door: attempt.door.clone(),
        };
        self.tell(&attempt.station.clone(), event, effects);
        match &spec.open_command {
            Some(command) => effects.push(Effect::OpenDoor {
                attempt,
                command: command.clone(),
                timeout: spec.open_timeout,
            }),
            None => self.door_done(attempt, DoorResult::Opened(None), now, effects),
        }
        Ok(())
    }

    /// An attempt ended with `result` (the command's, when the station
    /// has one): its audit line, its count, for a door opened from a
    /// call the hang-up after it where the station has one, and for an
    /// attempt asked on another node, the answer there.
    pub fn door_done(
        &mut self,
        attempt: DoorAttempt,
        result: DoorResult,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let asked = match &attempt.call {
            Some((id, call)) => {
                format!("in call {} ({})", super::push_call_id(*id), untrusted(call))
            }
            None => "without a call".to_owned(),
        };
        log::info!(
            "door {}/{} asked by {} {asked}: {result}",
            untrusted(&attempt.station),
            untrusted(&attempt.door),
            untrusted(&attempt.by),
        );
        let spec = self.directory.door_of(&attempt.station, &attempt.door);
        let key = match spec {
            Some(_) => (attempt.station.clone(), attempt.door.clone()),
            None => (Rc::from(""), Rc::from("")),
        };
        *self
            .door_totals
            .entry((key.0, key.1, result.label()))
            .or_default() += 1;
        let after = spec.and_then(|spec| spec.hang_up_after_open);
        if let (DoorResult::Opened(_), Some((id, _))) = (&result, &attempt.call) {
            self.fact_door(*id, &attempt.station, &attempt.door, &attempt.by);
        }
        if let (DoorResult::Opened(_), Some(after), Some((id, _))) = (&result, after, &attempt.call)
            && self.calls.get(*id).is_some()
        {
            self.ends.hang_up(*id, now + after);
        }
        if attempt.remote {
            let answer = PeerMessage::DoorAnswer {
                to: attempt.by.clone(),
                station: attempt.station,
                door: attempt.door,
                ack: result.ack(),
            };
            effects.push(Effect::ToPeer {
                user: attempt.by,
                message: answer,
            });
        }
    }

    /// Several nodes: the station's node answered the `open_door` that
    /// `by` asked here. A door it opened from a call this node logs (the
    /// caller is here, the station elsewhere) goes in that call's record.
    pub fn door_answered(
        &mut self,
        by: &Rc<str>,
        station: &Rc<str>,
        door: &Rc<str>,
        opened: bool,
        now: Instant,
    ) -> Vec<Effect<S>> {
        let effects = self.expire(now);
        let call = self
            .calls
            .of(by)
            .filter(|(_, call)| call.is_between(by, station))
            .map(|(id, _)| id);
        if let (true, Some(id)) = (opened, call) {
            self.fact_door(id, station, door, by);
        }
        effects
    }

    /// Attempts to open doors since start, by station, door and result.
    pub fn door_totals(&self) -> Vec<(DoorKey, u64)> {
        self.door_totals
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    /// Call `id` was answered at `now`: its maximum length starts, the
    /// shortest of `--max-call-duration` and its parties' `max_call`. On
    /// several nodes the caller's node keeps it.
    pub(super) fn started(&mut self, id: CallId, now: Instant) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        if self.several_nodes && !self.users.contains_key(&call.caller) {
            return;
        }
        let max = [
            self.max_call,
            self.directory.max_call(&call.caller),
            self.directory.max_call(&call.callee),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(max) = max {
            self.ends.limit(id, now, max);
        }
    }

    /// Something is due for call `id`: the warning before its maximum
    /// length (answered), or its end (`max_duration`; `door_opened`, which
    /// ends a call still ringing too: the visitor is in), for both parties
    /// (and every member or device still ringing).
    pub(super) fn end_due(&mut self, id: CallId, end: End, effects: &mut Vec<Effect<S>>) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (caller, callee) = (call.caller.clone(), call.callee.clone());
        let (ringing, others) = (call.is_ringing(), call.others(&caller));
        let why = match end {
            End::Warning { .. } if ringing => return,
            End::Warning { seconds } => {
                for party in [&caller, &callee] {
                    self.tell(party, ServerEvent::CallEnding { seconds }, effects);
                }
                return;
            }
            End::MaxDuration => reason::MAX_DURATION,
            End::DoorOpened => reason::DOOR_OPENED,
        };
        self.ending(super::records::Ending::Ended {
            by: None,
            reason: Some(why.into()),
        });
        let Some(call) = self.finish(id) else {
            return;
        };
        log::info!(
            "call {} -> {}: ended ({why})",
            untrusted(&call.caller),
            untrusted(&call.callee)
        );
        self.over(&call, effects);
        let event = ServerEvent::CallEnded {
            from: callee,
            reason: Some(why),
        };
        self.tell(&caller, event, effects);
        for other in &others {
            let event = ServerEvent::CallEnded {
                from: caller.clone(),
                reason: Some(why),
            };
            self.tell(other, event, effects);
        }
    }
}
