//! The directory's calls across three nodes, with a fake clock and a fake
//! Redis: presence, the claims that make "busy" hold cluster-wide, and the
//! messages between nodes, carried in order as the real link carries them
//! (a queue, so that two members may answer before either answer lands).
//! After every step the claims must be exactly what the calls hold.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::signaling::directory::Directory;

const DIRECTORY: &str = r#"
[groups."flat-12"]
members = ["anna", "ben", "panel"]
no_answer = "desk"
no_answer_after = "20s"

[groups.turns]
members = ["anna", "ben", "panel"]
ring = "in-order"
step = "5s"

[groups.desk]
members = ["guard"]

[users.ben]
no_answer = "desk"

[users.anna]
devices = 2

[groups.family]
members = ["anna", "carl"]

[users.gate]
kind = "door"
doors = ["main"]
openers = ["guard"]
hang_up_after_open = "5s"
"#;

/// What Redis answers, for the node that asked.
enum Delivery {
    Peer(PeerMessage),
    Claimed(Rc<str>, Rc<str>, Box<RawValue>, Claim),
    Members(MemberClaim, Result<Vec<Claim>, Claim>),
}

/// Three hubs (nodes 0, 1, 2) and what Redis holds for them.
struct Net {
    hubs: Vec<Hub<&'static str>>,
    t0: Instant,
    now: Instant,
    /// Where each user is registered.
    presence: HashMap<Rc<str>, usize>,
    /// Each claimed user's `caller>called`.
    claims: BTreeMap<Rc<str>, String>,
    /// What is on its way to a node, in order.
    queue: VecDeque<(usize, Delivery)>,
    /// What the sockets were sent, and what was pushed.
    log: Vec<String>,
    /// Each user's push subscriptions (their endpoints), as Redis keeps them.
    subscribed: BTreeMap<Rc<str>, Vec<String>>,
    /// Each user's missed calls (who called), as Redis keeps them.
    missed: BTreeMap<Rc<str>, Vec<String>>,
}

impl Net {
    /// door and guard on node 0, anna and ben on node 1, panel on node 2.
    fn intercom() -> Net {
        let directory = Rc::new(Directory::parse("test.toml", DIRECTORY).unwrap());
        let t0 = Instant::now();
        let mut net = Net {
            hubs: (0..3)
                .map(|_| {
                    let mut hub = Hub::new(TIMEOUT, &Limits::default(), true);
                    hub.set_directory(directory.clone());
                    hub
                })
                .collect(),
            t0,
            now: t0,
            presence: HashMap::new(),
            claims: BTreeMap::new(),
            queue: VecDeque::new(),
            log: Vec::new(),
            subscribed: BTreeMap::new(),
            missed: BTreeMap::new(),
        };
        for (node, user) in [
            (0, "door"),
            (0, "guard"),
            (1, "anna"),
            (1, "ben"),
            (2, "panel"),
        ] {
            net.act(
                node,
                user,
                "register_user",
                &format!(r#"{{"userId":"{user}"}}"#),
            );
        }
        net.log.clear();
        net
    }

    /// The node `user` is on.
    fn node_of(&self, user: &str) -> usize {
        self.presence[user]
    }

    /// `user` (its socket has its name) sends `name`; what follows is
    /// carried until nothing is left.
    fn act(&mut self, node: usize, user: &'static str, name: &str, payload: &str) {
        self.send(node, user, name, payload);
        self.run();
    }

    /// `user` sends `name`; what it makes other nodes do waits in the queue.
    fn send(&mut self, node: usize, user: &'static str, name: &str, payload: &str) {
        let raw = RawValue::from_string(payload.to_owned()).unwrap();
        let event = ClientEvent::parse(name, Some(&raw), &Limits::default())
            .unwrap()
            .unwrap();
        let outcome = self.hubs[node].handle(&user, event, self.now);
        assert_eq!(
            outcome.result,
            Ok(()),
            "{user} {name}: {:?}",
            outcome.effects
        );
        self.execute(node, outcome.effects);
    }

    fn by(&mut self, user: &'static str, name: &str, payload: &str) {
        let node = self.node_of(user);
        self.act(node, user, name, payload);
    }

    fn call(&mut self, user: &'static str, to: &str) {
        let payload = format!(r#"{{"to":"{to}","offer":{{"sdp":"o"}}}}"#);
        self.by(user, "make_call", &payload);
    }

    fn answer(&mut self, user: &'static str, to: &str) {
        let payload = format!(r#"{{"to":"{to}","answer":{{"sdp":"a"}}}}"#);
        let node = self.node_of(user);
        self.send(node, user, "answer_call", &payload);
    }

    fn to(&mut self, user: &'static str, name: &str, to: &str) {
        self.by(user, name, &format!(r#"{{"to":"{to}"}}"#));
    }

    fn candidate(&mut self, user: &'static str, to: &str) {
        let payload = format!(r#"{{"to":"{to}","candidate":{{"c":1}}}}"#);
        self.by(user, "ice_candidate", &payload);
    }

    /// The clock moves to `secs` after the start; every hub expires.
    fn at(&mut self, secs: u64) {
        self.now = self.t0 + Duration::from_secs(secs);
        for node in 0..self.hubs.len() {
            let effects = self.hubs[node].expire(self.now);
            self.execute(node, effects);
        }
        self.run();
    }

    /// Carries everything queued, and what it makes, until nothing is left.
    fn run(&mut self) {
        while let Some((node, delivery)) = self.queue.pop_front() {
            let hub = &mut self.hubs[node];
            let effects = match delivery {
                Delivery::Peer(message) => hub.peer(message, self.now),
                Delivery::Claimed(caller, callee, offer, claim) => {
                    hub.claimed(caller, &callee, offer, claim, self.now).effects
                }
                Delivery::Members(claim, answer) => {
                    hub.members_claimed(claim, answer, self.now).effects
                }
            };
            self.execute(node, effects);
        }
        self.consistent();
    }

    /// Carries out `node`'s effects as the service and Redis would.
    fn execute(&mut self, node: usize, effects: Vec<Effect<&'static str>>) {
        for effect in effects {
            match effect {
                Effect::ToSocket { .. } | Effect::Disconnect { .. } => self.log.push(line(&effect)),
                Effect::Joined { user, .. } => {
                    // The registration's script: registered nowhere, but
                    // claimed for a call, they were asleep.
                    let caller = self.claims.get(&user).and_then(|c| c.split_once('>'));
                    if !self.presence.contains_key(&user)
                        && let Some((caller, _)) = caller
                        && let Some(&at) = self.presence.get(caller)
                    {
                        let to = caller.into();
                        let woken = PeerMessage::Woken {
                            from: user.clone(),
                            to,
                        };
                        self.queue.push_back((at, Delivery::Peer(woken)));
                    }
                    self.presence.insert(user, node);
                }
                Effect::Push { user, message } => {
                    let message = serde_json::to_string(&message).unwrap();
                    self.log.push(format!("push {user} {message}"));
                }
                Effect::Shared(shared) => self.share(shared),
                Effect::Left { user } => {
                    if self.presence.get(&user) == Some(&node) {
                        self.presence.remove(&user);
                    }
                }
                Effect::Barrier | Effect::OpenDoor { .. } => {}
                Effect::ToPeer {
                    message:
                        PeerMessage::DoorAnswer {
                            to,
                            station,
                            door,
                            ack,
                        },
                    ..
                } => {
                    // The service of the asker's node.
                    self.log.push(format!("answer for {to}: {ack}"));
                    let opened = ack["ok"] == true;
                    let at = self.presence[&to];
                    let effects =
                        self.hubs[at].door_answered(&to, &station, &door, opened, self.now);
                    self.execute(at, effects);
                }
                Effect::AskDoor { attempt } => {
                    // The service: the station's node, if it has one, opens it.
                    match self.presence.get(&attempt.station) {
                        Some(&at) => {
                            let message = PeerMessage::OpenDoor {
                                from: attempt.by.clone(),
                                to: attempt.station.clone(),
                                door: attempt.door.clone(),
                                in_call: attempt.call.is_some(),
                            };
                            self.queue.push_back((at, Delivery::Peer(message)));
                        }
                        None => {
                            let result = DoorResult::Refused(SignalError::DoorOffline);
                            self.log
                                .push(format!("answer for {}: {}", attempt.by, result.ack()));
                            let mut effects = Vec::new();
                            self.hubs[node].door_done(attempt, result, self.now, &mut effects);
                            self.execute(node, effects);
                        }
                    }
                }
                Effect::ToPeer { user, message } => {
                    if let Some(&to) = self.presence.get(&user) {
                        self.queue.push_back((to, Delivery::Peer(message)));
                    }
                }
                Effect::Claim {
                    caller,
                    callee,
                    offer,
                    ..
                } => {
                    let asleep = !self.presence.contains_key(&callee);
                    let claim = if asleep && !self.subscribed.contains_key(&callee) {
                        Claim::Offline
                    } else if self.claims.contains_key(&caller) {
                        Claim::CallerBusy
                    } else if self.claims.contains_key(&callee) {
                        Claim::Busy
                    } else {
                        let token = format!("{caller}>{callee}");
                        self.claims.insert(caller.clone(), token.clone());
                        self.claims.insert(callee.clone(), token);
                        if asleep {
                            Claim::Asleep
                        } else {
                            Claim::Granted
                        }
                    };
                    let delivery = Delivery::Claimed(caller, callee, offer, claim);
                    self.queue.push_back((node, delivery));
                }
                Effect::ClaimMembers { claim, .. } => {
                    let answer = self.claim_members(&claim);
                    self.queue
                        .push_back((node, Delivery::Members(claim, answer)));
                }
                Effect::CallOver {
                    caller,
                    callee,
                    member,
                } => {
                    let token = format!("{caller}>{callee}");
                    let keys = match member {
                        Some(member) => vec![member],
                        None => vec![caller, callee],
                    };
                    for key in keys {
                        if self.claims.get(&key) == Some(&token) {
                            self.claims.remove(&key);
                        }
                    }
                }
            }
        }
    }

    /// What the member claim script does.
    fn claim_members(&mut self, claim: &MemberClaim) -> Result<Vec<Claim>, Claim> {
        let previous = claim
            .previous
            .as_ref()
            .map(|previous| format!("{}>{previous}", claim.caller));
        if let Some(held) = self.claims.get(&claim.caller)
            && Some(held) != previous.as_ref()
        {
            return Err(Claim::CallerBusy);
        }
        let token = format!("{}>{}", claim.caller, claim.called);
        let mut answers = Vec::new();
        for member in &claim.members {
            let asleep = !self.presence.contains_key(member);
            if asleep && !self.subscribed.contains_key(member) {
                answers.push(Claim::Offline);
            } else if self.claims.contains_key(member) {
                answers.push(Claim::Busy);
            } else {
                self.claims.insert(member.clone(), token.clone());
                answers.push(if asleep {
                    Claim::Asleep
                } else {
                    Claim::Granted
                });
                if claim.first_only {
                    break;
                }
            }
        }
        if answers.iter().any(|answer| answer.claimed()) {
            self.claims.insert(claim.caller.clone(), token);
        }
        Ok(answers)
    }

    /// What Redis does with what the cluster keeps for its users.
    fn share(&mut self, shared: Shared<&'static str>) {
        match shared {
            Shared::Subscribe { user, subscription } => {
                let theirs = self.subscribed.entry(user).or_default();
                theirs.retain(|endpoint| *endpoint != subscription.endpoint);
                theirs.push(subscription.endpoint);
            }
            Shared::Unsubscribe { user, endpoint } => {
                if let Some(theirs) = self.subscribed.get_mut(&user) {
                    theirs.retain(|kept| *kept != endpoint);
                    if theirs.is_empty() {
                        self.subscribed.remove(&user);
                    }
                }
            }
            Shared::Missed { user, call } => {
                let line = format!("{} {}", call.from, call.reason);
                self.missed.entry(user).or_default().push(line);
            }
            Shared::MissedSeen { user } => {
                self.missed.remove(&user);
            }
            Shared::TellMissed { user, socket } => {
                if let Some(theirs) = self.missed.get(&user) {
                    self.log
                        .push(format!("[{socket}] <- missed_calls {theirs:?}"));
                }
            }
        }
    }

    /// `user` registers on `node` (its socket has its name), and is
    /// welcomed once that is answered.
    fn register(&mut self, node: usize, user: &'static str) {
        let payload = format!(r#"{{"userId":"{user}"}}"#);
        self.act(node, user, "register_user", &payload);
        self.log.retain(|line| !line.contains("<- user_registered"));
        let effects = self.hubs[node].welcome(&user, self.now);
        self.execute(node, effects);
        self.run();
    }

    /// `user`'s socket on `node` closes.
    fn close(&mut self, node: usize, user: &'static str) {
        let effects = self.hubs[node].disconnected(&user, self.now);
        self.execute(node, effects);
        self.run();
    }

    /// Every user in a call on a node holds its claim, and nobody else
    /// holds one; every remote peer a node checks holds the claim the
    /// node expects.
    fn consistent(&self) {
        let mut expected = BTreeMap::new();
        for hub in &self.hubs {
            for call in hub.calls_here() {
                let token = format!("{}>{}", call.caller, call.callee);
                expected.insert(call.user, token);
            }
        }
        assert_eq!(
            self.claims, expected,
            "claims in Redis, and what calls hold"
        );
        for hub in &self.hubs {
            for peer in hub.remote_peers() {
                let token = format!("{}>{}", peer.caller, peer.callee);
                assert_eq!(self.claims.get(&peer.user), Some(&token), "{peer:?}");
            }
        }
    }

    /// The lines sent to sockets since the last look.
    fn told(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// The node of `user` dies: its presence and claims vanish as their
    /// time to live runs out, and the others' checks find them gone.
    fn node_dies(&mut self, node: usize) {
        let gone: Vec<Rc<str>> = self
            .presence
            .iter()
            .filter(|(_, at)| **at == node)
            .map(|(user, _)| user.clone())
            .collect();
        for user in &gone {
            self.presence.remove(user);
            self.claims.remove(user);
        }
        self.hubs[node] = Hub::new(TIMEOUT, &Limits::default(), true);
        for at in 0..self.hubs.len() {
            for peer in self.hubs[at].remote_peers() {
                let token = format!("{}>{}", peer.caller, peer.callee);
                if self.claims.get(&peer.user) != Some(&token) {
                    let effects = self.hubs[at].peer_lost(&peer.user, self.now);
                    self.execute(at, effects);
                }
            }
        }
        self.run();
    }
}

fn ring(user: &str, group: &str) -> String {
    format!(
        r#"[{user}] <- incoming_call {{"from":"door","offer":{{"sdp":"o"}},"group":"{group}"}}"#
    )
}

fn ended(user: &str, from: &str, why: &str) -> String {
    format!(r#"[{user}] <- call_ended {{"from":"{from}","reason":"{why}"}}"#)
}

#[test]
fn a_group_across_nodes_rings_everyone_and_the_first_answer_wins() {
    let mut net = Net::intercom();
    net.call("door", "flat-12");
    assert_eq!(
        net.told(),
        [
            ring("anna", "flat-12"),
            ring("ben", "flat-12"),
            ring("panel", "flat-12")
        ]
    );
    // The caller's candidates reach every member while it rings.
    net.candidate("door", "flat-12");
    assert_eq!(net.told().len(), 3);
    // ben (node 1) and panel (node 2) answer at once: the caller's node
    // hears ben first, and panel learns it was answered elsewhere.
    net.answer("ben", "door");
    net.answer("panel", "door");
    net.run();
    let told = net.told();
    assert_eq!(
        told,
        [
            ended("anna", "door", "answered_elsewhere"),
            r#"[door] <- call_answered {"from":"ben","answer":{"sdp":"a"}}"#.to_owned(),
            ended("panel", "door", "answered_elsewhere"),
        ]
    );
    assert!(net.hubs[0].in_active_call("door"));
    assert!(!net.hubs[2].in_active_call("panel"));
    // After the answer, candidates go to the one who answered, both ways.
    net.candidate("door", "flat-12");
    net.candidate("ben", "door");
    assert_eq!(
        net.told(),
        [
            r#"[ben] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
            r#"[door] <- ice_candidate {"from":"ben","candidate":{"c":1}}"#,
        ]
    );
    // panel is free again, cluster-wide: guard can call it.
    net.call("guard", "panel");
    assert_eq!(
        net.told(),
        [r#"[panel] <- incoming_call {"from":"guard","offer":{"sdp":"o"}}"#]
    );
    net.to("door", "end_call", "ben");
    assert_eq!(net.told(), [r#"[ben] <- call_ended {"from":"door"}"#]);
}

/// A second device of anna's, at her home (node 1): a phone there, or
/// one relayed from another node, which the hub cannot tell apart.
fn with_annas_phone() -> Net {
    let mut net = Net::intercom();
    net.act(1, "anna-phone", "register_user", r#"{"userId":"anna"}"#);
    assert_eq!(net.hubs[1].device_count("anna"), 2);
    net.told();
    net
}

#[test]
fn a_user_with_two_devices_at_their_home_rings_both_from_another_node() {
    let mut net = with_annas_phone();
    net.call("door", "anna");
    assert_eq!(
        net.told(),
        [
            r#"[anna] <- incoming_call {"from":"door","offer":{"sdp":"o"}}"#,
            r#"[anna-phone] <- incoming_call {"from":"door","offer":{"sdp":"o"}}"#,
        ]
    );
    net.send(
        1,
        "anna-phone",
        "answer_call",
        r#"{"to":"door","answer":{"sdp":"a"}}"#,
    );
    net.run();
    assert_eq!(
        net.told(),
        [
            ended("anna", "door", "answered_elsewhere"),
            r#"[door] <- call_answered {"from":"anna","answer":{"sdp":"a"}}"#.to_owned(),
        ]
    );
    net.candidate("door", "anna");
    assert_eq!(
        net.told(),
        [r#"[anna-phone] <- ice_candidate {"from":"door","candidate":{"c":1}}"#]
    );
    // anna is busy cluster-wide while one device talks.
    net.call("guard", "anna");
    assert_eq!(
        net.told(),
        [r#"[guard] <- call_busy {"targetUser":"anna"}"#]
    );
}

#[test]
fn a_device_that_calls_across_nodes_keeps_the_call_to_itself() {
    let mut net = with_annas_phone();
    net.send(
        1,
        "anna-phone",
        "make_call",
        r#"{"to":"guard","offer":{"sdp":"o"}}"#,
    );
    net.run();
    assert_eq!(
        net.told(),
        [r#"[guard] <- incoming_call {"from":"anna","offer":{"sdp":"o"}}"#]
    );
    net.answer("guard", "anna");
    net.run();
    assert_eq!(
        net.told(),
        [r#"[anna-phone] <- call_answered {"from":"guard","answer":{"sdp":"a"}}"#]
    );
    // A refused call frees the device's route: the next call rings both.
    net.to("guard", "end_call", "anna");
    net.told();
    net.send(
        1,
        "anna-phone",
        "make_call",
        r#"{"to":"nobody","offer":{"sdp":"o"}}"#,
    );
    net.run();
    assert_eq!(
        net.told(),
        [r#"[anna-phone] <- call_failed {"error":"user is offline","targetUser":"nobody"}"#]
    );
    net.call("door", "anna");
    assert_eq!(net.told().len(), 2, "both devices ring");
}

#[test]
fn a_group_rings_every_device_of_a_member_at_their_home() {
    let mut net = with_annas_phone();
    net.call("door", "flat-12");
    let told = net.told();
    assert_eq!(told.len(), 4, "{told:?}");
    assert!(told.contains(&ring("anna-phone", "flat-12")));
    net.send(
        1,
        "anna-phone",
        "answer_call",
        r#"{"to":"door","answer":{"sdp":"a"}}"#,
    );
    net.run();
    let told = net.told();
    for loser in ["anna", "ben", "panel"] {
        assert!(
            told.contains(&ended(loser, "door", "answered_elsewhere")),
            "{told:?}"
        );
    }
}

#[test]
fn every_member_declining_across_nodes_declines_the_call() {
    let mut net = Net::intercom();
    net.call("door", "flat-12");
    net.told();
    net.to("anna", "decline_call", "door");
    net.to("panel", "decline_call", "door");
    assert_eq!(net.told(), Vec::<String>::new());
    net.to("ben", "decline_call", "door");
    assert_eq!(
        net.told(),
        [r#"[door] <- call_declined {"from":"flat-12"}"#]
    );
    assert!(net.claims.is_empty());
}

#[test]
fn the_caller_hanging_up_stops_every_member_on_every_node() {
    let mut net = Net::intercom();
    net.call("door", "flat-12");
    net.told();
    net.to("door", "end_call", "flat-12");
    assert_eq!(
        net.told(),
        [
            r#"[anna] <- call_ended {"from":"door"}"#,
            r#"[ben] <- call_ended {"from":"door"}"#,
            r#"[panel] <- call_ended {"from":"door"}"#,
        ]
    );
    assert_eq!(net.hubs[1].call_count() + net.hubs[2].call_count(), 0);
}

#[test]
fn nobody_answering_across_nodes_forwards_the_call() {
    let mut net = Net::intercom();
    net.call("door", "flat-12");
    net.told();
    net.at(20);
    assert_eq!(
        net.told(),
        [
            r#"[door] <- call_forwarded {"from":"flat-12","to":"desk"}"#.to_owned(),
            ended("anna", "door", "forwarded"),
            ended("ben", "door", "forwarded"),
            ended("panel", "door", "forwarded"),
            ring("guard", "desk"),
        ]
    );
    assert_eq!(
        net.claims.get("door").map(String::as_str),
        Some("door>desk")
    );
    net.answer("guard", "door");
    net.run();
    assert_eq!(
        net.told(),
        [r#"[door] <- call_answered {"from":"guard","answer":{"sdp":"a"}}"#]
    );
}

#[test]
fn in_turn_across_nodes_skips_a_member_in_do_not_disturb_elsewhere() {
    let mut net = Net::intercom();
    net.by("ben", "set_dnd", r#"{"on":true}"#);
    net.told();
    net.call("door", "turns");
    assert_eq!(net.told(), [ring("anna", "turns")]);
    // anna's turn is over; ben's node refuses him (do-not-disturb), so
    // panel, on the third node, rings.
    net.at(5);
    assert_eq!(
        net.told(),
        [
            r#"[anna] <- call_timeout {"user":"door"}"#.to_owned(),
            ring("panel", "turns"),
        ]
    );
    net.at(30);
    assert_eq!(
        net.told(),
        [
            r#"[door] <- call_timeout {"user":"turns"}"#,
            r#"[panel] <- call_timeout {"user":"door"}"#,
        ]
    );
    assert!(net.claims.is_empty());
}

#[test]
fn a_user_in_do_not_disturb_on_another_node_is_forwarded_at_once() {
    let mut net = Net::intercom();
    net.by("ben", "set_dnd", r#"{"on":true}"#);
    net.told();
    net.call("door", "ben");
    assert_eq!(
        net.told(),
        [
            r#"[door] <- call_forwarded {"from":"ben","to":"desk"}"#.to_owned(),
            ring("guard", "desk"),
        ]
    );
}

#[test]
fn members_busy_elsewhere_are_skipped_and_a_group_all_busy_is_busy() {
    let mut net = Net::intercom();
    net.call("guard", "anna");
    net.answer("anna", "guard");
    net.run();
    net.told();
    net.call("door", "flat-12");
    assert_eq!(
        net.told(),
        [ring("ben", "flat-12"), ring("panel", "flat-12")]
    );
    net.to("door", "end_call", "flat-12");
    net.told();
    net.call("panel", "ben");
    net.told();
    net.call("door", "flat-12");
    assert_eq!(
        net.told(),
        [r#"[door] <- call_busy {"targetUser":"flat-12"}"#]
    );
}

#[test]
fn a_member_whose_node_dies_stops_ringing_and_the_others_ring_on() {
    let mut net = Net::intercom();
    net.call("door", "flat-12");
    net.told();
    net.node_dies(2);
    assert_eq!(net.told(), Vec::<String>::new());
    net.to("anna", "decline_call", "door");
    net.to("ben", "decline_call", "door");
    assert_eq!(
        net.told(),
        [r#"[door] <- call_declined {"from":"flat-12"}"#]
    );
    assert!(net.claims.is_empty());
}

/// carl subscribed to pushes on node 2, then his phone slept.
fn with_carl_asleep() -> Net {
    let mut net = Net::intercom();
    net.register(2, "carl");
    let subscription = super::push::subscription("https://push.example/carl");
    net.by("carl", "register_push", &subscription);
    net.close(2, "carl");
    assert_eq!(net.subscribed["carl"], ["https://push.example/carl"]);
    net.told();
    net
}

fn pushed(message: &str) -> String {
    format!(r#"push carl {{{message}}}"#)
}

#[test]
fn a_sleeping_user_is_pushed_and_rings_on_the_node_where_they_wake() {
    let mut net = with_carl_asleep();
    net.call("door", "carl");
    assert_eq!(
        net.told(),
        [pushed(
            r#""type":"incoming_call","from":"door","call":"c0""#
        )]
    );
    // The caller's candidates are kept for him meanwhile.
    net.candidate("door", "carl");
    assert!(net.told().is_empty());
    // His phone wakes on node 1: the call rings there, then the candidates.
    net.register(1, "carl");
    assert_eq!(
        net.told(),
        [
            r#"[carl] <- incoming_call {"from":"door","offer":{"sdp":"o"}}"#,
            r#"[carl] <- ice_candidate {"from":"door","candidate":{"c":1}}"#,
        ]
    );
    net.answer("carl", "door");
    net.run();
    assert_eq!(
        net.told(),
        [r#"[door] <- call_answered {"from":"carl","answer":{"sdp":"a"}}"#]
    );
    net.to("door", "end_call", "carl");
    assert_eq!(net.told(), [r#"[carl] <- call_ended {"from":"door"}"#]);
    assert!(net.missed.is_empty());
    // The caller's node logs the call; the node where carl took it does not.
    let records = net.hubs[0].take_records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            &*records[0].answered_by.clone().unwrap(),
            records[0].outcome
        ),
        ("carl", "answered")
    );
    assert!(net.hubs[1].take_records().is_empty());
}

#[test]
fn a_caller_who_gives_up_is_pushed_as_cancelled_and_missed_on_every_node() {
    let mut net = with_carl_asleep();
    net.call("door", "carl");
    net.told();
    net.to("door", "end_call", "carl");
    let told = net.told();
    assert_eq!(
        told[0],
        pushed(r#""type":"call_cancelled","call":"c0","reason":"ended""#)
    );
    assert!(told[1].starts_with(r#"push carl {"type":"missed_call","from":"door","at":"#));
    assert_eq!(told.len(), 2);
    assert_eq!(net.missed["carl"], ["door cancelled"]);
    // Too late, and on another node: no call, but the missed one.
    net.register(0, "carl");
    assert_eq!(net.told(), [r#"[carl] <- missed_calls ["door cancelled"]"#]);
    net.by("carl", "missed_calls_seen", "{}");
    assert!(net.missed.is_empty());
    // A call that rings out while he sleeps is missed too.
    net.close(0, "carl");
    net.call("guard", "carl");
    net.at(31);
    let told = net.told();
    assert!(told.contains(&pushed(
        r#""type":"call_cancelled","call":"c1","reason":"timeout""#
    )));
    assert_eq!(net.missed["carl"], ["guard timeout"]);
    // Who unsubscribes is offline again.
    net.register(1, "carl");
    net.by(
        "carl",
        "unregister_push",
        r#"{"endpoint":"https://push.example/carl"}"#,
    );
    net.close(1, "carl");
    net.told();
    assert!(net.subscribed.is_empty());
    net.call("door", "carl");
    assert_eq!(
        net.told(),
        [r#"[door] <- call_failed {"error":"user is offline","targetUser":"carl"}"#]
    );
}

#[test]
fn a_sleeping_member_rings_where_they_wake_and_stops_when_another_answers() {
    let mut net = with_carl_asleep();
    net.call("door", "family");
    assert_eq!(
        net.told(),
        [
            pushed(r#""type":"incoming_call","from":"door","group":"family","call":"c0""#),
            ring("anna", "family"),
        ]
    );
    net.register(2, "carl");
    assert_eq!(net.told(), [ring("carl", "family")]);
    net.answer("anna", "door");
    net.run();
    assert_eq!(
        net.told(),
        [
            r#"[door] <- call_answered {"from":"anna","answer":{"sdp":"a"}}"#.to_owned(),
            ended("carl", "door", "answered_elsewhere"),
        ]
    );
    assert_eq!(net.missed["carl"], ["door answered_elsewhere"]);
    // Asleep again, and anna answers before he wakes: his phone hears.
    net.to("door", "end_call", "anna");
    net.close(2, "carl");
    net.told();
    net.call("door", "family");
    net.told();
    net.answer("anna", "door");
    net.run();
    let told = net.told();
    assert!(
        told.contains(&pushed(
            r#""type":"call_cancelled","call":"c1","reason":"answered_elsewhere""#
        )),
        "{told:?}"
    );
}

#[test]
fn a_door_on_another_node_is_opened_there_and_answered_here() {
    let mut net = Net::intercom();
    net.register(2, "gate");
    net.told();
    // An opener on node 0: the station's node opens it, and counts it.
    net.by("guard", "open_door", r#"{"to":"gate","door":"main"}"#);
    assert_eq!(
        net.told(),
        [
            r#"[gate] <- door_open {"from":"guard","door":"main"}"#,
            r#"answer for guard: {"ok":true}"#,
        ]
    );
    let opened = |hub: &Hub<&'static str>| {
        hub.door_totals()
            .iter()
            .filter(|((_, _, result), _)| *result == "opened")
            .map(|(_, count)| *count)
            .sum::<u64>()
    };
    assert_eq!((opened(&net.hubs[0]), opened(&net.hubs[2])), (0, 1));
    // From a call: the station's node hangs up after the opening.
    net.call("gate", "ben");
    net.answer("ben", "gate");
    net.run();
    net.told();
    net.by("ben", "open_door", r#"{"to":"gate","door":"main"}"#);
    assert_eq!(
        net.told(),
        [
            r#"[gate] <- door_open {"from":"ben","door":"main"}"#,
            r#"answer for ben: {"ok":true}"#,
        ]
    );
    net.at(5);
    assert_eq!(
        net.told(),
        [
            ended("gate", "ben", "door_opened"),
            ended("ben", "gate", "door_opened"),
        ]
    );
    // The resident calls the station and opens: the caller's node (the
    // resident's), which logs the call, records the door.
    net.call("anna", "gate");
    net.answer("gate", "anna");
    net.run();
    net.by("anna", "open_door", r#"{"to":"gate","door":"main"}"#);
    net.to("anna", "end_call", "gate");
    net.told();
    let records = net.hubs[1].take_records();
    let last = records.last().unwrap();
    assert_eq!(last.caller.as_ref(), "anna");
    let doors: Vec<_> = last
        .doors
        .iter()
        .map(|d| (&*d.station, &*d.door, &*d.by))
        .collect();
    assert_eq!(doors, [("gate", "main", "anna")]);
    assert!(
        net.hubs[2]
            .take_records()
            .iter()
            .all(|r| r.caller.as_ref() != "anna")
    );
    // The station registered nowhere: offline, said where it was asked.
    net.close(2, "gate");
    net.by("guard", "open_door", r#"{"to":"gate","door":"main"}"#);
    assert_eq!(
        net.told(),
        [r#"answer for guard: {"error":"the door station is offline","ok":false}"#]
    );
}
