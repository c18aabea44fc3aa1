//! The directory's calls in the hub, with a fake clock: groups ringing at
//! once and in turn, the first answer winning, declines, forwarding,
//! do-not-disturb, who may call whom, and several devices under one name.

use super::*;
use crate::signaling::directory::Directory;

const DIRECTORY: &str = r#"
[users.anna]
devices = 2

[users.door]
may_call = ["flat-*", "desk", "turns"]

[groups."flat-12"]
members = ["anna", "ben", "panel"]
no_answer = "desk"
no_answer_after = "20s"

[groups.turns]
members = ["anna", "ben", "panel"]
ring = "in-order"
step = "5s"

[groups.desk]
members = ["guard", "guard-phone"]

[users.ben]
no_answer = "desk"
"#;

impl World {
    /// The hub with [`DIRECTORY`]; door on d, anna on a1 and a2, ben on b,
    /// panel on p, guard on g.
    fn intercom() -> World {
        let mut w = World::new();
        let directory = Directory::parse("test.toml", DIRECTORY).unwrap();
        w.hub.set_directory(Rc::new(directory));
        for (socket, name) in [
            ("d", "door"),
            ("a1", "anna"),
            ("a2", "anna"),
            ("b", "ben"),
            ("p", "panel"),
            ("g", "guard"),
        ] {
            w.register(socket, name);
        }
        w
    }

    fn decline(&mut self, socket: &'static str, to: &str) -> Vec<String> {
        self.ok(socket, "decline_call", &format!(r#"{{"to":"{to}"}}"#))
    }

    fn end(&mut self, socket: &'static str, to: &str) -> Vec<String> {
        self.ok(socket, "end_call", &format!(r#"{{"to":"{to}"}}"#))
    }

    fn dnd(&mut self, socket: &'static str, on: bool) -> Vec<String> {
        self.ok(socket, "set_dnd", &format!(r#"{{"on":{on}}}"#))
    }
}

const RING_12: [&str; 4] = [
    r#"[a1] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"flat-12"}"#,
    r#"[a2] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"flat-12"}"#,
    r#"[b] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"flat-12"}"#,
    r#"[p] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"flat-12"}"#,
];

#[test]
fn a_group_rings_every_member_and_the_first_answer_wins() {
    let mut w = World::intercom();
    assert_eq!(w.call("d", "flat-12"), RING_12);
    assert_eq!(w.hub.ringing_count(), 1);
    // The caller's candidates reach every member while it rings.
    let effects = w.candidate("d", "flat-12", 1);
    assert_eq!(effects.len(), 4, "{effects:?}");
    assert!(effects[2].starts_with(r#"[b] <- ice_candidate {"from":"door""#));
    // ben answers: the caller hears who, the others stop ringing.
    let effects = w.answer("b", "door");
    assert_eq!(
        effects,
        [
            r#"[a1] <- call_ended {"from":"door","reason":"answered_elsewhere"}"#,
            r#"[a2] <- call_ended {"from":"door","reason":"answered_elsewhere"}"#,
            r#"[p] <- call_ended {"from":"door","reason":"answered_elsewhere"}"#,
            r#"[d] <- call_answered {"from":"ben","answer":{"sdp":"a"}}"#,
        ]
    );
    // Too late for the others.
    let (error, _) = w.refused("p", "answer_call", r#"{"to":"door","answer":{}}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
    // After the answer, candidates go to the winner only, addressed by
    // the group or by the member.
    assert_eq!(
        w.candidate("d", "flat-12", 2),
        [r#"[b] <- ice_candidate {"from":"door","candidate":{"c":2}}"#]
    );
    assert_eq!(w.candidate("d", "ben", 3).len(), 1);
    assert_eq!(
        w.candidate("b", "door", 4),
        [r#"[d] <- ice_candidate {"from":"ben","candidate":{"c":4}}"#]
    );
    // Nothing of the 20 s forward is left.
    assert_eq!(w.at(Duration::from_secs(25)).expire(), Vec::<String>::new());
    assert!(w.hub.in_active_call("ben"));
    // The caller hangs up by the group's name.
    assert_eq!(
        w.end("d", "flat-12"),
        [r#"[b] <- call_ended {"from":"door"}"#]
    );
    assert_eq!(w.hub.call_count(), 0);
    assert_eq!(w.hub.totals().answered, 1);
}

#[test]
fn declines_stop_one_member_until_all_have() {
    let mut w = World::intercom();
    w.call("d", "flat-12");
    assert_eq!(w.decline("b", "door"), Vec::<String>::new());
    // One of anna's devices declining leaves the other ringing.
    assert_eq!(w.decline("a1", "door"), Vec::<String>::new());
    assert_eq!(
        w.candidate("d", "flat-12", 1),
        [
            r#"[a2] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
            r#"[p] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
        ]
    );
    assert_eq!(w.decline("a2", "door"), Vec::<String>::new());
    // ben, free again, can be called meanwhile.
    assert_eq!(w.call("g", "ben").len(), 1);
    assert_eq!(
        w.decline("p", "door"),
        [r#"[d] <- call_declined {"from":"flat-12"}"#]
    );
    assert_eq!(w.hub.call_count(), 1);
}

#[test]
fn the_caller_hanging_up_stops_every_member() {
    let mut w = World::intercom();
    w.call("d", "flat-12");
    assert_eq!(
        w.end("d", "flat-12"),
        [
            r#"[a1] <- call_ended {"from":"door"}"#,
            r#"[a2] <- call_ended {"from":"door"}"#,
            r#"[b] <- call_ended {"from":"door"}"#,
            r#"[p] <- call_ended {"from":"door"}"#,
        ]
    );
    assert_eq!(w.hub.call_count(), 0);
    // Hanging up addressed to one member works too.
    w.call("d", "flat-12");
    assert_eq!(w.end("d", "panel").len(), 4);
    // A caller leaving ends it for all.
    w.call("d", "flat-12");
    assert_eq!(w.hub.disconnected(&"d", w.now).len(), 4 + 2);
    assert_eq!(w.hub.call_count(), 0);
}

#[test]
fn nobody_can_ring_busy_or_offline() {
    let mut w = World::intercom();
    // desk: guard is there, guard-phone is not. guard is in a call.
    w.call("g", "panel");
    let (error, effects) = w.refused("d", "make_call", r#"{"to":"desk","offer":{}}"#);
    assert_eq!(error, SignalError::UserBusy);
    assert_eq!(effects, [r#"[d] <- call_busy {"targetUser":"desk"}"#]);
    w.end("g", "panel");
    w.hub.disconnected(&"g", w.now);
    let (error, effects) = w.refused("d", "make_call", r#"{"to":"desk","offer":{}}"#);
    assert_eq!(error, SignalError::UserOffline);
    assert_eq!(
        effects,
        [r#"[d] <- call_failed {"error":"user is offline","targetUser":"desk"}"#]
    );
    // Some members offline: the others ring.
    w.hub.disconnected(&"p", w.now);
    assert_eq!(w.call("d", "flat-12").len(), 3);
}

#[test]
fn in_order_rings_each_member_for_its_step_skipping_the_absent() {
    let mut w = World::intercom();
    w.hub.disconnected(&"b", w.now);
    assert_eq!(
        w.call("d", "turns"),
        [
            r#"[a1] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"turns"}"#,
            r#"[a2] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"turns"}"#,
        ]
    );
    w.candidate("d", "turns", 1);
    assert_eq!(
        w.at(Duration::from_millis(4999)).expire(),
        Vec::<String>::new()
    );
    // ben is offline: panel is next, and gets the candidates so far.
    assert_eq!(
        w.at(Duration::from_secs(5)).expire(),
        [
            r#"[p] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"turns"}"#,
            r#"[p] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
            r#"[a1] <- call_timeout {"user":"door"}"#,
            r#"[a2] <- call_timeout {"user":"door"}"#,
        ]
    );
    // The last keeps ringing until the ring timeout.
    assert_eq!(w.at(Duration::from_secs(29)).expire(), Vec::<String>::new());
    assert_eq!(
        w.at(TIMEOUT).expire(),
        [
            r#"[d] <- call_timeout {"user":"turns"}"#,
            r#"[p] <- call_timeout {"user":"door"}"#,
        ]
    );
}

#[test]
fn in_order_a_decline_rings_the_next_at_once() {
    let mut w = World::intercom();
    w.call("d", "turns");
    w.decline("a1", "door");
    assert_eq!(
        w.decline("a2", "door"),
        [r#"[b] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"turns"}"#]
    );
    // ben's step starts now: panel rings at 5 s from here.
    w.at(Duration::from_secs(1));
    assert_eq!(w.decline("b", "door").len(), 1);
    assert_eq!(
        w.decline("p", "door"),
        [r#"[d] <- call_declined {"from":"turns"}"#]
    );
}

#[test]
fn forwarding_after_no_answer_after() {
    let mut w = World::intercom();
    w.call("d", "flat-12");
    w.candidate("d", "flat-12", 1);
    let effects = w.at(Duration::from_secs(20)).expire();
    assert_eq!(
        effects,
        [
            r#"[a1] <- call_ended {"from":"door","reason":"forwarded"}"#,
            r#"[a2] <- call_ended {"from":"door","reason":"forwarded"}"#,
            r#"[b] <- call_ended {"from":"door","reason":"forwarded"}"#,
            r#"[p] <- call_ended {"from":"door","reason":"forwarded"}"#,
            r#"[d] <- call_forwarded {"from":"flat-12","to":"desk"}"#,
            r#"[g] <- incoming_call {"from":"door","offer":{"sdp":"o"},"group":"desk"}"#,
            r#"[g] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
        ]
    );
    // The members are free; the desk rings with its own timeout.
    assert!(w.hub.calls.of("ben").is_none());
    assert_eq!(w.at(Duration::from_secs(49)).expire(), Vec::<String>::new());
    assert_eq!(
        w.at(Duration::from_secs(50)).expire(),
        [
            r#"[d] <- call_timeout {"user":"desk"}"#,
            r#"[g] <- call_timeout {"user":"door"}"#,
        ]
    );
}

#[test]
fn a_forward_to_a_user_at_the_ring_timeout_and_answered_there() {
    let mut w = World::intercom();
    // ben forwards to desk at his ring timeout (no no_answer_after).
    w.call("p", "ben");
    let effects = w.at(TIMEOUT).expire();
    assert_eq!(
        effects,
        [
            r#"[b] <- call_ended {"from":"panel","reason":"forwarded"}"#,
            r#"[p] <- call_forwarded {"from":"ben","to":"desk"}"#,
            r#"[g] <- incoming_call {"from":"panel","offer":{"sdp":"o"},"group":"desk"}"#,
        ]
    );
    assert_eq!(
        w.answer("g", "panel"),
        [r#"[p] <- call_answered {"from":"guard","answer":{"sdp":"a"}}"#]
    );
}

#[test]
fn nobody_there_is_refused_a_forward_to_nobody_goes_on_and_chains_stop() {
    let mut w = World::new();
    let directory = Directory::parse(
        "t.toml",
        r#"
[users.a]
no_answer = "b"
[users.b]
no_answer = "c"
[users.c]
no_answer = "d"
[users.d]
no_answer = "e"
"#,
    )
    .unwrap();
    w.hub.set_directory(Rc::new(directory));
    w.register("x", "caller");
    w.register("e", "e");
    // a is offline: refused as ever, though a forwards.
    let (error, effects) = w.refused("x", "make_call", r#"{"to":"a","offer":{}}"#);
    assert_eq!(error, SignalError::UserOffline);
    assert_eq!(
        effects,
        [r#"[x] <- call_failed {"error":"user is offline","targetUser":"a"}"#]
    );
    // a is there in do-not-disturb: forwarded at once, and b, c, d being
    // offline, on to each one's forward: three hops, then the last fails.
    w.register("aa", "a");
    w.dnd("aa", true);
    let (error, effects) = w.refused("x", "make_call", r#"{"to":"a","offer":{}}"#);
    assert_eq!(error, SignalError::UserOffline);
    assert_eq!(
        effects,
        [
            r#"[x] <- call_forwarded {"from":"a","to":"b"}"#,
            r#"[x] <- call_forwarded {"from":"b","to":"c"}"#,
            r#"[x] <- call_forwarded {"from":"c","to":"d"}"#,
            r#"[x] <- call_failed {"error":"user is offline","targetUser":"d"}"#,
        ]
    );
    // d is there now: the third hop rings.
    w.register("dd", "d");
    assert_eq!(
        w.call("x", "a").last().unwrap(),
        r#"[dd] <- incoming_call {"from":"caller","offer":{"sdp":"o"}}"#
    );
    // Forwarded three times, it rings out instead of a fourth hop.
    assert_eq!(
        w.at(TIMEOUT).expire(),
        [
            r#"[x] <- call_timeout {"user":"d"}"#,
            r#"[dd] <- call_timeout {"user":"caller"}"#,
        ]
    );
}

#[test]
fn do_not_disturb() {
    let mut w = World::intercom();
    // Every device of the user hears it.
    assert_eq!(
        w.dnd("a1", true),
        [r#"[a1] <- dnd {"on":true}"#, r#"[a2] <- dnd {"on":true}"#]
    );
    assert_eq!(w.dnd("a1", true), Vec::<String>::new());
    // Skipped as a member.
    assert_eq!(w.call("d", "flat-12").len(), 2);
    w.end("d", "flat-12");
    // A direct call is refused, without forwarding...
    let (error, effects) = w.refused("g", "make_call", r#"{"to":"anna","offer":{}}"#);
    assert_eq!(error, SignalError::DoNotDisturb);
    assert_eq!(
        effects,
        [
            r#"[g] <- call_failed {"error":"user does not want to be disturbed","targetUser":"anna"}"#
        ]
    );
    // ...and with forwarding, forwarded at once.
    w.dnd("b", true);
    let effects = w.call("p", "ben");
    assert_eq!(
        effects,
        [
            r#"[p] <- call_forwarded {"from":"ben","to":"desk"}"#,
            r#"[g] <- incoming_call {"from":"panel","offer":{"sdp":"o"},"group":"desk"}"#,
        ]
    );
    // A device registering later is told; DND lasts through the grace.
    w.register("a3", "anna");
    w.lose("b");
    w.register("b2", "ben");
    assert!(w.hub.is_dnd("ben"));
    w.dnd("a2", false);
    assert!(!w.hub.is_dnd("anna"));
    // Leaving for good clears it.
    w.hub.disconnected(&"b2", w.now);
    w.register("b3", "ben");
    assert!(!w.hub.is_dnd("ben"));
}

#[test]
fn may_call() {
    let mut w = World::intercom();
    let (error, effects) = w.refused("d", "make_call", r#"{"to":"anna","offer":{}}"#);
    assert_eq!(error, SignalError::NotAllowed);
    assert_eq!(
        effects,
        [r#"[d] <- call_failed {"error":"not allowed to call this user","targetUser":"anna"}"#]
    );
    assert_eq!(w.call("d", "desk").len(), 1);
    w.end("d", "desk");
    // Only the caller's patterns count: anyone may call the door.
    assert_eq!(w.call("a1", "door").len(), 1);
}

#[test]
fn a_group_name_cannot_be_registered() {
    let mut w = World::intercom();
    let (error, effects) = w.refused("x", "register_user", r#"{"userId":"flat-12"}"#);
    assert_eq!(error, SignalError::GroupName);
    assert!(effects[0].contains(r#""success":false"#));
}

#[test]
fn several_devices_ring_together_and_the_call_stays_on_the_one_that_answered() {
    let mut w = World::intercom();
    assert_eq!(w.hub.device_count("anna"), 2);
    assert_eq!(w.hub.users(), ["anna", "ben", "door", "guard", "panel"]);
    assert_eq!(
        w.call("g", "anna"),
        [
            r#"[a1] <- incoming_call {"from":"guard","offer":{"sdp":"o"}}"#,
            r#"[a2] <- incoming_call {"from":"guard","offer":{"sdp":"o"}}"#,
        ]
    );
    assert_eq!(
        w.answer("a2", "guard"),
        [
            r#"[a1] <- call_ended {"from":"guard","reason":"answered_elsewhere"}"#,
            r#"[g] <- call_answered {"from":"anna","answer":{"sdp":"a"}}"#,
        ]
    );
    // Events go to a2 only; a1 cannot act in the call.
    assert_eq!(
        w.candidate("g", "anna", 1),
        [r#"[a2] <- ice_candidate {"from":"guard","candidate":{"c":1}}"#]
    );
    let (error, _) = w.refused("a1", "end_call", r#"{"to":"guard"}"#);
    assert_eq!(error, SignalError::NoSuchCall);
    // anna is busy while a2 is in the call.
    let (error, _) = w.refused("p", "make_call", r#"{"to":"anna","offer":{}}"#);
    assert_eq!(error, SignalError::UserBusy);
    // a1 leaving changes nothing for the call.
    assert_eq!(w.hub.disconnected(&"a1", w.now).len(), 0);
    assert!(w.hub.in_active_call("anna"));
    // A device registering meanwhile gets no call events.
    w.register("a3", "anna");
    assert_eq!(w.candidate("g", "anna", 2).len(), 1);
    // a2 leaving ends the call.
    assert_eq!(
        render(&w.hub.disconnected(&"a2", w.now)),
        [r#"[g] <- call_ended {"from":"anna","reason":"disconnected"}"#]
    );
    assert_eq!(w.hub.devices_of("anna"), ["a3"]);
}

#[test]
fn a_device_past_the_count_replaces_the_oldest() {
    let mut w = World::intercom();
    // anna may have 2: a third replaces a1.
    let effects = w.ok("a3", "register_user", r#"{"userId":"anna"}"#);
    assert_eq!(
        effects,
        [
            r#"[a1] <- force_disconnect {"reason":"new_login"}"#,
            "disconnect [a1]",
            r#"[a3] <- user_registered {"success":true,"userId":"anna"}"#,
        ]
    );
    assert_eq!(w.hub.devices_of("anna"), ["a2", "a3"]);
    // The oldest in a call: the call ends with it.
    w.call("a2", "guard");
    w.answer("g", "anna");
    let effects = w.ok("a4", "register_user", r#"{"userId":"anna"}"#);
    assert_eq!(
        effects,
        [
            r#"[g] <- call_ended {"from":"anna","reason":"new_login"}"#,
            r#"[a2] <- force_disconnect {"reason":"new_login"}"#,
            "disconnect [a2]",
            r#"[a4] <- user_registered {"success":true,"userId":"anna"}"#,
        ]
    );
    // A device logging out leaves the others registered.
    w.ok("a3", "logout_user", "{}");
    assert_eq!(w.hub.devices_of("anna"), ["a4"]);
    assert_eq!(w.hub.user_of(&"a3"), None);
}

#[test]
fn a_caller_with_several_devices_calls_from_one() {
    let mut w = World::intercom();
    w.call("a1", "guard");
    assert_eq!(
        w.answer("g", "anna"),
        [r#"[a1] <- call_answered {"from":"guard","answer":{"sdp":"a"}}"#]
    );
    let (error, _) = w.refused("a2", "ice_candidate", r#"{"to":"guard","candidate":{}}"#);
    assert_eq!(error, SignalError::NoSuchCall);
    let (error, _) = w.refused("a2", "make_call", r#"{"to":"ben","offer":{}}"#);
    assert_eq!(error, SignalError::AlreadyInCall);
}

#[test]
fn a_member_held_by_the_grace_rings_and_answers_on_return() {
    let mut w = World::intercom();
    w.lose("b");
    // Held ben rings (his events are kept), the others ring live.
    let effects = w.call("d", "flat-12");
    assert_eq!(effects.len(), 3, "{effects:?}");
    let effects = w.recover("b");
    assert_eq!(effects, [RING_12[2]]);
    assert_eq!(w.answer("b", "door").len(), 4);
    assert!(w.hub.in_active_call("ben"));
}

#[test]
fn a_held_device_in_a_call_keeps_it_while_the_others_stay() {
    let mut w = World::intercom();
    w.call("g", "anna");
    w.answer("a1", "guard");
    // a1's connection is lost: anna is held, a2 stays registered.
    assert_eq!(
        w.lose("a1"),
        [r#"[g] <- peer_reconnecting {"from":"anna"}"#]
    );
    assert_eq!(w.candidate("g", "anna", 1), Vec::<String>::new());
    assert_eq!(
        w.recover("a1"),
        [
            r#"[a1] <- ice_candidate {"from":"guard","candidate":{"c":1}}"#,
            r#"[g] <- peer_reconnected {"from":"anna"}"#,
        ]
    );
    // Lost again and not back: only that device goes, with the call.
    w.lose("a1");
    let effects = w.at(GRACE).expire();
    assert_eq!(
        effects,
        [
            r#"[g] <- call_ended {"from":"anna","reason":"disconnected"}"#,
            "disconnect [a1]",
        ]
    );
    assert_eq!(w.hub.devices_of("anna"), ["a2"]);
    // A device not in a call is simply gone when lost.
    w.register("a3", "anna");
    assert_eq!(w.lose("a3"), Vec::<String>::new());
    assert_eq!(w.hub.devices_of("anna"), ["a2"]);
}

#[test]
fn a_reload_keeps_calls_in_progress() {
    let mut w = World::intercom();
    w.call("d", "turns");
    // The new directory has no groups: the ringing call keeps its plan.
    w.hub.set_directory(Rc::new(Directory::default()));
    w.decline("a1", "door");
    assert_eq!(w.decline("a2", "door").len(), 1);
    // New calls use the new directory: "turns" is nobody now.
    w.end("d", "turns");
    let (error, _) = w.refused("d", "make_call", r#"{"to":"turns","offer":{}}"#);
    assert_eq!(error, SignalError::UserOffline);
}

#[test]
fn a_device_joining_mid_call_leaves_the_call_where_it_was() {
    let mut w = World::new();
    let directory = Directory::parse("t.toml", "[users.anna]\ndevices = 2\n").unwrap();
    w.hub.set_directory(Rc::new(directory));
    w.register("g", "guard");
    w.register("a1", "anna");
    w.call("g", "anna");
    // A second device while it rings does not ring, and cannot answer.
    w.register("a2", "anna");
    let (error, _) = w.refused("a2", "answer_call", r#"{"to":"guard","answer":{}}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
    w.answer("a1", "guard");
    assert_eq!(
        w.candidate("g", "anna", 1),
        [r#"[a1] <- ice_candidate {"from":"guard","candidate":{"c":1}}"#]
    );
    // The new device's connection lost: nothing held, the call goes on.
    assert_eq!(w.lose("a2"), Vec::<String>::new());
    assert!(!w.hub.is_held("anna"));
    // A ringing device lost is simply gone; the others ring on.
    w.end("g", "anna");
    w.register("a3", "anna");
    w.call("g", "anna");
    assert_eq!(w.lose("a3"), Vec::<String>::new());
    assert_eq!(
        w.candidate("g", "anna", 2),
        [r#"[a1] <- ice_candidate {"from":"guard","candidate":{"c":2}}"#]
    );
}
