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

pub(super) fn subscription(endpoint: &str) -> String {
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
    pinned(&mut w);
    w.call("d", "anna");
    // The end, then what to show: a missed call.
    assert_eq!(
        w.ok("d", "end_call", r#"{"to":"anna"}"#),
        [
            cancelled("c0", "ended"),
            r#"push anna {"type":"missed_call","from":"door","at":"2023-11-14T22:13:20.000Z","reason":"cancelled","call":"c0"}"#.to_owned()
        ]
    );
    assert!(!w.hub.is_waking("anna"));
    w.at(Duration::from_secs(1));
    w.call("d", "anna");
    w.at(TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        w.expire(),
        [
            r#"[d] <- call_timeout {"user":"anna"}"#.to_owned(),
            cancelled("c1", "timeout"),
            r#"push anna {"type":"missed_call","from":"door","at":"2023-11-14T22:13:21.000Z","reason":"timeout","call":"c1"}"#.to_owned()
        ]
    );
    // A device that registers too late finds no call, only the missed ones.
    w.at(TIMEOUT + Duration::from_secs(2));
    let (_, got) = w.send("a2", "register_user", r#"{"userId":"anna"}"#);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].starts_with("[a2] <- missed_calls "), "{got:?}");
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
    let (anna, mut effects) = (Rc::from("anna"), Vec::new());
    assert!(
        w.hub
            .remove_subscription(&anna, "https://push.example/9", &mut effects)
    );
    assert!(
        !w.hub
            .remove_subscription(&anna, "https://push.example/9", &mut effects)
    );
    assert!(effects.is_empty());
    assert_eq!(w.hub.subscription_count(), MAX_SUBSCRIPTIONS_PER_USER - 1);
}

/// The hub's clock started at 2023-11-14T22:13:20Z.
fn pinned(w: &mut World) {
    w.hub.set_wall_clock(WallClock {
        instant: w.t0,
        system: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    });
}

#[test]
fn calls_that_rang_unanswered_are_missed_and_told_at_the_next_registration() {
    let mut w = World::sleeping();
    pinned(&mut w);
    w.register("a", "anna");
    // Rang out.
    w.call("d", "anna");
    w.at(TIMEOUT);
    w.expire();
    // The caller gave up.
    w.at(TIMEOUT + Duration::from_secs(10));
    w.call("d", "anna");
    w.ok("d", "end_call", r#"{"to":"anna"}"#);
    // Another member of the group answered.
    w.at(TIMEOUT + Duration::from_secs(20));
    w.call("d", "flat-12");
    w.answer("b", "door");
    w.ok("d", "end_call", r#"{"to":"ben"}"#);
    // Declined and answered calls are not missed.
    w.call("d", "anna");
    w.ok("a", "decline_call", r#"{"to":"door"}"#);
    w.call("d", "anna");
    w.answer("a", "door");
    w.ok("d", "end_call", r#"{"to":"anna"}"#);
    assert_eq!(w.hub.missed_count_of("anna"), 3);
    assert_eq!(w.hub.missed_count_of("ben"), 0);
    let (_, got) = w.send("a2", "register_user", r#"{"userId":"anna"}"#);
    let told = got.iter().find(|l| l.starts_with("[a2] <- missed_calls"));
    assert_eq!(
        told.map(String::as_str).unwrap_or_default(),
        concat!(
            r#"[a2] <- missed_calls {"calls":["#,
            r#"{"from":"door","at":"2023-11-14T22:13:20.000Z","reason":"timeout"},"#,
            r#"{"from":"door","at":"2023-11-14T22:14:00.000Z","reason":"cancelled"},"#,
            r#"{"from":"door","group":"flat-12","at":"2023-11-14T22:14:10.000Z","reason":"answered_elsewhere"}"#,
            "]}"
        )
    );
    // Seen: forgotten, for every device.
    w.ok("a2", "missed_calls_seen", "{}");
    assert_eq!(w.hub.missed_count_of("anna"), 0);
    let (_, got) = w.send("a3", "register_user", r#"{"userId":"anna"}"#);
    assert!(!got.iter().any(|l| l.contains("missed_calls")), "{got:?}");
}

#[test]
fn missed_calls_are_bounded_per_user() {
    let mut w = World::sleeping();
    w.register("a", "anna");
    for i in 0..MAX_MISSED_PER_USER as u64 + 5 {
        w.at(Duration::from_secs(10 * i));
        w.call("d", "anna");
        w.ok("d", "end_call", r#"{"to":"anna"}"#);
    }
    assert_eq!(w.hub.missed_count_of("anna"), MAX_MISSED_PER_USER);
}

#[test]
fn subscriptions_and_missed_calls_are_kept_and_read_back() {
    let mut w = World::sleeping();
    assert!(w.hub.take_state_changed(), "a subscription was made");
    w.call("d", "anna");
    w.ok("d", "end_call", r#"{"to":"anna"}"#);
    assert!(w.hub.take_state_changed(), "a call was missed");
    assert!(!w.hub.take_state_changed());
    let kept = w.hub.kept();
    let text = serde_json::to_string(&kept).unwrap();
    let back: Kept = serde_json::from_str(&text).unwrap();
    assert_eq!(back, kept);
    let mut restarted = World::new();
    restarted.hub.restore(back);
    assert_eq!(restarted.hub.subscriptions_of("anna").len(), 1);
    assert_eq!(restarted.hub.missed_count_of("anna"), 1);
    // A subscription the policy refuses now, or a bad name, is left out.
    let mut bad = kept.clone();
    bad.subscriptions
        .insert("no spaces".into(), kept.subscriptions["anna"].clone());
    bad.subscriptions.get_mut("anna").unwrap()[0].endpoint = "http://ntfy.lan/x".into();
    let mut strict = World::new();
    strict.hub.restore(bad);
    assert_eq!(strict.hub.subscription_count(), 0);
    assert_eq!(strict.hub.missed_count_of("anna"), 1);
}
