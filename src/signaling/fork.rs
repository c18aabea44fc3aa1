//! A call's plan while it rings a group, or may be forwarded: whom to ring
//! next (in order), when the member ringing in turn gives way, where the
//! call goes when nobody answers, and what the caller sent that members
//! rung later must get too. No I/O and no clock: the hub asks it with the
//! time, and keeps its deadline with the others.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

/// How many times a call may be forwarded.
pub const MAX_HOPS: u8 = 3;

/// The most candidates kept for members rung later, and their bytes: a
/// call gathers a few dozen.
pub const MAX_KEPT_CANDIDATES: usize = 64;
const MAX_KEPT_CANDIDATE_BYTES: usize = 64 * 1024;

/// What is due in a fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The member ringing in turn gives way to the next.
    Step,
    /// Nobody answered in time: the call goes to this user or group.
    Forward(Rc<str>),
}

/// The plan of one ringing call beyond "ring them until the timeout".
#[derive(Debug)]
pub struct Fork {
    /// The name rung now, a group or a user: what the caller is told.
    pub target: Rc<str>,
    /// How many times the call was forwarded so far.
    pub hops: u8,
    /// The caller's offer, for whoever rings later.
    pub offer: Box<RawValue>,
    candidates: Vec<Box<RawValue>>,
    candidate_bytes: usize,
    /// In order: the members not rung yet, and how long each rings.
    queue: VecDeque<Rc<str>>,
    step: Duration,
    next_step: Option<Instant>,
    /// Where the call goes when nobody answers, and when.
    forward: Option<(Rc<str>, Instant)>,
}

impl Fork {
    /// A plan for a call to `target` with `offer`, forwarded `hops` times
    /// so far: nothing due yet.
    pub fn new(target: Rc<str>, offer: Box<RawValue>, hops: u8) -> Fork {
        Fork {
            target,
            hops,
            offer,
            candidates: Vec::new(),
            candidate_bytes: 0,
            queue: VecDeque::new(),
            step: Duration::ZERO,
            next_step: None,
            forward: None,
        }
    }

    /// Rings a new `target` (the call was forwarded): what was planned for
    /// the old one is dropped; the caller's offer and candidates stay.
    pub fn retarget(&mut self, target: Rc<str>) {
        self.target = target;
        self.hops += 1;
        self.queue.clear();
        self.next_step = None;
        self.forward = None;
    }

    /// The members to ring one after another, each for `step`, after the
    /// one ringing from `now`.
    pub fn in_order(
        &mut self,
        queue: impl IntoIterator<Item = Rc<str>>,
        step: Duration,
        now: Instant,
    ) {
        self.queue = queue.into_iter().collect();
        self.step = step;
        self.stepped(now);
    }

    /// Forwards the call to `to` at `at`, unless answered before (and
    /// unless it was forwarded [`MAX_HOPS`] times already).
    pub fn forward_at(&mut self, to: Rc<str>, at: Instant) {
        if self.hops < MAX_HOPS {
            self.forward = Some((to, at));
        }
    }

    /// Whether the call may still be forwarded.
    pub fn may_forward(&self) -> bool {
        self.hops < MAX_HOPS
    }

    /// The next member in order, if any is left.
    pub fn next_member(&mut self) -> Option<Rc<str>> {
        self.queue.pop_front()
    }

    /// The members not rung yet, in order.
    pub fn waiting(&self) -> impl Iterator<Item = &Rc<str>> {
        self.queue.iter()
    }

    /// `member` rings next, out of turn: those before them are skipped
    /// (several nodes, where Redis found who of the queue can ring).
    pub fn skip_to(&mut self, member: &str) {
        if let Some(at) = self.queue.iter().position(|m| **m == *member) {
            self.queue.drain(..=at);
        }
    }

    /// A member started ringing in turn at `now`: the next one's turn comes
    /// after the step, if there is a next one.
    pub fn stepped(&mut self, now: Instant) {
        self.next_step = (!self.queue.is_empty()).then(|| now + self.step);
    }

    /// When something is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let forward = self.forward.as_ref().map(|(_, at)| *at);
        match (self.next_step, forward) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`, if anything; forwarding first, as it ends
    /// the turns.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        if let Some((_, at)) = &self.forward
            && *at <= now
        {
            let (to, _) = self.forward.take()?;
            return Some(Due::Forward(to));
        }
        if self.next_step.is_some_and(|at| at <= now) {
            self.next_step = None;
            return Some(Due::Step);
        }
        None
    }

    /// Keeps one of the caller's candidates for members rung later; past
    /// the bounds, later members gather without it (ICE finds another
    /// path, or the caller restarts ICE).
    pub fn keep_candidate(&mut self, candidate: &RawValue) {
        let size = candidate.get().len();
        if self.candidates.len() < MAX_KEPT_CANDIDATES
            && self.candidate_bytes + size <= MAX_KEPT_CANDIDATE_BYTES
        {
            self.candidate_bytes += size;
            self.candidates.push(candidate.to_owned());
        }
    }

    /// The caller's candidates so far, in order.
    pub fn candidates(&self) -> &[Box<RawValue>] {
        &self.candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn in_order_steps_then_forwards() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut fork = Fork::new("flat".into(), raw("{}"), 0);
        assert_eq!(fork.next_deadline(), None);
        fork.in_order(["b".into(), "c".into()], s(10), t0);
        fork.forward_at("desk".into(), t0 + s(25));
        assert_eq!(fork.next_deadline(), Some(t0 + s(10)));
        assert_eq!(fork.due(t0 + s(9)), None);
        assert_eq!(fork.due(t0 + s(10)), Some(Due::Step));
        assert_eq!(fork.next_member().as_deref(), Some("b"));
        fork.stepped(t0 + s(10));
        assert_eq!(fork.next_deadline(), Some(t0 + s(20)));
        assert_eq!(fork.due(t0 + s(20)), Some(Due::Step));
        assert_eq!(fork.next_member().as_deref(), Some("c"));
        fork.stepped(t0 + s(20));
        // The last member keeps ringing: no step after it.
        assert_eq!(fork.next_deadline(), Some(t0 + s(25)));
        assert_eq!(fork.due(t0 + s(25)), Some(Due::Forward("desk".into())));
        assert_eq!(fork.next_deadline(), None);
        fork.retarget("desk".into());
        assert_eq!((fork.hops, &*fork.target), (1, "desk"));
    }

    #[test]
    fn forwarding_stops_after_the_last_hop() {
        let t0 = Instant::now();
        let mut fork = Fork::new("a".into(), raw("{}"), MAX_HOPS);
        fork.forward_at("b".into(), t0);
        assert_eq!(fork.due(t0), None);
        assert!(!fork.may_forward());
    }

    #[test]
    fn kept_candidates_are_bounded() {
        let mut fork = Fork::new("a".into(), raw("{}"), 0);
        for n in 0..100 {
            fork.keep_candidate(&raw(&format!("{{\"n\":{n}}}")));
        }
        assert_eq!(fork.candidates().len(), MAX_KEPT_CANDIDATES);
        assert_eq!(fork.candidates()[1].get(), "{\"n\":1}");
        let big = raw(&format!("\"{}\"", "x".repeat(MAX_KEPT_CANDIDATE_BYTES)));
        let mut fork = Fork::new("a".into(), raw("{}"), 0);
        fork.keep_candidate(&big);
        assert!(fork.candidates().is_empty());
    }
}
