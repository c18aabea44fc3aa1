//! Door stations in the hub, with a fake clock: who may open which door,
//! the station's command, the hang-up after an opening, the maximum
//! length of a call, and the counts of every attempt.

use super::*;
use crate::signaling::directory::Directory;

const DIRECTORY: &str = r#"
[users.front-door]
kind = "door"
doors = ["main", "garage"]
openers = ["concierge", "guard-*"]
hang_up_after_open = "5s"
max_call = "2m"

[users.side-door]
kind = "door"
doors = ["side"]
openers = ["concierge"]
open_command = ["/usr/local/bin/relay", "side"]

[groups."flat-12"]
members = ["anna", "ben"]
"#;

impl World {
    /// The hub with [`DIRECTORY`]; front-door on fd, side-door on sd,
    /// anna on a, ben on b, concierge on c, guard-1 on g, eve on e.
    fn doors() -> World {
        let mut w = World::new();
        let directory = Directory::parse("test.toml", DIRECTORY).unwrap();
        w.hub.set_directory(Rc::new(directory));
        for (socket, name) in [
            ("fd", "front-door"),
            ("sd", "side-door"),
            ("a", "anna"),
            ("b", "ben"),
            ("c", "concierge"),
            ("g", "guard-1"),
            ("e", "eve"),
        ] {
            w.register(socket, name);
        }
        w
    }

    fn open(
        &mut self,
        socket: &'static str,
        to: &str,
        door: &str,
    ) -> Result<Vec<String>, SignalError> {
        let payload = format!(r#"{{"to":"{to}","door":"{door}"}}"#);
        match self.send(socket, "open_door", &payload) {
            (Ok(()), effects) => Ok(effects),
            (Err(error), _) => Err(error),
        }
    }

    fn door_count(&self, station: &str, door: &str, result: &str) -> u64 {
        self.hub
            .door_totals()
            .into_iter()
            .find(|((s, d, r), _)| &**s == station && &**d == door && *r == result)
            .map_or(0, |(_, count)| count)
    }
}

fn opened(by: &str, door: &str) -> Vec<String> {
    vec![format!(
        r#"[fd] <- door_open {{"from":"{by}","door":"{door}"}}"#
    )]
}

#[test]
fn the_other_party_of_a_call_with_the_station_may_open() {
    let mut w = World::doors();
    w.call("fd", "flat-12");
    // Ringing: every member who rings may open (a visitor at the door is
    // let in before anyone picks up).
    assert_eq!(w.open("b", "front-door", "main"), Ok(opened("ben", "main")));
    w.answer("a", "front-door");
    assert_eq!(
        w.open("a", "front-door", "garage"),
        Ok(opened("anna", "garage"))
    );
    // ben no longer rings: he is nobody to this door now.
    assert_eq!(
        w.open("b", "front-door", "main"),
        Err(SignalError::NotAllowedToOpen)
    );
    // A call the resident made to the station counts too.
    w.ok("a", "end_call", r#"{"to":"front-door"}"#);
    assert_eq!(
        w.open("a", "front-door", "main"),
        Err(SignalError::NotAllowedToOpen),
        "a finished call opens nothing"
    );
    w.call("a", "front-door");
    assert_eq!(
        w.open("a", "front-door", "main"),
        Ok(opened("anna", "main"))
    );
    assert_eq!(w.door_count("front-door", "main", "opened"), 2);
    assert_eq!(w.door_count("front-door", "garage", "opened"), 1);
    assert_eq!(w.door_count("front-door", "main", "refused"), 2);
}

#[test]
fn openers_open_without_a_call_and_strangers_never() {
    let mut w = World::doors();
    assert_eq!(
        w.open("c", "front-door", "main"),
        Ok(opened("concierge", "main"))
    );
    assert_eq!(
        w.open("g", "front-door", "garage"),
        Ok(opened("guard-1", "garage"))
    );
    assert_eq!(
        w.open("e", "front-door", "main"),
        Err(SignalError::NotAllowedToOpen)
    );
    // The station itself is no opener of its own doors.
    assert_eq!(
        w.open("fd", "front-door", "main"),
        Err(SignalError::NotAllowedToOpen)
    );
}

#[test]
fn only_the_stations_own_doors_and_only_while_it_is_there() {
    let mut w = World::doors();
    w.call("fd", "flat-12");
    for (to, door) in [
        ("front-door", "side"),
        ("flat-12", "main"),
        ("anna", "main"),
        ("nobody", "x"),
    ] {
        assert_eq!(
            w.open("a", to, door),
            Err(SignalError::NoSuchDoor),
            "{to}/{door}"
        );
    }
    // Refusals for doors nobody has are counted, without their names.
    assert_eq!(w.door_count("", "", "refused"), 4);
    w.ok("sd", "logout_user", "{}");
    assert_eq!(
        w.open("c", "side-door", "side"),
        Err(SignalError::DoorOffline)
    );
    assert_eq!(w.door_count("side-door", "side", "refused"), 1);
}

#[test]
fn a_station_with_a_command_has_it_run() {
    let mut w = World::doors();
    w.call("sd", "anna");
    assert_eq!(
        w.open("a", "side-door", "side"),
        Ok(vec![
            r#"[sd] <- door_open {"from":"anna","door":"side"}"#.to_owned(),
            "run for side-door/side: /usr/local/bin/relay side".to_owned(),
        ])
    );
    // Counted once the command's result is in.
    assert_eq!(w.door_count("side-door", "side", "opened"), 0);
    let attempt = DoorAttempt {
        by: "anna".into(),
        station: "side-door".into(),
        door: "side".into(),
        call: None,
        remote: false,
    };
    w.hub.door_done(
        attempt.clone(),
        DoorResult::Opened(Some(0)),
        w.now,
        &mut Vec::new(),
    );
    w.hub.door_done(
        attempt,
        DoorResult::TimedOut(TIMEOUT),
        w.now,
        &mut Vec::new(),
    );
    assert_eq!(w.door_count("side-door", "side", "opened"), 1);
    assert_eq!(w.door_count("side-door", "side", "timeout"), 1);
}

#[test]
fn the_station_hangs_up_after_the_door_opened() {
    let mut w = World::doors();
    w.call("fd", "flat-12");
    w.answer("a", "front-door");
    w.at(Duration::from_secs(10));
    w.open("a", "front-door", "main").unwrap();
    w.at(Duration::from_secs(14));
    assert_eq!(w.expire(), Vec::<String>::new());
    // A second opening does not put the hang-up off.
    w.open("a", "front-door", "garage").unwrap();
    w.at(Duration::from_secs(15));
    assert_eq!(
        w.expire(),
        [
            r#"[fd] <- call_ended {"from":"anna","reason":"door_opened"}"#,
            r#"[a] <- call_ended {"from":"front-door","reason":"door_opened"}"#,
        ]
    );
    assert_eq!(w.hub.call_count(), 0);
    assert!(w.hub.ends.is_empty());
}

#[test]
fn a_door_opened_while_the_call_rings_ends_it_for_everyone_ringing() {
    let mut w = World::doors();
    w.call("fd", "flat-12");
    // ben lets the visitor in without answering; anna rings on.
    w.open("b", "front-door", "main").unwrap();
    w.at(Duration::from_secs(5));
    assert_eq!(
        w.expire(),
        [
            r#"[fd] <- call_ended {"from":"flat-12","reason":"door_opened"}"#,
            r#"[a] <- call_ended {"from":"front-door","reason":"door_opened"}"#,
            r#"[b] <- call_ended {"from":"front-door","reason":"door_opened"}"#,
        ]
    );
    assert_eq!(w.hub.call_count(), 0);
    // Answered meanwhile, the call ends all the same, at the same time.
    w.call("fd", "anna");
    w.open("a", "front-door", "main").unwrap();
    w.at(Duration::from_secs(7));
    w.answer("a", "front-door");
    w.at(Duration::from_secs(10));
    assert_eq!(
        w.expire(),
        [
            r#"[fd] <- call_ended {"from":"anna","reason":"door_opened"}"#,
            r#"[a] <- call_ended {"from":"front-door","reason":"door_opened"}"#,
        ]
    );
}

#[test]
fn a_call_ends_at_its_maximum_length_after_a_warning() {
    let mut w = World::doors();
    w.call("fd", "flat-12");
    w.at(Duration::from_secs(20));
    w.answer("a", "front-door");
    // front-door's max_call is 2m, from the answer.
    w.at(Duration::from_secs(129));
    assert_eq!(w.expire(), Vec::<String>::new());
    w.at(Duration::from_secs(130));
    assert_eq!(
        w.expire(),
        [
            r#"[fd] <- call_ending {"seconds":10}"#,
            r#"[a] <- call_ending {"seconds":10}"#,
        ]
    );
    w.at(Duration::from_secs(140));
    assert_eq!(
        w.expire(),
        [
            r#"[fd] <- call_ended {"from":"anna","reason":"max_duration"}"#,
            r#"[a] <- call_ended {"from":"front-door","reason":"max_duration"}"#,
        ]
    );
}

#[test]
fn the_servers_limit_applies_to_every_call_and_a_hang_up_forgets_it() {
    let mut w = World::new();
    w.hub =
        Hub::new(TIMEOUT, &Limits::default(), false).with_max_call(Some(Duration::from_secs(60)));
    w.register("c1", "alice");
    w.register("c2", "bob");
    w.call("c1", "bob");
    w.answer("c2", "alice");
    w.at(Duration::from_secs(50));
    assert_eq!(
        w.expire(),
        [
            r#"[c1] <- call_ending {"seconds":10}"#,
            r#"[c2] <- call_ending {"seconds":10}"#,
        ]
    );
    w.ok("c1", "end_call", r#"{"to":"bob"}"#);
    assert!(w.hub.ends.is_empty());
    w.at(Duration::from_secs(60));
    assert_eq!(w.expire(), Vec::<String>::new());
}

#[test]
fn each_call_leaves_one_record_with_how_it_went() {
    let mut w = World::doors();
    w.hub.set_wall_clock(WallClock {
        instant: w.t0,
        system: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    });
    let time = |secs: u64| {
        crate::timestamp::iso8601(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs))
    };
    // The door calls the flat, ben answers at 2 s and opens the main door
    // at 3 s; the door station hangs up 5 s later.
    w.call("fd", "flat-12");
    w.at(Duration::from_secs(2)).answer("b", "front-door");
    w.at(Duration::from_secs(3));
    w.open("b", "front-door", "main").unwrap();
    w.at(Duration::from_secs(8)).expire();
    let records = w.hub.take_records();
    assert_eq!(records.len(), 1);
    let record = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(
        record,
        serde_json::json!({
            "call": "c0", "caller": "front-door", "called": "flat-12", "group": "flat-12",
            "rang": ["anna", "ben"], "answered_by": "ben",
            "started": time(0), "answered": time(2), "ended": time(8),
            "outcome": "answered", "reason": "door_opened",
            "doors": [{"station": "front-door", "door": "main", "by": "ben", "at": time(3)}],
        })
    );
    // Declined, rang out, and given up while ringing.
    w.at(Duration::from_secs(20));
    w.call("e", "anna");
    w.ok("a", "decline_call", r#"{"to":"eve"}"#);
    w.call("e", "anna");
    w.at(Duration::from_secs(20) + TIMEOUT).expire();
    w.call("e", "anna");
    w.ok("e", "end_call", r#"{"to":"anna"}"#);
    let outcomes: Vec<(&str, Option<String>)> = w
        .hub
        .take_records()
        .iter()
        .map(|r| (r.outcome, r.ended_by.as_deref().map(str::to_owned)))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("declined", Some("anna".to_owned())),
            ("timeout", None),
            ("cancelled", Some("eve".to_owned()))
        ]
    );
    assert!(w.hub.take_records().is_empty(), "taken once");
}
