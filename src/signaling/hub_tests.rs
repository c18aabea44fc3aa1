//! The hub driven through every transition and refusal with a fake clock.

use super::*;
use crate::signaling::limits::Limits;

const TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(10);

/// A hub, a fake clock, and effects rendered as readable lines.
struct World {
    hub: Hub<&'static str>,
    t0: Instant,
    now: Instant,
}

/// The effects as lines, without the cluster's bookkeeping
/// ([`Effect::CallOver`], [`Effect::Joined`], [`Effect::Left`]), which one
/// node ignores.
fn render(effects: &[Effect<&'static str>]) -> Vec<String> {
    effects
        .iter()
        .filter(|effect| {
            !matches!(
                effect,
                Effect::CallOver { .. }
                    | Effect::Joined { .. }
                    | Effect::Left { .. }
                    | Effect::Barrier
            )
        })
        .map(line)
        .collect()
}

/// Every effect as a line.
fn render_all(effects: &[Effect<&'static str>]) -> Vec<String> {
    effects.iter().map(line).collect()
}

fn line(effect: &Effect<&'static str>) -> String {
    match effect {
        Effect::ToSocket { socket, event } => format!(
            "[{socket}] <- {} {}",
            event.name(),
            serde_json::to_string(event).unwrap()
        ),
        Effect::Disconnect { socket } => format!("disconnect [{socket}]"),
        Effect::ToPeer { user, message } => {
            format!("peer {user} <- {}", serde_json::to_string(message).unwrap())
        }
        Effect::CallOver {
            caller,
            callee,
            member: None,
        } => format!("over {caller} -> {callee}"),
        Effect::CallOver {
            caller,
            callee,
            member: Some(member),
        } => format!("over {caller} -> {callee} ({member})"),
        Effect::ClaimMembers { claim, .. } => format!(
            "claim {} -> {}: {}{}",
            claim.caller,
            claim.called,
            claim.members.join(" "),
            if claim.first_only { " (first)" } else { "" }
        ),
        Effect::Joined { user, .. } => format!("joined {user}"),
        Effect::Barrier => "barrier".into(),
        Effect::Claim { caller, callee, .. } => format!("claim {caller} -> {callee}"),
        Effect::Left { user } => format!("left {user}"),
        Effect::AskDoor { attempt } => format!("ask for {}/{}", attempt.station, attempt.door),
        Effect::OpenDoor {
            attempt, command, ..
        } => format!(
            "run for {}/{}: {}",
            attempt.station,
            attempt.door,
            command.join(" ")
        ),
        Effect::Push { user, message } => {
            format!("push {user} {}", serde_json::to_string(message).unwrap())
        }
        Effect::Shared(shared) => shared.to_string(),
    }
}

impl World {
    fn new() -> World {
        let t0 = Instant::now();
        World {
            hub: Hub::new(TIMEOUT, &Limits::default(), false).with_grace(GRACE),
            t0,
            now: t0,
        }
    }

    /// `socket`'s connection was lost in a way its client may come back from.
    fn lose(&mut self, socket: &'static str) -> Vec<String> {
        render(&self.hub.lost(&socket, self.now))
    }

    /// `socket` was recovered by its client.
    fn recover(&mut self, socket: &'static str) -> Vec<String> {
        render(&self.hub.recovered(&socket, self.now))
    }

    fn expire(&mut self) -> Vec<String> {
        render(&self.hub.expire(self.now))
    }

    fn candidate(&mut self, socket: &'static str, to: &str, n: u32) -> Vec<String> {
        self.ok(
            socket,
            "ice_candidate",
            &format!(r#"{{"to":"{to}","candidate":{{"c":{n}}}}}"#),
        )
    }

    /// alice (c1) in an answered call with bob (c2), carol on c3.
    fn talking() -> World {
        let mut w = World::three();
        w.call("c1", "bob");
        w.answer("c2", "alice");
        w
    }

    fn at(&mut self, offset: Duration) -> &mut World {
        self.now = self.t0 + offset;
        self
    }

    /// Sends `name` with JSON `payload` from `socket`.
    fn send(
        &mut self,
        socket: &'static str,
        name: &str,
        payload: &str,
    ) -> (Result<(), SignalError>, Vec<String>) {
        let raw = RawValue::from_string(payload.to_owned()).unwrap();
        let event = ClientEvent::parse(name, Some(&raw), &Limits::default())
            .unwrap()
            .unwrap();
        let mut outcome = self.hub.handle(&socket, event, self.now);
        if name == "register_user" && outcome.result.is_ok() {
            // As the service does once the registration is answered.
            outcome.effects.extend(self.hub.welcome(&socket, self.now));
        }
        (outcome.result, render(&outcome.effects))
    }

    fn ok(&mut self, socket: &'static str, name: &str, payload: &str) -> Vec<String> {
        let (result, effects) = self.send(socket, name, payload);
        assert_eq!(result, Ok(()), "{name} {payload}: {effects:?}");
        effects
    }

    fn refused(
        &mut self,
        socket: &'static str,
        name: &str,
        payload: &str,
    ) -> (SignalError, Vec<String>) {
        let (result, effects) = self.send(socket, name, payload);
        (result.expect_err(name), effects)
    }

    fn register(&mut self, socket: &'static str, name: &str) {
        self.ok(
            socket,
            "register_user",
            &format!(r#"{{"userId":"{name}"}}"#),
        );
    }

    fn call(&mut self, socket: &'static str, to: &str) -> Vec<String> {
        self.ok(
            socket,
            "make_call",
            &format!(r#"{{"to":"{to}","offer":{{"sdp":"o"}}}}"#),
        )
    }

    fn answer(&mut self, socket: &'static str, to: &str) -> Vec<String> {
        self.ok(
            socket,
            "answer_call",
            &format!(r#"{{"to":"{to}","answer":{{"sdp":"a"}}}}"#),
        )
    }

    /// alice on c1, bob on c2, carol on c3.
    fn three() -> World {
        let mut w = World::new();
        w.register("c1", "alice");
        w.register("c2", "bob");
        w.register("c3", "carol");
        w
    }
}

#[test]
fn registration_and_presence() {
    let mut w = World::new();
    let effects = w.ok("c1", "register_user", r#"{"userId":"alice"}"#);
    assert_eq!(
        effects,
        [r#"[c1] <- user_registered {"success":true,"userId":"alice"}"#]
    );
    assert_eq!(w.hub.user_of(&"c1").map(|u| &**u), Some("alice"));
    assert_eq!(w.hub.socket_of("alice"), Some(&"c1"));
    w.register("c2", "bob");
    assert_eq!(w.hub.users(), ["alice", "bob"]);
    assert_eq!(w.hub.user_count(), 2);
    // Registering the same name again on the same socket changes nothing.
    let effects = w.ok("c1", "register_user", r#"{"userId":"alice"}"#);
    assert_eq!(effects.len(), 1);
    assert_eq!(w.hub.user_count(), 2);
}

#[test]
fn invalid_names_are_refused_not_rewritten() {
    let mut w = World::new();
    for bad in ["", "Bob Smith", "a/b", "<script>", "ünïcode"] {
        let (error, effects) =
            w.refused("c1", "register_user", &format!(r#"{{"userId":"{bad}"}}"#));
        assert_eq!(error, SignalError::InvalidUserName);
        assert_eq!(effects.len(), 1);
        assert!(effects[0].contains(r#""success":false"#), "{effects:?}");
        assert!(
            effects[0].contains(r#""error":"invalid user name"#),
            "{effects:?}"
        );
    }
    let long = "a".repeat(65);
    let (error, _) = w.refused("c1", "register_user", &format!(r#"{{"userId":"{long}"}}"#));
    assert_eq!(error, SignalError::InvalidUserName);
    w.register("c1", &"a".repeat(64));
    w.register("c2", "x.y@z_1-2");
    assert_eq!(w.hub.user_count(), 2);
}

#[test]
fn one_device_per_user() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.answer("c2", "alice");
    // bob logs in on c9: c2 is told and disconnected, alice's call ends.
    let effects = w.ok("c9", "register_user", r#"{"userId":"bob"}"#);
    assert_eq!(
        effects,
        [
            r#"[c1] <- call_ended {"from":"bob","reason":"new_login"}"#,
            r#"[c2] <- force_disconnect {"reason":"new_login"}"#,
            "disconnect [c2]",
            r#"[c9] <- user_registered {"success":true,"userId":"bob"}"#,
        ]
    );
    assert_eq!(w.hub.socket_of("bob"), Some(&"c9"));
    assert_eq!(w.hub.user_of(&"c2"), None);
    assert_eq!(w.hub.call_count(), 0);
    // The old socket's disconnect is then a no-op for everyone.
    assert!(w.hub.disconnected(&"c2", w.now).is_empty());
    assert_eq!(w.hub.socket_of("bob"), Some(&"c9"));
    // The new device receives calls.
    let effects = w.call("c3", "bob");
    assert_eq!(
        effects,
        [r#"[c9] <- incoming_call {"from":"carol","offer":{"sdp":"o"}}"#]
    );
}

#[test]
fn a_socket_that_takes_its_peers_name_mid_call() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.answer("c2", "alice");
    // alice's socket registers as bob: the call's end reaches bob's old
    // device, not alice's own socket, which is bob's now.
    let effects = w.ok("c1", "register_user", r#"{"userId":"bob"}"#);
    assert_eq!(
        effects,
        [
            r#"[c2] <- call_ended {"from":"alice","reason":"logged_out"}"#,
            r#"[c2] <- force_disconnect {"reason":"new_login"}"#,
            "disconnect [c2]",
            r#"[c1] <- user_registered {"success":true,"userId":"bob"}"#,
        ]
    );
    assert_eq!(w.hub.socket_of("bob"), Some(&"c1"));
    assert_eq!(w.hub.socket_of("alice"), None);
    assert_eq!(w.hub.call_count(), 0);
}

#[test]
fn re_registration_mid_call() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.answer("c2", "alice");
    // Same name, same socket: the call goes on.
    w.register("c2", "bob");
    assert!(w.hub.in_active_call("bob"));
    // Another name on the same socket: bob logs out, the call ends.
    let effects = w.ok("c2", "register_user", r#"{"userId":"bobby"}"#);
    assert_eq!(
        effects,
        [
            r#"[c1] <- call_ended {"from":"bob","reason":"logged_out"}"#,
            r#"[c2] <- user_registered {"success":true,"userId":"bobby"}"#,
        ]
    );
    assert_eq!(w.hub.socket_of("bob"), None);
    assert_eq!(w.hub.socket_of("bobby"), Some(&"c2"));
}

#[test]
fn a_complete_call() {
    let mut w = World::three();
    let effects = w.call("c1", "bob");
    assert_eq!(
        effects,
        [r#"[c2] <- incoming_call {"from":"alice","offer":{"sdp":"o"}}"#]
    );
    assert_eq!((w.hub.call_count(), w.hub.ringing_count()), (1, 1));
    assert_eq!(w.hub.calls.next_deadline(), Some(w.t0 + TIMEOUT));

    // Trickle ICE starts before the answer, both ways.
    let effects = w.ok(
        "c1",
        "ice_candidate",
        r#"{"to":"bob","candidate":{"candidate":"1"}}"#,
    );
    assert_eq!(
        effects,
        [r#"[c2] <- ice_candidate {"from":"alice","candidate":{"candidate":"1"}}"#]
    );
    let effects = w.ok(
        "c2",
        "ice_candidate",
        r#"{"to":"alice","candidate":{"candidate":"2"}}"#,
    );
    assert_eq!(
        effects,
        [r#"[c1] <- ice_candidate {"from":"bob","candidate":{"candidate":"2"}}"#]
    );

    w.at(Duration::from_secs(5));
    let effects = w.answer("c2", "alice");
    assert_eq!(
        effects,
        [r#"[c1] <- call_answered {"from":"bob","answer":{"sdp":"a"}}"#]
    );
    assert!(w.hub.in_active_call("alice") && w.hub.in_active_call("bob"));
    assert_eq!(
        w.hub.calls.next_deadline(),
        None,
        "an answered call never times out"
    );
    w.at(Duration::from_secs(3600));
    assert!(w.hub.expire(w.now).is_empty());

    let effects = w.ok(
        "c2",
        "ice_candidate",
        r#"{"to":"alice","candidate":{"candidate":"3"}}"#,
    );
    assert_eq!(effects.len(), 1);
    let effects = w.ok("c2", "end_call", r#"{"to":"alice","from":"bob"}"#);
    assert_eq!(effects, [r#"[c1] <- call_ended {"from":"bob"}"#]);
    assert_eq!(w.hub.call_count(), 0);
}

#[test]
fn the_caller_can_cancel_while_ringing() {
    let mut w = World::three();
    w.call("c1", "bob");
    let effects = w.ok("c1", "end_call", r#"{"to":"bob"}"#);
    assert_eq!(effects, [r#"[c2] <- call_ended {"from":"alice"}"#]);
    assert_eq!((w.hub.call_count(), w.hub.calls.next_deadline()), (0, None));
}

#[test]
fn the_callee_can_hang_up_while_ringing() {
    let mut w = World::three();
    w.call("c1", "bob");
    let effects = w.ok("c2", "end_call", r#"{"to":"alice"}"#);
    assert_eq!(effects, [r#"[c1] <- call_ended {"from":"bob"}"#]);
    assert_eq!((w.hub.call_count(), w.hub.calls.next_deadline()), (0, None));
    // Both are free again.
    w.call("c2", "alice");
}

#[test]
fn decline() {
    let mut w = World::three();
    w.call("c1", "bob");
    let effects = w.ok("c2", "decline_call", r#"{"to":"alice","from":"bob"}"#);
    assert_eq!(effects, [r#"[c1] <- call_declined {"from":"bob"}"#]);
    assert_eq!(w.hub.call_count(), 0);
    // Both are free again.
    w.call("c2", "alice");
}

#[test]
fn a_call_ended_twice() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.answer("c2", "alice");
    w.ok("c1", "end_call", r#"{"to":"bob"}"#);
    let (error, effects) = w.refused("c1", "end_call", r#"{"to":"bob"}"#);
    assert_eq!((error, effects.len()), (SignalError::NoSuchCall, 0));
    let (error, _) = w.refused("c2", "end_call", r#"{"to":"alice"}"#);
    assert_eq!(error, SignalError::NoSuchCall);
}

#[test]
fn only_the_callee_answers_or_declines() {
    let mut w = World::three();
    w.call("c1", "bob");
    // The caller cannot answer their own call.
    let (error, effects) = w.refused("c1", "answer_call", r#"{"to":"bob","answer":{}}"#);
    assert_eq!((error, effects.len()), (SignalError::NoIncomingCall, 0));
    // A stranger cannot, even naming the caller, nor forge `from`.
    let (error, _) = w.refused(
        "c3",
        "answer_call",
        r#"{"to":"alice","from":"bob","answer":{}}"#,
    );
    assert_eq!(error, SignalError::NoIncomingCall);
    let (error, _) = w.refused("c3", "decline_call", r#"{"to":"alice","from":"bob"}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
    // The callee naming the wrong caller.
    let (error, _) = w.refused("c2", "answer_call", r#"{"to":"carol","answer":{}}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
    assert_eq!(w.hub.ringing_count(), 1, "the call still rings");
    // Once answered, a second answer is refused.
    w.answer("c2", "alice");
    let (error, _) = w.refused("c2", "answer_call", r#"{"to":"alice","answer":{}}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
    let (error, _) = w.refused("c2", "decline_call", r#"{"to":"alice"}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
}

#[test]
fn ice_from_a_stranger_goes_nowhere() {
    let mut w = World::three();
    w.call("c1", "bob");
    let (error, effects) = w.refused(
        "c3",
        "ice_candidate",
        r#"{"to":"bob","from":"alice","candidate":{}}"#,
    );
    assert_eq!((error, effects.len()), (SignalError::NoSuchCall, 0));
    // Nor to someone outside one's own call.
    let (error, _) = w.refused("c1", "ice_candidate", r#"{"to":"carol","candidate":{}}"#);
    assert_eq!(error, SignalError::NoSuchCall);
    let (error, _) = w.refused("c3", "ice_candidate", r#"{"to":"alice","candidate":{}}"#);
    assert_eq!(error, SignalError::NoSuchCall);
}

#[test]
fn forged_from_cannot_end_or_start_others_calls() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.answer("c2", "alice");
    let (error, effects) = w.refused("c3", "end_call", r#"{"to":"bob","from":"alice"}"#);
    assert_eq!((error, effects.len()), (SignalError::NoSuchCall, 0));
    assert!(w.hub.in_active_call("alice") && w.hub.in_active_call("bob"));
    // carol claims to be alice calling bob: it is carol's call, and bob is busy.
    let (error, effects) = w.refused(
        "c3",
        "make_call",
        r#"{"to":"bob","from":"alice","offer":{}}"#,
    );
    assert_eq!(error, SignalError::UserBusy);
    assert_eq!(effects, [r#"[c3] <- call_busy {"targetUser":"bob"}"#]);
    // An outgoing event always carries the registered name.
    w.ok("c1", "end_call", r#"{"to":"bob"}"#);
    let effects = w.ok(
        "c3",
        "make_call",
        r#"{"to":"bob","from":"concierge","offer":{}}"#,
    );
    assert_eq!(
        effects,
        [r#"[c2] <- incoming_call {"from":"carol","offer":{}}"#]
    );
}

#[test]
fn make_call_refusals() {
    let mut w = World::three();
    let (error, effects) = w.refused("c1", "make_call", r#"{"to":"dave","offer":{}}"#);
    assert_eq!(error, SignalError::UserOffline);
    assert_eq!(
        effects,
        [r#"[c1] <- call_failed {"error":"user is offline","targetUser":"dave"}"#]
    );

    let (error, effects) = w.refused("c1", "make_call", r#"{"to":"alice","offer":{}}"#);
    assert_eq!(error, SignalError::CallingYourself);
    assert_eq!(
        effects,
        [r#"[c1] <- call_failed {"error":"cannot call yourself","targetUser":"alice"}"#]
    );

    let (error, effects) = w.refused("c1", "make_call", r#"{"to":"no such user!","offer":{}}"#);
    assert_eq!(error, SignalError::InvalidUserName);
    assert!(effects[0].starts_with("[c1] <- call_failed"), "{effects:?}");

    // Ringing: the caller cannot call again, the callee cannot call out.
    w.call("c1", "bob");
    let (error, effects) = w.refused("c1", "make_call", r#"{"to":"carol","offer":{}}"#);
    assert_eq!(error, SignalError::AlreadyInCall);
    assert_eq!(
        effects,
        [r#"[c1] <- call_failed {"error":"you are already in a call","targetUser":"carol"}"#]
    );
    let (error, _) = w.refused("c2", "make_call", r#"{"to":"carol","offer":{}}"#);
    assert_eq!(error, SignalError::AlreadyInCall);
    assert_eq!(w.hub.call_count(), 1);

    // Unregistered sockets change nothing.
    for (name, payload) in [
        ("make_call", r#"{"to":"bob","offer":{}}"#),
        ("answer_call", r#"{"to":"alice","answer":{}}"#),
        ("decline_call", r#"{"to":"alice"}"#),
        ("end_call", r#"{"to":"alice"}"#),
        ("ice_candidate", r#"{"to":"alice","candidate":{}}"#),
        ("logout_user", r#"{"userId":"alice"}"#),
    ] {
        let (error, effects) = w.refused("c7", name, payload);
        assert_eq!(
            (error, effects.len()),
            (SignalError::NotRegistered, 0),
            "{name}"
        );
    }
    assert_eq!((w.hub.call_count(), w.hub.user_count()), (1, 3));
}

#[test]
fn busy_while_ringing_and_active_both_directions() {
    let mut w = World::three();
    w.register("c4", "dave");
    w.call("c1", "bob");
    // carol calls the ringing callee, then the ringing caller.
    for target in ["bob", "alice"] {
        let (error, effects) = w.refused(
            "c3",
            "make_call",
            &format!(r#"{{"to":"{target}","offer":{{}}}}"#),
        );
        assert_eq!(error, SignalError::UserBusy);
        assert_eq!(
            effects,
            [format!(r#"[c3] <- call_busy {{"targetUser":"{target}"}}"#)]
        );
    }
    w.answer("c2", "alice");
    for target in ["bob", "alice"] {
        let (error, _) = w.refused(
            "c4",
            "make_call",
            &format!(r#"{{"to":"{target}","offer":{{}}}}"#),
        );
        assert_eq!(error, SignalError::UserBusy);
    }
    // Busy callers were not put in any call.
    w.call("c3", "dave");
}

#[test]
fn timeout_exactly_at_the_deadline() {
    let mut w = World::three();
    w.call("c1", "bob");
    let just_before = TIMEOUT - Duration::from_nanos(1);
    assert!(w.hub.expire(w.t0 + just_before).is_empty());
    assert_eq!(w.hub.ringing_count(), 1);
    let effects = render(&w.hub.expire(w.t0 + TIMEOUT));
    assert_eq!(
        effects,
        [
            r#"[c1] <- call_timeout {"user":"bob"}"#,
            r#"[c2] <- call_timeout {"user":"alice"}"#,
        ]
    );
    assert_eq!((w.hub.call_count(), w.hub.calls.next_deadline()), (0, None));
    // Both are free again.
    w.call("c2", "alice");
}

#[test]
fn an_answer_at_the_deadline_is_too_late() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.at(TIMEOUT);
    let (error, effects) = w.refused("c2", "answer_call", r#"{"to":"alice","answer":{}}"#);
    assert_eq!(error, SignalError::NoIncomingCall);
    assert_eq!(effects.len(), 2, "the timeouts go out first: {effects:?}");
    assert!(effects.iter().all(|e| e.contains("call_timeout")));
}

#[test]
fn an_answer_just_in_time_stops_the_clock() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.at(TIMEOUT - Duration::from_millis(1));
    w.answer("c2", "alice");
    assert!(w.hub.expire(w.t0 + TIMEOUT * 2).is_empty());
    assert!(w.hub.in_active_call("alice"));
}

#[test]
fn disconnect_mid_call_and_while_ringing() {
    let mut w = World::three();
    w.register("c4", "dave");
    w.call("c1", "bob");
    w.answer("c2", "alice");
    w.call("c3", "dave");
    let effects = render(&w.hub.disconnected(&"c2", w.now));
    assert_eq!(
        effects,
        [r#"[c1] <- call_ended {"from":"bob","reason":"disconnected"}"#]
    );
    assert_eq!(w.hub.socket_of("bob"), None);
    // The ringing callee hears the caller leave.
    let effects = render(&w.hub.disconnected(&"c3", w.now));
    assert_eq!(
        effects,
        [r#"[c4] <- call_ended {"from":"carol","reason":"disconnected"}"#]
    );
    assert_eq!((w.hub.call_count(), w.hub.user_count()), (0, 2));
    // Unknown and repeated disconnects are harmless.
    assert!(w.hub.disconnected(&"c3", w.now).is_empty());
    assert!(w.hub.disconnected(&"zz", w.now).is_empty());
}

#[test]
fn logout() {
    let mut w = World::three();
    w.call("c1", "bob");
    let (error, effects) = w.refused("c2", "logout_user", r#"{"userId":"alice"}"#);
    assert_eq!((error, effects.len()), (SignalError::NotYourName, 0));
    let effects = w.ok("c2", "logout_user", r#"{"userId":"bob"}"#);
    assert_eq!(
        effects,
        [r#"[c1] <- call_ended {"from":"bob","reason":"logged_out"}"#]
    );
    assert_eq!(w.hub.socket_of("bob"), None);
    // Without a userId, the socket's own name logs out.
    w.ok("c3", "logout_user", "{}");
    assert_eq!(w.hub.users(), ["alice"]);
    let (error, _) = w.refused("c3", "logout_user", "{}");
    assert_eq!(error, SignalError::NotRegistered);
    // Logged out, the socket can register again.
    w.register("c3", "carol");
}

#[test]
fn server_shutdown_ends_every_call() {
    let mut w = World::three();
    w.register("c4", "dave");
    w.call("c1", "bob");
    w.answer("c2", "alice");
    w.call("c3", "dave");
    let mut effects = render(&w.hub.end_all_calls(reason::SERVER_SHUTDOWN));
    effects.sort();
    assert_eq!(
        effects,
        [
            r#"[c1] <- call_ended {"from":"bob","reason":"server_shutdown"}"#,
            r#"[c2] <- call_ended {"from":"alice","reason":"server_shutdown"}"#,
            r#"[c3] <- call_ended {"from":"dave","reason":"server_shutdown"}"#,
            r#"[c4] <- call_ended {"from":"carol","reason":"server_shutdown"}"#,
        ]
    );
    assert_eq!(w.hub.call_count(), 0);
}

#[test]
fn call_totals_count_outcomes() {
    let mut w = World::three();
    w.register("c4", "dave");
    w.call("c1", "bob");
    w.answer("c2", "alice");
    w.refused("c3", "make_call", r#"{"to":"bob","offer":{}}"#);
    w.refused("c3", "make_call", r#"{"to":"nobody","offer":{}}"#);
    w.call("c3", "dave");
    w.ok("c4", "decline_call", r#"{"to":"carol"}"#);
    w.call("c3", "dave");
    w.hub.expire(w.t0 + TIMEOUT);
    assert_eq!(
        w.hub.totals(),
        CallTotals {
            answered: 1,
            declined: 1,
            timeout: 1,
            busy: 1,
            failed: 1,
        }
    );
}

#[test]
fn a_token_binds_the_name_a_connection_may_register() {
    let mut w = World::new();
    w.hub.authenticate(&"c1", "concierge");
    let (error, effects) = w.refused("c1", "register_user", r#"{"userId":"alice"}"#);
    assert_eq!(error, SignalError::NotYourToken);
    assert_eq!(
        effects,
        [
            r#"[c1] <- user_registered {"success":false,"userId":"alice","error":"your token is for another user name"}"#
        ]
    );
    w.register("c1", "concierge");
    // Unauthenticated connections are not bound (tokens are off for them).
    w.register("c2", "alice");
    // The binding goes with the connection.
    w.hub.disconnected(&"c1", w.now);
    w.register("c1", "bob");
}

#[test]
fn a_user_cannot_start_calls_faster_than_the_limit() {
    let limits = Limits {
        calls_per_minute: 6.0,
        call_burst: 2.0,
        ..Limits::default()
    };
    let mut w = World::three();
    w.hub = Hub::new(TIMEOUT, &limits, false);
    w.register("c1", "alice");
    w.register("c2", "bob");
    for _ in 0..2 {
        w.call("c1", "bob");
        w.ok("c1", "end_call", r#"{"to":"bob"}"#);
    }
    let (error, effects) = w.refused("c1", "make_call", r#"{"to":"bob","offer":{}}"#);
    assert_eq!(error, SignalError::TooManyCalls);
    assert_eq!(
        effects,
        [r#"[c1] <- call_failed {"error":"too many calls: try again later","targetUser":"bob"}"#]
    );
    // Logging out and back in does not reset the limit.
    w.ok("c1", "logout_user", "{}");
    w.register("c1", "alice");
    let (error, _) = w.refused("c1", "make_call", r#"{"to":"bob","offer":{}}"#);
    assert_eq!(error, SignalError::TooManyCalls);
    // Ten seconds later one more call is allowed; bob's own budget is untouched.
    w.at(Duration::from_secs(10));
    w.call("c1", "bob");
    w.ok("c1", "end_call", r#"{"to":"bob"}"#);
    w.call("c2", "alice");
}

#[test]
fn call_rate_buckets_follow_recent_callers_not_every_name_seen() {
    let mut w = World::new();
    w.register("callee", "bob");
    let names: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    for name in &names {
        w.register("churn", name);
        w.call("churn", "bob");
        w.ok("churn", "end_call", r#"{"to":"bob"}"#);
        w.ok("churn", "logout_user", "{}");
        w.hub.disconnected(&"churn", w.now);
    }
    assert_eq!(w.hub.user_count(), 1);
    assert_eq!(w.hub.call_bucket_count(), 1000);
    // Each bucket lost one of its ten calls, which comes back in six
    // seconds at ten a minute; the sweep after that forgets them all.
    assert_eq!(w.hub.next_deadline(), Some(w.t0 + SWEEP_EVERY));
    w.at(Duration::from_secs(5));
    w.hub.expire(w.now);
    assert_eq!(w.hub.call_bucket_count(), 1000, "not due yet");
    w.at(SWEEP_EVERY);
    assert!(w.hub.expire(w.now).is_empty());
    assert_eq!(w.hub.call_bucket_count(), 0);
    assert!(
        w.hub.call_buckets.capacity() < 100,
        "the map gave its room back"
    );
    assert_eq!(
        w.hub.next_deadline(),
        None,
        "no sweep while there is nothing to sweep"
    );
}

/// Two hubs, as on two nodes: messages for users of the other node go
/// across by hand, as the cluster's pub/sub would carry them.
mod two_nodes {
    use super::*;

    struct Pair {
        a: Hub<&'static str>,
        b: Hub<&'static str>,
        t0: Instant,
        /// Every effect, as `a: …` or `b: …` lines, peer messages included.
        log: Vec<String>,
    }

    impl Pair {
        fn new() -> Pair {
            let mut pair = Pair {
                a: Hub::new(TIMEOUT, &Limits::default(), true).with_grace(GRACE),
                b: Hub::new(TIMEOUT, &Limits::default(), true).with_grace(GRACE),
                t0: Instant::now(),
                log: Vec::new(),
            };
            let at = pair.t0;
            let door = pair
                .a
                .handle(&"d", event("register_user", r#"{"userId":"door"}"#), at);
            pair.deliver(true, door.effects, at);
            let flat = pair
                .b
                .handle(&"f", event("register_user", r#"{"userId":"flat"}"#), at);
            pair.deliver(false, flat.effects, at);
            pair.log.clear();
            pair
        }

        /// Logs `effects` of node A (`on_a`) or B, and carries their peer
        /// messages to the other node, and so on until nothing is left.
        fn deliver(&mut self, on_a: bool, effects: Vec<Effect<&'static str>>, now: Instant) {
            let node = if on_a { "a" } else { "b" };
            for effect in effects {
                self.log.push(format!("{node}: {}", line(&effect)));
                if let Effect::ToPeer { message, .. } = effect {
                    let more = if on_a {
                        self.b.peer(message, now)
                    } else {
                        self.a.peer(message, now)
                    };
                    self.deliver(!on_a, more, now);
                }
            }
        }

        fn send(&mut self, on_a: bool, name: &str, payload: &str, secs: u64) {
            let now = self.t0 + Duration::from_secs(secs);
            let (hub, socket) = if on_a {
                (&mut self.a, "d")
            } else {
                (&mut self.b, "f")
            };
            let outcome = hub.handle(&socket, event(name, payload), now);
            assert_eq!(outcome.result, Ok(()), "{name}: {:?}", outcome.effects);
            self.deliver(on_a, outcome.effects, now);
        }

        /// door (on A) calls flat (on B); the cluster's claim succeeded.
        fn ring(&mut self) {
            let now = self.t0;
            let (caller, offer) = claim(&mut self.a, "d", "flat", now);
            let outcome = self.a.claimed(caller, "flat", offer, Claim::Granted, now);
            assert_eq!(outcome.result, Ok(()));
            self.deliver(true, outcome.effects, now);
        }

        fn take(&mut self) -> Vec<String> {
            std::mem::take(&mut self.log)
        }
    }

    /// `socket` calls `to` on a hub of several nodes: the hub asks for the
    /// claim on both users, and nothing else yet.
    fn claim(
        hub: &mut Hub<&'static str>,
        socket: &'static str,
        to: &str,
        now: Instant,
    ) -> (Rc<str>, Box<RawValue>) {
        let payload = format!(r#"{{"to":"{to}","offer":{{"sdp":"o"}}}}"#);
        let mut outcome = hub.handle(&socket, event("make_call", &payload), now);
        assert_eq!(outcome.result, Ok(()));
        match outcome.effects.pop() {
            Some(Effect::Claim {
                caller,
                callee,
                offer,
                socket: claimer,
            }) if outcome.effects.is_empty() && claimer == socket && &*callee == to => {
                (caller, offer)
            }
            other => panic!("no claim but {other:?}"),
        }
    }

    fn event(name: &str, payload: &str) -> ClientEvent {
        let raw = RawValue::from_string(payload.to_owned()).unwrap();
        ClientEvent::parse(name, Some(&raw), &Limits::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_call_across_nodes() {
        let mut p = Pair::new();
        p.ring();
        assert_eq!(
            p.take(),
            [
                r#"a: peer flat <- {"Ring":{"from":"door","to":"flat","offer":{"sdp":"o"}}}"#,
                r#"b: [f] <- incoming_call {"from":"door","offer":{"sdp":"o"}}"#,
            ]
        );
        p.send(
            false,
            "ice_candidate",
            r#"{"to":"door","candidate":{"c":1}}"#,
            1,
        );
        p.send(
            false,
            "answer_call",
            r#"{"to":"door","answer":{"sdp":"a"}}"#,
            2,
        );
        p.send(
            true,
            "ice_candidate",
            r#"{"to":"flat","candidate":{"c":2}}"#,
            3,
        );
        let log = p.take();
        assert!(
            log.contains(&r#"a: [d] <- ice_candidate {"from":"flat","candidate":{"c":1}}"#.into())
        );
        assert!(
            log.contains(&r#"a: [d] <- call_answered {"from":"flat","answer":{"sdp":"a"}}"#.into())
        );
        assert!(
            log.contains(&r#"b: [f] <- ice_candidate {"from":"door","candidate":{"c":2}}"#.into())
        );
        assert!(p.a.in_active_call("door") && p.b.in_active_call("flat"));
        p.send(true, "end_call", r#"{"to":"flat"}"#, 4);
        assert_eq!(
            p.take(),
            // Released once, where the call ended, before the word goes out.
            [
                "a: over door -> flat",
                r#"a: peer flat <- {"Ended":{"from":"door","to":"flat","reason":null}}"#,
                r#"b: [f] <- call_ended {"from":"door"}"#,
            ]
        );
        assert_eq!((p.a.call_count(), p.b.call_count()), (0, 0));
    }

    #[test]
    fn declined_across_nodes() {
        let mut p = Pair::new();
        p.ring();
        p.take();
        p.send(false, "decline_call", r#"{"to":"door"}"#, 1);
        let log = p.take();
        assert!(
            log.contains(&r#"a: [d] <- call_declined {"from":"flat"}"#.into()),
            "{log:?}"
        );
        let released: Vec<&String> = log.iter().filter(|l| l.contains("over")).collect();
        assert_eq!(released, ["b: over door -> flat"]);
        assert_eq!((p.a.call_count(), p.b.call_count()), (0, 0));
    }

    #[test]
    fn a_timeout_fires_once_for_each_party() {
        let mut p = Pair::new();
        p.ring();
        p.take();
        let t0 = p.t0;
        let at = |s| t0 + Duration::from_secs(s);
        // The callee's node holds on past the deadline: the caller's decides.
        let early = p.b.expire(at(30));
        assert!(early.is_empty());
        let effects = p.a.expire(at(30));
        p.deliver(true, effects, at(30));
        let log = p.take();
        let timeouts: Vec<&String> = log.iter().filter(|l| l.contains("call_timeout")).collect();
        assert_eq!(
            timeouts,
            [
                r#"a: [d] <- call_timeout {"user":"flat"}"#,
                r#"b: [f] <- call_timeout {"user":"door"}"#,
            ]
        );
        // Nothing is left to fire later on either node.
        assert!(p.b.expire(at(60)).is_empty() && p.a.expire(at(60)).is_empty());
    }

    #[test]
    fn the_callee_node_cleans_up_when_the_caller_node_never_says() {
        let mut p = Pair::new();
        p.ring();
        p.take();
        let late = p.t0 + TIMEOUT + peers::PEER_GRACE;
        let effects = p.b.expire(late);
        let log: Vec<String> = effects.iter().map(line).collect();
        assert!(
            log.contains(&r#"[f] <- call_timeout {"user":"door"}"#.into()),
            "{log:?}"
        );
        assert!(log.contains(&"over door -> flat".into()));
    }

    #[test]
    fn registering_elsewhere_kicks_the_old_device_and_ends_its_call() {
        let mut p = Pair::new();
        p.ring();
        p.send(false, "answer_call", r#"{"to":"door","answer":{}}"#, 1);
        p.take();
        // flat registers on A; A's cluster layer tells B to let go.
        let now = p.t0 + Duration::from_secs(2);
        let kick = PeerMessage::Kick {
            user: "flat".into(),
            socket: None,
        };
        let effects = p.b.peer(kick, now);
        p.deliver(false, effects, now);
        let log = p.take();
        for expected in [
            "b: left flat",
            r#"b: [f] <- force_disconnect {"reason":"new_login"}"#,
            "b: disconnect [f]",
            r#"a: [d] <- call_ended {"from":"flat","reason":"new_login"}"#,
        ] {
            assert!(log.contains(&expected.into()), "{expected} not in {log:?}");
        }
        assert_eq!((p.a.call_count(), p.b.call_count()), (0, 0));
    }

    #[test]
    fn a_lost_peer_ends_the_call_with_a_reason() {
        let mut p = Pair::new();
        p.ring();
        p.send(false, "answer_call", r#"{"to":"door","answer":{}}"#, 1);
        p.take();
        let peers = p.a.remote_peers();
        let peers: Vec<(&str, &str, &str)> = peers
            .iter()
            .map(|call| (&*call.user, &*call.caller, &*call.callee))
            .collect();
        assert_eq!(peers, [("flat", "door", "flat")]);
        let effects = p.a.peer_lost("flat", p.t0 + Duration::from_secs(5));
        let log = render_all(&effects);
        assert_eq!(
            log,
            [
                "over door -> flat",
                // In case flat's node lives after all: its side ends too.
                r#"peer flat <- {"Ended":{"from":"door","to":"flat","reason":"disconnected"}}"#,
                r#"[d] <- call_ended {"from":"flat","reason":"disconnected"}"#,
            ]
        );
        // A user connected here is never "lost".
        assert!(p.a.peer_lost("door", p.t0).is_empty());
    }

    #[test]
    fn a_ring_for_a_user_who_left_is_refused() {
        let mut p = Pair::new();
        let gone = p.b.disconnected(&"f", p.t0);
        p.deliver(false, gone, p.t0);
        p.take();
        p.ring();
        let log = p.take();
        let released: Vec<&String> = log.iter().filter(|l| l.contains("over")).collect();
        assert_eq!(released, ["b: over door -> flat"]);
        assert!(
            log.iter().any(|l| l.starts_with("a: [d] <- call_failed")),
            "{log:?}"
        );
        assert_eq!((p.a.call_count(), p.b.call_count()), (0, 0));
    }

    #[test]
    fn a_claim_that_comes_back_too_late_is_released() {
        let mut p = Pair::new();
        let (caller, offer) = claim(&mut p.a, "d", "flat", p.t0);
        let gone = p.a.disconnected(&"d", p.t0);
        p.deliver(true, gone, p.t0);
        p.take();
        let outcome = p.a.claimed(caller, "flat", offer, Claim::Granted, p.t0);
        assert!(outcome.result.is_err());
        assert_eq!(render_all(&outcome.effects), ["over door -> flat"]);
    }

    #[test]
    fn a_claim_granted_before_the_end_of_the_last_call_arrived_is_busy() {
        // flat (B) rang door (A) and hung up; B released both claims, and
        // guard on A got door's claim before B's word reached A.
        let mut p = Pair::new();
        let now = p.t0;
        let guard =
            p.a.handle(&"g", event("register_user", r#"{"userId":"guard"}"#), now);
        p.deliver(true, guard.effects, now);
        let (caller, offer) = claim(&mut p.b, "f", "door", now);
        let rung = p.b.claimed(caller, "door", offer, Claim::Granted, now);
        p.deliver(false, rung.effects, now);
        assert!(p.a.calls.of("door").is_some());
        p.take();
        let (caller, offer) = claim(&mut p.a, "g", "door", now);
        let outcome = p.a.claimed(caller, "door", offer, Claim::Granted, now);
        assert_eq!(outcome.result, Err(SignalError::UserBusy));
        assert_eq!(
            render_all(&outcome.effects),
            [
                "over guard -> door",
                r#"[g] <- call_busy {"targetUser":"door"}"#
            ]
        );
        // door's call with flat is untouched, and ends when the word comes.
        let ended = PeerMessage::Ended {
            from: "flat".into(),
            to: "door".into(),
            reason: None,
        };
        let effects = p.a.peer(ended, now);
        assert_eq!(
            render_all(&effects),
            [
                "missed door from flat",
                r#"[d] <- call_ended {"from":"flat"}"#
            ]
        );
        assert_eq!(p.a.call_count(), 0);
    }

    #[test]
    fn a_ring_from_someone_still_in_a_call_here_is_busy() {
        let mut p = Pair::new();
        p.ring();
        p.take();
        // Redis let door ring a second user on B while B still holds
        // door's first call (an inconsistency): refused, not overwritten.
        let now = p.t0;
        let other =
            p.b.handle(&"o", event("register_user", r#"{"userId":"other"}"#), now);
        p.deliver(false, other.effects, now);
        p.take();
        let ring = PeerMessage::Ring {
            group: None,
            from: "door".into(),
            to: "other".into(),
            offer: RawValue::from_string("{}".into()).unwrap(),
        };
        let effects = p.b.peer(ring, now);
        let log = render_all(&effects);
        assert_eq!(log[0], "over door -> other");
        assert!(log[1].starts_with(r#"peer door <- {"Refused""#), "{log:?}");
        assert!(p.b.in_active_call("flat") || p.b.calls.of("flat").is_some());
    }

    #[test]
    fn a_held_user_who_registers_on_the_other_node_takes_the_call_there() {
        let mut p = Pair::new();
        p.ring();
        p.send(
            false,
            "answer_call",
            r#"{"to":"door","answer":{"sdp":"a"}}"#,
            1,
        );
        p.take();
        // door's connection on A is lost: held there, and flat hears it.
        let at = p.t0 + Duration::from_secs(2);
        let effects = p.a.lost(&"d", at);
        p.deliver(true, effects, at);
        assert_eq!(
            p.take(),
            [
                r#"a: peer flat <- {"Reconnecting":{"from":"door","to":"flat"}}"#,
                r#"b: [f] <- peer_reconnecting {"from":"door"}"#,
            ]
        );
        // flat's candidate is kept for door on A; door stays busy there.
        p.send(
            false,
            "ice_candidate",
            r#"{"to":"door","candidate":{"c":1}}"#,
            3,
        );
        assert!(p.take().iter().all(|l| !l.contains("[d]")));
        assert!(p.a.is_held("door"));
        // door's app registers on B (another network, another node): Redis
        // then kicks A's device, and A hands the call over.
        let at = p.t0 + Duration::from_secs(4);
        let outcome =
            p.b.handle(&"d2", event("register_user", r#"{"userId":"door"}"#), at);
        p.deliver(false, outcome.effects, at);
        let kick = PeerMessage::Kick {
            user: "door".into(),
            socket: Some("d".into()),
        };
        let effects = p.a.peer(kick, at);
        p.deliver(true, effects, at);
        let log = p.take();
        let from = log
            .iter()
            .position(|l| l == "a: disconnect [d]")
            .expect("the lost socket goes");
        assert_eq!(
            log[from..],
            [
                "a: disconnect [d]".to_owned(),
                concat!(
                    r#"a: peer door <- {"Resume":{"user":"door","call":{"caller":"door","callee":"flat","rings_for_ms":null},"#,
                    r#""events":[{"Candidate":{"from":"flat","to":"door","candidate":{"c":1}}}]}}"#
                )
                .to_owned(),
                r#"b: [d2] <- ice_candidate {"from":"flat","candidate":{"c":1}}"#.to_owned(),
                r#"a: peer flat <- {"Reconnected":{"from":"door","to":"flat"}}"#.to_owned(),
                r#"b: [f] <- peer_reconnected {"from":"door"}"#.to_owned(),
            ],
            "{log:?}"
        );
        assert!(log.iter().all(|l| !l.contains("call_ended")));
        // Both parties are on B now: A keeps nothing of the call.
        assert_eq!(
            (p.a.call_count(), p.a.user_count(), p.a.held_count()),
            (0, 0, 0)
        );
        assert!(p.b.in_active_call("door") && p.b.in_active_call("flat"));
        let outcome = p.b.handle(
            &"d2",
            event("ice_candidate", r#"{"to":"flat","candidate":{"c":2}}"#),
            at,
        );
        assert_eq!(
            render(&outcome.effects),
            [r#"[f] <- ice_candidate {"from":"door","candidate":{"c":2}}"#]
        );
    }

    #[test]
    fn a_ringing_call_handed_to_a_node_without_the_peer() {
        // The call moves to a node that had neither party: it rings there
        // for what was left of its time.
        let t0 = Instant::now();
        let mut b: Hub<&'static str> =
            Hub::new(TIMEOUT, &Limits::default(), true).with_grace(GRACE);
        b.handle(&"d2", event("register_user", r#"{"userId":"door"}"#), t0);
        let resume = PeerMessage::Resume {
            user: "door".into(),
            call: Some(crate::signaling::peer::HandedCall {
                group: None,
                caller: "door".into(),
                callee: "flat".into(),
                rings_for_ms: Some(5_000),
            }),
            events: Vec::new(),
        };
        assert!(render(&b.peer(resume, t0)).is_empty());
        assert_eq!(b.ringing_count(), 1);
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(5)));
        // Handed to a user no longer here: the peer hears the end.
        let mut c: Hub<&'static str> = Hub::new(TIMEOUT, &Limits::default(), true);
        let resume = PeerMessage::Resume {
            user: "door".into(),
            call: Some(crate::signaling::peer::HandedCall {
                group: None,
                caller: "door".into(),
                callee: "flat".into(),
                rings_for_ms: None,
            }),
            events: Vec::new(),
        };
        assert_eq!(
            render_all(&c.peer(resume, t0)),
            [
                "over door -> flat",
                r#"peer flat <- {"Ended":{"from":"door","to":"flat","reason":"disconnected"}}"#,
            ]
        );
    }
}

#[test]
fn a_lost_user_is_held_then_resumed_by_recovery() {
    let mut w = World::talking();
    assert_eq!(
        w.lose("c2"),
        [r#"[c1] <- peer_reconnecting {"from":"bob"}"#]
    );
    assert!(w.hub.is_held("bob") && w.hub.in_active_call("bob"));
    assert_eq!((w.hub.held_count(), w.hub.user_count()), (1, 3));
    // What alice sends meanwhile is kept for bob, not sent to the lost socket.
    assert!(w.candidate("c1", "bob", 1).is_empty());
    assert!(w.candidate("c1", "bob", 2).is_empty());
    // bob is still busy for everyone else.
    w.refused("c3", "make_call", r#"{"to":"bob","offer":{}}"#);
    w.at(Duration::from_secs(9));
    assert_eq!(
        w.recover("c2"),
        [
            r#"[c2] <- ice_candidate {"from":"alice","candidate":{"c":1}}"#,
            r#"[c2] <- ice_candidate {"from":"alice","candidate":{"c":2}}"#,
            r#"[c1] <- peer_reconnected {"from":"bob"}"#,
        ]
    );
    assert!(!w.hub.is_held("bob") && w.hub.in_active_call("bob"));
    // The grace's deadline is gone with it: nothing happens at its time.
    w.at(Duration::from_secs(60));
    assert!(w.expire().is_empty());
    assert_eq!(w.candidate("c2", "alice", 3).len(), 1);
    assert_eq!(
        w.hub.grace_totals(),
        GraceTotals {
            resumed: 1,
            lapsed: 0
        }
    );
    // A second drop and a second return, the same way.
    assert_eq!(w.lose("c2").len(), 1);
    assert_eq!(w.recover("c2").len(), 1);
    assert_eq!(w.hub.grace_totals().resumed, 2);
}

#[test]
fn a_held_user_is_resumed_by_registering_again() {
    let mut w = World::talking();
    w.lose("c2");
    w.candidate("c1", "bob", 1);
    // bob's app, on a new socket, registers again: no call_ended, no
    // force_disconnect; the lost socket is given up, the new one gets
    // the registration, then what was kept, and alice hears bob is back.
    let effects = w.ok("c9", "register_user", r#"{"userId":"bob"}"#);
    assert_eq!(
        effects,
        [
            "disconnect [c2]",
            r#"[c9] <- user_registered {"success":true,"userId":"bob"}"#,
            r#"[c9] <- ice_candidate {"from":"alice","candidate":{"c":1}}"#,
            r#"[c1] <- peer_reconnected {"from":"bob"}"#,
        ]
    );
    assert_eq!(w.hub.socket_of("bob"), Some(&"c9"));
    assert_eq!(w.hub.user_of(&"c2"), None);
    assert!(w.hub.in_active_call("bob"));
    assert_eq!(w.answer_candidate_reaches("c9"), 1);
    // The lost socket, should it come back, is nobody.
    assert!(w.recover("c2").is_empty());
}

impl World {
    /// alice's next candidate to bob: how many effects reach `socket`.
    fn answer_candidate_reaches(&mut self, socket: &str) -> usize {
        let effects = self.candidate("c1", "bob", 99);
        effects
            .iter()
            .filter(|e| e.starts_with(&format!("[{socket}]")))
            .count()
    }
}

#[test]
fn a_grace_that_runs_out_ends_as_a_disconnect() {
    let mut w = World::talking();
    w.lose("c2");
    w.at(GRACE - Duration::from_millis(1));
    assert!(w.expire().is_empty());
    assert_eq!(w.hub.next_deadline(), Some(w.t0 + GRACE));
    w.at(GRACE);
    assert_eq!(
        render_all(&w.hub.expire(w.now)),
        [
            "over alice -> bob",
            r#"[c1] <- call_ended {"from":"bob","reason":"disconnected"}"#,
            "left bob",
            "disconnect [c2]",
        ]
    );
    assert!(!w.hub.is_held("bob") && w.hub.socket_of("bob").is_none());
    assert_eq!(
        w.hub.grace_totals(),
        GraceTotals {
            resumed: 0,
            lapsed: 1
        }
    );
    // Too late: the socket is nobody, the name is free.
    assert!(w.recover("c2").is_empty());
    w.register("c9", "bob");
}

#[test]
fn explicit_ends_during_a_grace() {
    // The peer hangs up while bob is away: bob hears it when back.
    let mut w = World::talking();
    w.lose("c2");
    assert!(w.ok("c1", "end_call", r#"{"to":"bob"}"#).is_empty());
    assert_eq!(w.hub.call_count(), 0);
    assert_eq!(w.recover("c2"), [r#"[c2] <- call_ended {"from":"alice"}"#]);
    // The peer's own connection ends for good while bob is away.
    let mut w = World::talking();
    w.lose("c2");
    assert!(render(&w.hub.disconnected(&"c1", w.now)).is_empty());
    assert_eq!(
        w.recover("c2"),
        [r#"[c2] <- call_ended {"from":"alice","reason":"disconnected"}"#]
    );
    // A user who leaves on purpose is not held: socket.disconnect() and
    // logout_user end the call at once.
    let mut w = World::talking();
    assert_eq!(
        render(&w.hub.disconnected(&"c2", w.now)),
        [r#"[c1] <- call_ended {"from":"bob","reason":"disconnected"}"#]
    );
    let mut w = World::talking();
    assert_eq!(
        w.ok("c2", "logout_user", "{}"),
        [r#"[c1] <- call_ended {"from":"bob","reason":"logged_out"}"#]
    );
    // No grace at all: a lost connection is a disconnect.
    let mut w = World::talking();
    w.hub = std::mem::replace(&mut w.hub, Hub::new(TIMEOUT, &Limits::default(), false))
        .with_grace(Duration::ZERO);
    assert_eq!(
        w.lose("c2"),
        [r#"[c1] <- call_ended {"from":"bob","reason":"disconnected"}"#]
    );
    assert_eq!(w.hub.held_count(), 0);
}

#[test]
fn a_new_login_on_a_live_device_still_replaces_it() {
    let mut w = World::talking();
    // bob is live on c2: a registration elsewhere is a new login.
    let effects = w.ok("c9", "register_user", r#"{"userId":"bob"}"#);
    assert_eq!(
        effects[0],
        r#"[c1] <- call_ended {"from":"bob","reason":"new_login"}"#
    );
    assert_eq!(
        effects[1],
        r#"[c2] <- force_disconnect {"reason":"new_login"}"#
    );
    // alice held, a new login elsewhere takes over instead.
    let mut w = World::talking();
    w.lose("c1");
    let effects = w.ok("c8", "register_user", r#"{"userId":"alice"}"#);
    assert!(
        effects
            .iter()
            .all(|e| !e.contains("call_ended") && !e.contains("force")),
        "{effects:?}"
    );
    assert!(w.hub.in_active_call("alice"));
}

#[test]
fn a_call_to_a_held_user_rings_and_waits_for_them() {
    let mut w = World::three();
    w.lose("c2");
    // carol sees ordinary ringing; bob's incoming call is kept.
    assert!(w.call("c3", "bob").is_empty());
    assert_eq!(w.hub.ringing_count(), 1);
    w.at(Duration::from_secs(5));
    let effects = w.ok("c10", "register_user", r#"{"userId":"bob"}"#);
    assert_eq!(
        effects[1..],
        [
            r#"[c10] <- user_registered {"success":true,"userId":"bob"}"#.to_owned(),
            r#"[c10] <- incoming_call {"from":"carol","offer":{"sdp":"o"}}"#.to_owned(),
        ]
    );
    // carol never heard bob was away, so she hears nothing of his return.
    assert_eq!(effects.len(), 3, "{effects:?}");
    w.answer("c10", "carol");
    assert!(w.hub.in_active_call("carol"));
}

#[test]
fn the_ring_timeout_keeps_running_while_held() {
    let mut w = World::three();
    w.call("c1", "bob");
    w.at(Duration::from_secs(25));
    w.lose("c2");
    w.at(TIMEOUT);
    // alice hears the timeout now; bob's is kept for him.
    assert_eq!(w.expire(), [r#"[c1] <- call_timeout {"user":"bob"}"#]);
    assert!(w.hub.is_held("bob"));
    w.at(TIMEOUT + Duration::from_secs(1));
    // bob had seen the incoming call before he was lost: he hears it rang out.
    assert_eq!(
        w.recover("c2"),
        [r#"[c2] <- call_timeout {"user":"alice"}"#]
    );
    // Had bob not come back, the lapse later finds no call to end.
    let mut w = World::three();
    w.call("c1", "bob");
    w.lose("c2");
    w.at(GRACE);
    assert_eq!(
        w.expire(),
        [
            r#"[c1] <- call_ended {"from":"bob","reason":"disconnected"}"#,
            "disconnect [c2]"
        ]
    );
}

#[test]
fn glare_with_a_held_user() {
    let mut w = World::three();
    w.lose("c2");
    // alice calls bob, who is away; bob's app, back, calls alice at once
    // (before it saw the kept incoming_call): bob is in that call already.
    w.call("c1", "bob");
    assert_eq!(
        w.recover("c2"),
        [r#"[c2] <- incoming_call {"from":"alice","offer":{"sdp":"o"}}"#]
    );
    let (error, effects) = w.refused("c2", "make_call", r#"{"to":"alice","offer":{}}"#);
    assert_eq!(error, SignalError::AlreadyInCall);
    assert_eq!(effects.len(), 1);
    // The ringing call is untouched: bob answers it.
    w.answer("c2", "alice");
    assert!(w.hub.in_active_call("alice"));
}

#[test]
fn what_is_kept_for_a_held_user_is_bounded() {
    let mut w = World::talking();
    w.lose("c2");
    for n in 0..MAX_HELD_EVENTS as u32 {
        w.candidate("c1", "bob", n);
    }
    assert_eq!(w.hub.next_deadline(), Some(w.t0 + GRACE));
    // One more than the bound: the grace ends at the next expiry.
    w.candidate("c1", "bob", 9999);
    assert_eq!(w.hub.next_deadline(), Some(w.now));
    let effects = w.expire();
    assert_eq!(
        effects,
        [
            r#"[c1] <- call_ended {"from":"bob","reason":"disconnected"}"#,
            "disconnect [c2]"
        ]
    );
    assert_eq!(w.hub.held_count(), 0);
}

#[test]
fn call_update_is_for_the_parties_of_an_active_call() {
    let mut w = World::three();
    let update = r#"{"to":"bob","description":{"type":"offer","sdp":"v=0 restart"}}"#;
    // Not in a call, or only ringing: refused.
    assert_eq!(
        w.refused("c1", "call_update", update).0,
        SignalError::NoSuchCall
    );
    w.call("c1", "bob");
    assert_eq!(
        w.refused("c1", "call_update", update).0,
        SignalError::NoSuchCall
    );
    w.answer("c2", "alice");
    assert_eq!(
        w.ok("c1", "call_update", update),
        [
            r#"[c2] <- call_update {"from":"alice","description":{"type":"offer","sdp":"v=0 restart"}}"#
        ]
    );
    let back = r#"{"to":"alice","description":{"type":"answer","sdp":"v=0 a"}}"#;
    assert_eq!(
        w.ok("c2", "call_update", back),
        [r#"[c1] <- call_update {"from":"bob","description":{"type":"answer","sdp":"v=0 a"}}"#]
    );
    // carol is in no call with alice.
    let stranger = r#"{"to":"alice","description":{"type":"offer","sdp":"x"}}"#;
    assert_eq!(
        w.refused("c3", "call_update", stranger).0,
        SignalError::NoSuchCall
    );
    // Bounded like an SDP.
    let big = format!(
        r#"["call_update",{{"to":"bob","description":{{"sdp":"{}"}}}}]"#,
        "x".repeat(70_000)
    );
    let raw: Vec<Box<RawValue>> = serde_json::from_str(&big).unwrap();
    assert!(matches!(
        ClientEvent::parse("call_update", Some(&raw[1]), &Limits::default()),
        Err(SignalError::InvalidPayload(_))
    ));
}

#[path = "hub_groups_tests.rs"]
mod groups;

#[path = "hub_cluster_tests.rs"]
mod cluster;

#[path = "hub_doors_tests.rs"]
mod doors;

#[path = "hub_push_tests.rs"]
mod push;
