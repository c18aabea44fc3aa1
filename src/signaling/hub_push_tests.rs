//! Users whose phones sleep, with a fake clock: a call to a user with a
//! push subscription and no device connected rings, pushes, and reaches
//! the device that registers in time; its end is pushed when none did.

use super::*;
use crate::signaling::directory::Directory;

const DIRECTORY: &str = r#"
[groups."flat-12"]
members = ["anna", "ben"]
"#;

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

fn subscription(endpoint: &str) -> String {
    format!(
        r#"{{"subscription":{{"endpoint":"{endpoint}","keys":{{"p256dh":"{P256DH}","auth":"{AUTH}"}}}}}}"#
    )
}

impl World {
    /// door on d, ben on b; anna subscribed from a, then her phone slept.
    fn sleeping() -> World {
        let mut w = World::new();
        let directory = Directory::parse("test.toml", DIRECTORY).unwrap();
        w.hub.set_directory(Rc::new(directory));
        w.register("d", "door");
        w.register("b", "ben");
        w.register("a", "anna");
        w.ok(
            "a",
            "register_push",
            &subscription("https://push.example/anna-phone"),
        );
        w.hub.disconnected(&"a", w.now);
        w
    }
}

fn incoming(from: &str, group: Option<&str>, call: &str) -> String {
    let group = group.map_or(String::new(), |g| format!(r#","group":"{g}""#));
    format!(r#"push anna {{"type":"incoming_call","from":"{from}"{group},"call":"{call}"}}"#)
}

fn cancelled(call: &str, reason: &str) -> String {
    format!(r#"push anna {{"type":"call_cancelled","call":"{call}","reason":"{reason}"}}"#)
}

#[test]
fn a_call_to_a_sleeping_user_rings_pushes_and_reaches_the_device_that_registers() {
    let mut w = World::sleeping();
    assert_eq!(w.hub.subscriptions_of("anna").len(), 1);
    assert_eq!(w.call("d", "anna"), [incoming("door", None, "c0")]);
    assert!(w.hub.is_waking("anna"));
    // The caller's candidates meanwhile are kept for her.
    assert!(w.candidate("d", "anna", 1).is_empty());
    // Her phone woke and registers within the ring time: the call, then
    // the candidates so far.
    w.at(Duration::from_secs(5));
    let (_, got) = w.send("a2", "register_user", r#"{"userId":"anna"}"#);
    assert_eq!(
        got,
        [
            r#"[a2] <- user_registered {"success":true,"userId":"anna"}"#,
            r#"[a2] <- incoming_call {"from":"door","offer":{"sdp":"o"}}"#,
            r#"[a2] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
        ]
    );
    assert!(!w.hub.is_waking("anna"));
    assert_eq!(
        w.answer("a2", "door"),
        [r#"[d] <- call_answered {"from":"anna","answer":{"sdp":"a"}}"#]
    );
}

#[test]
fn the_caller_giving_up_or_the_ring_time_running_out_is_pushed() {
    let mut w = World::sleeping();
    w.call("d", "anna");
    assert_eq!(
        w.ok("d", "end_call", r#"{"to":"anna"}"#),
        [cancelled("c0", "ended")]
    );
    assert!(!w.hub.is_waking("anna"));
    w.at(Duration::from_secs(1));
    w.call("d", "anna");
    w.at(TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        w.expire(),
        [
            r#"[d] <- call_timeout {"user":"anna"}"#.to_owned(),
            cancelled("c1", "timeout")
        ]
    );
    // A device that registers too late finds nothing.
    w.at(TIMEOUT + Duration::from_secs(2));
    let (_, got) = w.send("a2", "register_user", r#"{"userId":"anna"}"#);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn a_sleeping_member_of_a_group_is_pushed_and_told_when_another_answers() {
    let mut w = World::sleeping();
    let rang = w.call("d", "flat-12");
    assert!(
        rang.contains(&incoming("door", Some("flat-12"), "c0")),
        "{rang:?}"
    );
    assert!(
        rang.iter().any(|l| l.starts_with("[b] <- incoming_call")),
        "{rang:?}"
    );
    let got = w.answer("b", "door");
    assert!(
        got.contains(&cancelled("c0", "answered_elsewhere")),
        "{got:?}"
    );
    assert!(!w.hub.is_waking("anna"));
}

#[test]
fn without_a_subscription_a_user_with_no_device_is_offline_as_before() {
    let mut w = World::sleeping();
    w.ok("a0", "register_user", r#"{"userId":"anna"}"#);
    w.ok(
        "a0",
        "unregister_push",
        r#"{"endpoint":"https://push.example/anna-phone"}"#,
    );
    w.hub.disconnected(&"a0", w.now);
    assert_eq!(w.hub.subscription_count(), 0);
    let (error, got) = w.refused("d", "make_call", r#"{"to":"anna","offer":{"sdp":"o"}}"#);
    assert_eq!(error, SignalError::UserOffline);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn subscriptions_are_bounded_replaced_and_checked() {
    let mut w = World::sleeping();
    w.register("a", "anna");
    // The same endpoint again replaces it; past the bound the oldest goes.
    w.ok(
        "a",
        "register_push",
        &subscription("https://push.example/anna-phone"),
    );
    assert_eq!(w.hub.subscription_count(), 1);
    for i in 0..MAX_SUBSCRIPTIONS_PER_USER + 2 {
        w.ok(
            "a",
            "register_push",
            &subscription(&format!("https://push.example/{i}")),
        );
    }
    let theirs = w.hub.subscriptions_of("anna");
    assert_eq!(theirs.len(), MAX_SUBSCRIPTIONS_PER_USER);
    assert_eq!(w.hub.subscription_count(), MAX_SUBSCRIPTIONS_PER_USER);
    assert!(
        theirs
            .iter()
            .all(|s| s.endpoint != "https://push.example/anna-phone")
    );
    // A push service on the LAN is refused unless listed; only the
    // registered may subscribe.
    let (error, _) = w.refused("a", "register_push", &subscription("http://ntfy.lan/up1"));
    assert!(
        error.to_string().starts_with("push endpoint not allowed"),
        "{error}"
    );
    let (error, _) = w.refused(
        "x",
        "register_push",
        &subscription("https://push.example/x"),
    );
    assert_eq!(error, SignalError::NotRegistered);
    // A push service that says the subscription is gone: it goes.
    assert!(w.hub.remove_subscription("anna", "https://push.example/9"));
    assert!(!w.hub.remove_subscription("anna", "https://push.example/9"));
    assert_eq!(w.hub.subscription_count(), MAX_SUBSCRIPTIONS_PER_USER - 1);
}
