//! One record per call for the call log: who called whom, who rang, who
//! answered, when it started, was answered and ended, how it ended, and
//! the doors opened from it. The hub gathers the facts as the call goes,
//! and keeps the record when the call ends on the node that owns it (the
//! caller's: a mirror of a group's call on a member's node makes none),
//! until the I/O side takes it ([`Hub::take_records`]) for the log.

use std::hash::Hash;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;

use super::Hub;
use crate::signaling::calls::{Call, CallId, CallState};

/// What the hub knows of a call beyond [`Call`], for its record.
#[derive(Debug, Default)]
pub(super) struct Facts {
    started: Option<Instant>,
    rang: Vec<Rc<str>>,
    doors: Vec<DoorOpened>,
}

/// How a call is ending, said by the path that ends it before the call
/// goes (the record is made as it goes).
#[derive(Debug, Clone)]
pub(super) enum Ending {
    /// `by` hung up (`reason` `None`), or left with `reason`.
    Ended {
        by: Option<Rc<str>>,
        reason: Option<Rc<str>>,
    },
    /// `by`, the callee (or the last member), declined.
    Declined { by: Rc<str> },
    /// It rang out.
    Timeout,
}

/// A door opened from a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoorOpened {
    /// The door station.
    pub station: Rc<str>,
    /// Which door.
    pub door: Rc<str>,
    /// Who opened it.
    pub by: Rc<str>,
    /// When (ISO 8601, UTC).
    pub at: String,
}

/// A call's record in the call log, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// The call's id (as its pushes name it).
    pub call: String,
    /// Who called.
    pub caller: Rc<str>,
    /// The name called: a user, or a group.
    pub called: Rc<str>,
    /// The group, when a group was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Rc<str>>,
    /// Who rang, in order.
    pub rang: Vec<Rc<str>>,
    /// Who answered, if anyone did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<Rc<str>>,
    /// When it started ringing (ISO 8601, UTC).
    pub started: String,
    /// When it was answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<String>,
    /// When it ended.
    pub ended: String,
    /// `answered`, `declined`, `timeout` (nobody answered), or `cancelled`
    /// (it ended while it rang).
    pub outcome: &'static str,
    /// Who ended it, when someone did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<Rc<str>>,
    /// Why, when a party left rather than hung up (a reason of `call_ended`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Rc<str>>,
    /// Doors opened from it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub doors: Vec<DoorOpened>,
}

impl Facts {
    /// When the call started ringing.
    pub(super) fn started(&self) -> Option<Instant> {
        self.started
    }
}

impl<S: Clone + Eq + Hash> Hub<S> {
    /// Call `id` rings `user`.
    pub(super) fn fact_rang(&mut self, id: CallId, user: &Rc<str>) {
        let now = self.now;
        let facts = self.facts.entry(id).or_default();
        facts.started.get_or_insert(now);
        if !facts.rang.contains(user) {
            facts.rang.push(user.clone());
        }
    }

    /// `by` opened `door` of `station` from call `id`.
    pub(super) fn fact_door(
        &mut self,
        id: CallId,
        station: &Rc<str>,
        door: &Rc<str>,
        by: &Rc<str>,
    ) {
        let at = crate::timestamp::iso8601(self.wall.at(self.now));
        if let Some(facts) = self.facts.get_mut(&id) {
            facts.doors.push(DoorOpened {
                station: station.clone(),
                door: door.clone(),
                by: by.clone(),
                at,
            });
        }
    }

    /// The path ending a call says how, before the call goes.
    pub(super) fn ending(&mut self, ending: Ending) {
        self.ending = Some(ending);
    }

    /// Call `id` ended here: its record, unless this node does not own it
    /// (it did not ring anyone for it: the caller is on another node).
    pub(super) fn record(&mut self, id: CallId, call: &Call) {
        let facts = self.facts.remove(&id).unwrap_or_default();
        let ending = self.ending.take();
        let Some(started) = facts.started.filter(|_| !call.mirror) else {
            return;
        };
        let now = self.now;
        let wall = |at: Instant| crate::timestamp::iso8601(self.wall.at(at));
        let answered = match call.state {
            CallState::Active { since } => Some(since),
            CallState::Ringing { .. } => None,
        };
        let (outcome, ended_by, reason) = match (&answered, ending) {
            (Some(_), Some(Ending::Ended { by, reason })) => ("answered", by, reason),
            (Some(_), _) => ("answered", None, None),
            (None, Some(Ending::Declined { by })) => ("declined", Some(by), None),
            (None, Some(Ending::Timeout)) => ("timeout", None, None),
            (None, Some(Ending::Ended { by, reason })) => ("cancelled", by, reason),
            (None, None) => ("cancelled", None, None),
        };
        let record = CallRecord {
            call: super::push_call_id(id),
            caller: call.caller.clone(),
            called: call.called().clone(),
            group: call.group.clone(),
            rang: facts.rang,
            answered_by: answered.map(|_| call.callee.clone()),
            started: wall(started),
            answered: answered.map(wall),
            ended: wall(now),
            outcome,
            ended_by,
            reason,
            doors: facts.doors,
        };
        self.records.push(record);
    }

    /// The records of the calls that ended since the last time.
    pub fn take_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }
}
