//! What the link asks Redis, and what the replies mean: the pure mapping of
//! an [`Op`] to a command, and of a reply to what the signaling service must
//! hear. No I/O; the writer sends the commands in order and hands each
//! reply back here.

use std::rc::Rc;
use std::time::Duration;

use redis::{Cmd, Value};

use super::scripts::{
    AGREE, CLAIM, CLAIM_MEMBERS, HOLD, HOME, JOIN, LEAVE, MISS, OVERVIEW, RELEASE, ROUTE, SEEN,
    SUBSCRIBE, UNSUBSCRIBE, WATCH,
};
use crate::push::{PushMessage, Subscription};
use crate::signaling::cluster::{ClusterError, Inbound, Overview};
use crate::signaling::hub::{
    Claim, InCall, MAX_MISSED, MAX_MISSED_PER_USER, MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS_PER_USER,
    MemberClaim, Registration, Shared,
};
use crate::signaling::peer::PeerMessage;

/// What an overview's waiter is told.
pub(super) type OverviewCallback = Box<dyn FnOnce(Result<Overview, ClusterError>)>;

/// What the waiter for [`Op::Agree`] is told.
pub(super) type AgreeCallback = Box<dyn FnOnce(Result<String, ClusterError>)>;

/// What the waiter for [`Op::Deliver`] is told.
pub(super) type DeliverCallback = Box<dyn FnOnce(Result<bool, ClusterError>)>;

/// One thing to do in Redis: one command each, but `Then`.
pub(super) enum Op {
    /// A user registered on this socket here.
    Joined(Registration<Rc<str>>),
    /// A user is no longer registered here.
    Left(Rc<str>),
    /// A message for the node of user `to`.
    Route { to: Rc<str>, message: String },
    /// The same, for a waiter who must know whether a node took it.
    Deliver {
        to: Rc<str>,
        message: String,
        answer: DeliverCallback,
    },
    /// Claims both users of a new call, for the socket whose `make_call` it is.
    Claim {
        socket: Rc<str>,
        caller: Rc<str>,
        callee: Rc<str>,
    },
    /// Claims a group's members (or one user) who can ring, for the socket
    /// whose `make_call` it is, if one waits.
    ClaimMembers {
        socket: Option<Rc<str>>,
        claim: MemberClaim,
    },
    /// Gives a call's claims back: the caller's and the callee's, or with
    /// `member` that member's alone.
    Release {
        caller: Rc<str>,
        callee: Rc<str>,
        member: Option<Rc<str>>,
    },
    /// Refreshes keys this node holds.
    Hold {
        held: Vec<Held>,
        create: bool,
        /// Call claims (which live half as long as presence), not presence.
        claims: bool,
    },
    /// Peers on other nodes, each with the claim they must still hold.
    Check(Vec<(Rc<str>, String)>),
    /// Every user and call of the cluster.
    Overview(OverviewCallback),
    /// Finds (or becomes) the home of a user with several devices, for
    /// the socket whose `register_user` waits.
    Home { socket: Rc<str>, user: Rc<str> },
    /// A message for `node` about a relayed device.
    Publish { node: Rc<str>, message: String },
    /// This node shuts down: its alive key goes.
    Retire,
    /// Users relayed from here with their homes, and nodes whose devices
    /// are relayed here: which are gone.
    Watch {
        homes: Vec<(Rc<str>, Rc<str>)>,
        nodes: Vec<Rc<str>>,
    },
    /// Changes or reads what the cluster keeps for its users.
    Shared(Shared<Rc<str>>),
    /// Reads a user's push subscriptions, to push `message` to them.
    Push { user: Rc<str>, message: PushMessage },
    /// The cluster's value of `name` (under the prefix), else `value`.
    Agree {
        name: String,
        value: String,
        answer: AgreeCallback,
    },
    /// Runs once Redis answered everything asked before it.
    Then(Box<dyn FnOnce()>),
    /// Wakes the command connection after Redis came back, so that its
    /// first real command does not meet the broken old one.
    Ping,
}

/// A key this node holds, and its value; for a presence key, the user and
/// the socket they were on when the refresh was asked for.
pub(super) struct Held {
    pub key: String,
    pub value: String,
    pub user: Option<Registration<Rc<str>>>,
}

impl Op {
    /// Whether sending it twice does no harm (so a batch of these may be
    /// sent again when the connection broke).
    pub fn repeatable(&self) -> bool {
        !matches!(
            self,
            Op::Route { .. }
                | Op::Deliver { .. }
                | Op::Claim { .. }
                | Op::ClaimMembers { .. }
                | Op::Publish { .. }
                | Op::Home { .. }
                | Op::Shared(Shared::Missed { .. })
        )
    }
}

/// How long a call claim lives unrefreshed: half the presence TTL, so
/// that a dead node's calls end for their peers within the presence TTL
/// (claim expiry, then the next check, which runs every quarter TTL).
pub(super) fn claim_ttl(presence_ttl: Duration) -> Duration {
    presence_ttl / 2
}

/// Key names under a prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn user(&self, name: &str) -> String {
        format!("{}user:{name}", self.prefix)
    }

    pub fn call(&self, name: &str) -> String {
        format!("{}call:{name}", self.prefix)
    }

    /// A user's push subscriptions.
    pub fn push(&self, name: &str) -> String {
        format!("{}push:{name}", self.prefix)
    }

    /// A user's missed calls.
    pub fn missed(&self, name: &str) -> String {
        format!("{}missed:{name}", self.prefix)
    }

    /// How many subscriptions and missed calls the cluster keeps.
    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    /// The key that says a node is alive, refreshed with its presence.
    pub fn alive(&self, node: &str) -> String {
        format!("{}{node}", self.alive_prefix())
    }

    pub fn alive_prefix(&self) -> String {
        format!("{}alive:", self.prefix)
    }

    pub fn channels(&self) -> String {
        format!("{}node:", self.prefix)
    }

    pub fn channel(&self, node: &str) -> String {
        format!("{}{node}", self.channels())
    }
}

/// The claim a call holds on both parties.
pub(super) fn claim_value(caller: &str, callee: &str) -> String {
    format!("{caller}>{callee}")
}

/// What a user's key holds: their node and socket.
pub(super) fn presence_value(node: &str, socket: &str) -> String {
    format!("{node} {socket}")
}

/// The claim `call` holds for its user.
pub(super) fn claim_of(call: &InCall) -> String {
    claim_value(&call.caller, &call.callee)
}

/// The JSON of a kick for `user`, cut where the replaced socket's id goes
/// (as a JSON string), which the JOIN script puts in.
fn kick_around_socket(user: &str) -> (String, String) {
    let user = serde_json::to_string(user).unwrap_or_else(|_| "\"\"".to_owned());
    (
        format!(r#"{{"Kick":{{"user":{user},"conn":"#),
        "}}".to_owned(),
    )
}

/// An `EVAL` of `body` on `keys`; arguments follow.
fn script(body: &str, keys: &[String]) -> Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(body).arg(keys.len());
    for key in keys {
        command.arg(key);
    }
    command
}

/// What a reply made happen.
#[derive(Default)]
pub(super) struct Settled {
    /// For the signaling service.
    pub inbound: Vec<Inbound>,
    /// To send first in the next batch.
    pub retry: Vec<Op>,
    /// To run now (an overview's waiter, a `Then`).
    pub then: Option<Box<dyn FnOnce()>>,
}

/// Turns ops into commands and replies into what follows, for one node.
pub(super) struct Encoder {
    pub node: Rc<str>,
    pub keys: Keys,
    pub ttl_ms: String,
    pub claim_ttl_ms: String,
}

impl Encoder {
    /// The command for `op`, if it needs one.
    pub fn command(&self, op: &Op) -> Option<Cmd> {
        let keys = &self.keys;
        Some(match op {
            Op::Joined(Registration { user, socket }) => {
                let (before, after) = kick_around_socket(user);
                script(JOIN, &[keys.user(user), keys.call(user)])
                    .arg(&*self.node)
                    .arg(&**socket)
                    .arg(&self.ttl_ms)
                    .arg(keys.channels())
                    .arg(before)
                    .arg(after)
                    .arg(keys.user(""))
                    .arg(&**user)
                    .clone()
            }
            Op::Left(user) => script(LEAVE, &[keys.user(user)]).arg(&*self.node).clone(),
            Op::Route { to, message } | Op::Deliver { to, message, .. } => {
                script(ROUTE, &[keys.user(to)])
                    .arg(keys.channels())
                    .arg(message)
                    .clone()
            }
            Op::Claim { caller, callee, .. } => {
                let claim_keys = [
                    keys.user(callee),
                    keys.call(caller),
                    keys.call(callee),
                    keys.push(callee),
                ];
                script(CLAIM, &claim_keys)
                    .arg(claim_value(caller, callee))
                    .arg(&self.claim_ttl_ms)
                    .clone()
            }
            Op::ClaimMembers { claim, .. } => {
                let mut claim_keys = vec![keys.call(&claim.caller)];
                for member in &claim.members {
                    claim_keys.push(keys.user(member));
                    claim_keys.push(keys.call(member));
                    claim_keys.push(keys.push(member));
                }
                let previous = claim
                    .previous
                    .as_ref()
                    .map(|previous| claim_value(&claim.caller, previous))
                    .unwrap_or_default();
                script(CLAIM_MEMBERS, &claim_keys)
                    .arg(claim_value(&claim.caller, &claim.called))
                    .arg(&self.claim_ttl_ms)
                    .arg(if claim.first_only { "1" } else { "0" })
                    .arg(previous)
                    .clone()
            }
            Op::Release {
                caller,
                callee,
                member,
            } => {
                let released = match member {
                    Some(member) => vec![keys.call(member)],
                    None => vec![keys.call(caller), keys.call(callee)],
                };
                script(RELEASE, &released)
                    .arg(claim_value(caller, callee))
                    .clone()
            }
            Op::Hold {
                held,
                create,
                claims,
            } => {
                let hold_keys: Vec<String> = held.iter().map(|h| h.key.clone()).collect();
                let mut command = script(HOLD, &hold_keys);
                command
                    .arg(if *claims {
                        &self.claim_ttl_ms
                    } else {
                        &self.ttl_ms
                    })
                    .arg(if *create { "1" } else { "0" })
                    .arg(if *claims { "0" } else { "1" });
                for h in held {
                    command.arg(&h.value);
                }
                command
            }
            Op::Check(peers) => {
                let mut command = redis::cmd("MGET");
                for (peer, _) in peers {
                    command.arg(keys.call(peer));
                }
                command
            }
            Op::Overview(_) => script(OVERVIEW, &[]).arg(&keys.prefix).clone(),
            Op::Home { socket, user } => script(HOME, &[keys.user(user), keys.call(user)])
                .arg(&*self.node)
                .arg(&**socket)
                .arg(&self.ttl_ms)
                .arg(keys.alive_prefix())
                .arg(keys.channels())
                .arg(keys.user(""))
                .arg(&**user)
                .clone(),
            Op::Shared(shared) => self.shared(shared),
            Op::Push { user, .. } => redis::cmd("LRANGE")
                .arg(keys.push(user))
                .arg(0)
                .arg(-1)
                .clone(),
            Op::Agree { name, value, .. } => script(AGREE, &[format!("{}{name}", keys.prefix)])
                .arg(value)
                .clone(),
            Op::Retire => redis::cmd("DEL").arg(keys.alive(&self.node)).clone(),
            Op::Publish { node, message } => redis::cmd("PUBLISH")
                .arg(keys.channel(node))
                .arg(message)
                .clone(),
            Op::Watch { homes, nodes } => {
                let mut watched: Vec<String> =
                    homes.iter().map(|(user, _)| keys.user(user)).collect();
                watched.extend(nodes.iter().map(|node| keys.alive(node)));
                let mut command = script(WATCH, &watched);
                command.arg(homes.len());
                for (_, home) in homes {
                    command.arg(&**home);
                }
                command
            }
            Op::Ping => redis::cmd("PING"),
            Op::Then(_) => return None,
        })
    }

    /// The command for what the cluster keeps for its users.
    fn shared(&self, shared: &Shared<Rc<str>>) -> Cmd {
        let keys = &self.keys;
        match shared {
            Shared::Subscribe { user, subscription } => {
                let json = serde_json::to_string(subscription).unwrap_or_default();
                script(SUBSCRIBE, &[keys.push(user), keys.counts()])
                    .arg(&subscription.endpoint)
                    .arg(json)
                    .arg(MAX_SUBSCRIPTIONS_PER_USER)
                    .arg(MAX_SUBSCRIPTIONS)
                    .clone()
            }
            Shared::Unsubscribe { user, endpoint } => {
                script(UNSUBSCRIBE, &[keys.push(user), keys.counts()])
                    .arg(endpoint)
                    .clone()
            }
            Shared::Missed { user, call } => {
                let json = serde_json::to_string(call).unwrap_or_default();
                script(MISS, &[keys.missed(user), keys.counts()])
                    .arg(json)
                    .arg(MAX_MISSED_PER_USER)
                    .arg(MAX_MISSED)
                    .clone()
            }
            Shared::MissedSeen { user } => script(SEEN, &[keys.missed(user), keys.counts()]),
            Shared::TellMissed { user, .. } => redis::cmd("LRANGE")
                .arg(keys.missed(user))
                .arg(0)
                .arg(-1)
                .clone(),
        }
    }

    /// What `reply` to `op` means; `settled`: whether a missing peer may be
    /// declared lost now (see the listener).
    pub fn settle(&self, op: Op, reply: Result<Value, String>, settled: bool) -> Settled {
        let mut out = Settled::default();
        match op {
            Op::Hold { held, .. } => match reply {
                Ok(Value::Array(taken)) => {
                    for position in taken {
                        let Value::Int(position) = position else {
                            continue;
                        };
                        let entry = usize::try_from(position - 1).ok().and_then(|i| held.get(i));
                        if let Some(Held {
                            user: Some(Registration { user, socket }),
                            ..
                        }) = entry
                        {
                            // Redis names another node: a registration
                            // elsewhere whose word was lost (Redis was
                            // down). This device goes, as if kicked, unless
                            // the user has since registered here again.
                            out.inbound.push(Inbound::Message(PeerMessage::Kick {
                                user: user.clone(),
                                socket: Some(socket.clone()),
                            }));
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => log::debug!("Redis: {error}"),
            },
            Op::Home { socket, user } => {
                let node = match reply {
                    Ok(Value::BulkString(node)) => String::from_utf8(node).ok().map(Rc::from),
                    _ => None,
                };
                out.inbound.push(Inbound::Home { socket, user, node });
            }
            Op::Watch { homes, nodes } => {
                if let Ok(Value::Array(gone)) = reply
                    && settled
                {
                    for position in gone {
                        let Value::Int(position) = position else {
                            continue;
                        };
                        let Some(at) = usize::try_from(position - 1).ok() else {
                            continue;
                        };
                        if let Some((user, _)) = homes.get(at) {
                            out.inbound.push(Inbound::HomeGone(user.clone()));
                        } else if let Some(node) = nodes.get(at - homes.len()) {
                            out.inbound.push(Inbound::NodeGone(node.clone()));
                        }
                    }
                }
            }
            Op::Joined(..)
            | Op::Left(_)
            | Op::Release { .. }
            | Op::Ping
            | Op::Publish { .. }
            | Op::Retire => {
                if let Err(error) = reply {
                    log::debug!("Redis: {error}");
                }
            }
            Op::Route { to, .. } => {
                // -1: nobody of that name; 0: their node is not listening.
                // Not proof of a loss (a subscription may be coming back):
                // the claim check decides.
                if let Ok(Value::Int(receivers)) = reply
                    && receivers < 1
                {
                    log::debug!(
                        "a message for {} found no node",
                        crate::logging::untrusted(&to)
                    );
                }
            }
            Op::Claim {
                socket,
                caller,
                callee,
            } => {
                let claim = match reply {
                    Ok(Value::Int(0)) => Claim::Granted,
                    Ok(Value::Int(1)) => Claim::Offline,
                    Ok(Value::Int(2)) => Claim::CallerBusy,
                    Ok(Value::Int(3)) => Claim::Busy,
                    Ok(Value::Int(4)) => Claim::Asleep,
                    _ => {
                        // The claim may have been made and its answer lost:
                        // give it back (only if it is still this call's).
                        out.retry.push(Op::Release {
                            caller: caller.clone(),
                            callee: callee.clone(),
                            member: None,
                        });
                        Claim::Unavailable
                    }
                };
                out.inbound.push(Inbound::Claimed {
                    socket,
                    caller,
                    callee,
                    claim,
                });
            }
            Op::ClaimMembers { socket, claim } => {
                let answer = member_claims(&reply, claim.members.len());
                if answer == Err(Claim::Unavailable) {
                    // What was claimed may have been, its answer lost.
                    let release = |member: Option<&Rc<str>>| Op::Release {
                        caller: claim.caller.clone(),
                        callee: claim.called.clone(),
                        member: member.cloned(),
                    };
                    out.retry.push(release(None));
                    out.retry
                        .extend(claim.members.iter().map(|member| release(Some(member))));
                }
                out.inbound.push(Inbound::MembersClaimed {
                    socket,
                    claim,
                    answer,
                });
            }
            Op::Check(peers) => {
                if let Ok(Value::Array(claims)) = reply
                    && settled
                {
                    for ((peer, expected), claim) in peers.into_iter().zip(claims) {
                        let holds = matches!(&claim, Value::BulkString(bytes) if *bytes == expected.as_bytes());
                        if !holds {
                            out.inbound.push(Inbound::Lost(peer));
                        }
                    }
                }
            }
            Op::Overview(answer) => {
                let result = reply
                    .map_err(ClusterError::Unavailable)
                    .and_then(|value| overview(&self.keys, value));
                out.then = Some(Box::new(move || answer(result)));
            }
            Op::Shared(shared) => match (shared, reply) {
                (Shared::TellMissed { user, socket }, reply) => {
                    let calls = entries(&reply, |json| serde_json::from_str(json).ok());
                    out.inbound.push(Inbound::MissedCalls {
                        user,
                        socket,
                        calls,
                    });
                }
                (Shared::Subscribe { user, .. }, Ok(Value::Int(1))) => log::warn!(
                    "{MAX_SUBSCRIPTIONS} push subscriptions kept in the cluster: not keeping {}'s",
                    crate::logging::untrusted(&user)
                ),
                (Shared::Missed { .. }, Ok(Value::Int(1))) => {
                    log::warn!("{MAX_MISSED} missed calls kept in the cluster: not keeping more");
                }
                (_, Err(error)) => log::warn!("Redis: {error}"),
                _ => {}
            },
            Op::Push { user, message } => {
                let subscriptions = entries(&reply, |json| Subscription::parse(json).ok());
                out.inbound.push(Inbound::Push {
                    user,
                    message,
                    subscriptions,
                });
            }
            Op::Deliver { answer, .. } => {
                let result = match reply {
                    Ok(Value::Int(receivers)) => Ok(receivers > 0),
                    Ok(_) => Err(ClusterError::Unavailable(
                        "unexpected reply from Redis".to_owned(),
                    )),
                    Err(error) => Err(ClusterError::Unavailable(error)),
                };
                out.then = Some(Box::new(move || answer(result)));
            }
            Op::Agree { answer, .. } => {
                let result = match reply {
                    Ok(Value::BulkString(bytes)) => String::from_utf8(bytes)
                        .map_err(|_| ClusterError::Unavailable("not UTF-8".to_owned())),
                    Ok(_) => Err(ClusterError::Unavailable(
                        "unexpected reply from Redis".to_owned(),
                    )),
                    Err(error) => Err(ClusterError::Unavailable(error)),
                };
                out.then = Some(Box::new(move || answer(result)));
            }
            Op::Then(then) => out.then = Some(then),
        }
        out
    }
}

/// The entries of a list `reply` that `read` makes sense of, in order;
/// none when Redis did not answer.
fn entries<T>(reply: &Result<Value, String>, read: impl Fn(&str) -> Option<T>) -> Vec<T> {
    let Ok(Value::Array(values)) = reply else {
        return Vec::new();
    };
    values
        .iter()
        .filter_map(|value| match value {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(&read),
            _ => None,
        })
        .collect()
}

/// Reads the reply of the member claim script, for `asked` members.
fn member_claims(reply: &Result<Value, String>, asked: usize) -> Result<Vec<Claim>, Claim> {
    let Ok(Value::Array(answers)) = reply else {
        return Err(Claim::Unavailable);
    };
    match answers.split_first() {
        Some((Value::Int(0), members)) if members.len() <= asked => members
            .iter()
            .map(|answer| match answer {
                Value::Int(0) => Ok(Claim::Granted),
                Value::Int(1) => Ok(Claim::Offline),
                Value::Int(3) => Ok(Claim::Busy),
                Value::Int(4) => Ok(Claim::Asleep),
                _ => Err(Claim::Unavailable),
            })
            .collect(),
        Some((Value::Int(2), [])) => Err(Claim::CallerBusy),
        _ => Err(Claim::Unavailable),
    }
}

/// Reads the reply of the overview script.
fn overview(keys: &Keys, value: Value) -> Result<Overview, ClusterError> {
    let strange = || ClusterError::Unavailable("unexpected reply from Redis".to_owned());
    let Value::Array(parts) = value else {
        return Err(strange());
    };
    let mut parts = parts.into_iter();
    let (Some(Value::Array(user_keys)), Some(Value::Int(calls))) = (parts.next(), parts.next())
    else {
        return Err(strange());
    };
    let prefix = keys.user("");
    let mut users: Vec<String> = user_keys
        .into_iter()
        .filter_map(|key| match key {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            _ => None,
        })
        .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    users.sort();
    users.dedup();
    Ok(Overview {
        users,
        calls: usize::try_from(calls).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::protocol::MissedCall;

    fn encoder() -> Encoder {
        Encoder {
            node: "n1".into(),
            keys: Keys {
                prefix: "p:".into(),
            },
            ttl_ms: "10000".into(),
            claim_ttl_ms: "5000".into(),
        }
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// The command's arguments as text.
    fn args(command: &Cmd) -> Vec<String> {
        command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<other>".into(),
            })
            .collect()
    }

    #[test]
    fn a_kick_names_the_socket_it_replaces() {
        let (before, after) = kick_around_socket("fl\"at");
        let wire = format!("{before}{}{after}", serde_json::json!("c-1"));
        match serde_json::from_str::<PeerMessage>(&wire) {
            Ok(PeerMessage::Kick { user, socket }) => {
                assert_eq!(&*user, "fl\"at");
                assert_eq!(socket.as_deref(), Some("c-1"));
            }
            other => panic!("{wire}: {other:?}"),
        }
        assert_eq!(presence_value("n1", "c-1"), "n1 c-1");
    }

    #[test]
    fn keys_and_claims() {
        let keys = encoder().keys;
        assert_eq!(keys.user("door"), "p:user:door");
        assert_eq!(keys.call("door"), "p:call:door");
        assert_eq!(keys.channel("n1"), "p:node:n1");
        assert_eq!(claim_value("door", "flat"), "door>flat");
    }

    #[test]
    fn ops_become_the_commands_the_scripts_expect() {
        let e = encoder();
        let claim = Op::Claim {
            socket: "s1".into(),
            caller: "door".into(),
            callee: "flat".into(),
        };
        let command = e.command(&claim).unwrap();
        assert_eq!(
            args(&command)[2..],
            [
                "4",
                "p:user:flat",
                "p:call:door",
                "p:call:flat",
                "p:push:flat",
                "door>flat",
                "5000"
            ]
        );
        let joined = Op::Joined(Registration {
            user: "flat".into(),
            socket: "s2".into(),
        });
        let joined = args(&e.command(&joined).unwrap());
        assert_eq!(
            joined[2..8],
            ["2", "p:user:flat", "p:call:flat", "n1", "s2", "10000"]
        );
        assert_eq!(joined[8], "p:node:");
        assert_eq!(joined[11..], ["p:user:", "flat"]);
        let check = Op::Check(vec![("flat".into(), "door>flat".into())]);
        assert_eq!(args(&e.command(&check).unwrap()), ["MGET", "p:call:flat"]);
        assert!(e.command(&Op::Then(Box::new(|| ()))).is_none());
        assert!(!claim.repeatable() && Op::Ping.repeatable());
    }

    #[test]
    fn claim_replies_are_read_and_a_lost_answer_gives_the_claim_back() {
        let e = encoder();
        let claim = || Op::Claim {
            socket: "s1".into(),
            caller: "door".into(),
            callee: "flat".into(),
        };
        for (reply, expected) in [
            (Ok(Value::Int(0)), Claim::Granted),
            (Ok(Value::Int(1)), Claim::Offline),
            (Ok(Value::Int(2)), Claim::CallerBusy),
            (Ok(Value::Int(3)), Claim::Busy),
            (Ok(Value::Int(9)), Claim::Unavailable),
            (Err("broken pipe".to_owned()), Claim::Unavailable),
        ] {
            let settled = e.settle(claim(), reply, true);
            match settled.inbound.as_slice() {
                [Inbound::Claimed { claim, socket, .. }] => {
                    assert_eq!((*claim, &**socket), (expected, "s1"));
                }
                other => panic!("{other:?}"),
            }
            let released = matches!(settled.retry.as_slice(), [Op::Release { .. }]);
            assert_eq!(released, expected == Claim::Unavailable);
        }
    }

    fn member_claim(previous: Option<&str>) -> MemberClaim {
        MemberClaim {
            round: 7,
            caller: "door".into(),
            called: "flat-12".into(),
            previous: previous.map(Into::into),
            members: vec!["anna".into(), "ben".into()],
            first_only: true,
        }
    }

    #[test]
    fn member_claims_ask_for_each_member_and_read_each_answer() {
        let e = encoder();
        let op = |previous| Op::ClaimMembers {
            socket: None,
            claim: member_claim(previous),
        };
        assert_eq!(
            args(&e.command(&op(None)).unwrap())[2..],
            [
                "7",
                "p:call:door",
                "p:user:anna",
                "p:call:anna",
                "p:push:anna",
                "p:user:ben",
                "p:call:ben",
                "p:push:ben",
                "door>flat-12",
                "5000",
                "1",
                ""
            ]
        );
        let turn = args(&e.command(&op(Some("flat-12"))).unwrap());
        assert_eq!(turn.last().map(String::as_str), Some("door>flat-12"));
        assert!(!op(None).repeatable());
        let ints = |values: &[i64]| {
            Ok(Value::Array(
                values.iter().map(|v| Value::Int(*v)).collect(),
            ))
        };
        for (reply, expected) in [
            (ints(&[0, 1, 0]), Ok(vec![Claim::Offline, Claim::Granted])),
            (ints(&[0, 3]), Ok(vec![Claim::Busy])),
            (ints(&[0]), Ok(vec![])),
            (ints(&[2]), Err(Claim::CallerBusy)),
            (ints(&[0, 0, 0, 0]), Err(Claim::Unavailable)),
            (ints(&[0, 7]), Err(Claim::Unavailable)),
            (Ok(Value::Int(0)), Err(Claim::Unavailable)),
            (Err("broken pipe".to_owned()), Err(Claim::Unavailable)),
        ] {
            let settled = e.settle(op(None), reply, true);
            match settled.inbound.as_slice() {
                [Inbound::MembersClaimed { answer, claim, .. }] => {
                    assert_eq!((answer, claim.round), (&expected, 7));
                }
                other => panic!("{other:?}"),
            }
            // A lost answer gives back whatever it may have claimed: the
            // caller's, and each member's.
            let released = settled.retry.len();
            let lost = expected == Err(Claim::Unavailable);
            assert_eq!(released, if lost { 3 } else { 0 });
        }
        let release = Op::Release {
            caller: "door".into(),
            callee: "flat-12".into(),
            member: Some("anna".into()),
        };
        assert_eq!(
            args(&e.command(&release).unwrap())[2..],
            ["1", "p:call:anna", "door>flat-12"]
        );
    }

    #[test]
    fn a_refresh_that_finds_a_user_elsewhere_kicks_this_device() {
        let e = encoder();
        let held = |user: &str, socket: &str| Held {
            key: format!("p:user:{user}"),
            value: presence_value("n1", socket),
            user: Some(Registration {
                user: user.into(),
                socket: socket.into(),
            }),
        };
        let hold = Op::Hold {
            held: vec![held("door", "s1"), held("flat", "s2")],
            create: true,
            claims: false,
        };
        let settled = e.settle(hold, Ok(Value::Array(vec![Value::Int(2)])), true);
        match settled.inbound.as_slice() {
            [Inbound::Message(PeerMessage::Kick { user, socket })] => {
                assert_eq!((&**user, socket.as_deref()), ("flat", Some("s2")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_check_declares_lost_the_peers_whose_claim_is_gone_once_settled() {
        let e = encoder();
        let check = || {
            Op::Check(vec![
                ("flat".into(), "door>flat".into()),
                ("hall".into(), "gate>hall".into()),
                ("lift".into(), "lobby>lift".into()),
            ])
        };
        let reply = || {
            Ok(Value::Array(vec![
                bulk("door>flat"),
                Value::Nil,
                bulk("other>lift"),
            ]))
        };
        let lost: Vec<String> = e
            .settle(check(), reply(), true)
            .inbound
            .iter()
            .map(|inbound| match inbound {
                Inbound::Lost(peer) => peer.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lost, ["hall", "lift"]);
        // Just after Redis came back, nobody is declared lost.
        assert!(e.settle(check(), reply(), false).inbound.is_empty());
    }

    #[test]
    fn what_the_cluster_keeps_for_its_users_is_asked_and_read() {
        use crate::push::{PushMessage, Subscription};
        let e = encoder();
        let json = r#"{"endpoint":"https://push.example/a","keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}"#;
        let subscription = Subscription::parse(json).unwrap();
        let subscribe = Op::Shared(Shared::Subscribe {
            user: "anna".into(),
            subscription: subscription.clone(),
        });
        let command = args(&e.command(&subscribe).unwrap());
        assert_eq!(command[2..5], ["2", "p:push:anna", "p:counts"]);
        assert_eq!(command[5], "https://push.example/a");
        assert_eq!(Subscription::parse(&command[6]).unwrap(), subscription);
        assert_eq!(command[7..], ["8", "10000"]);
        let missed = Op::Shared(Shared::Missed {
            user: "anna".into(),
            call: MissedCall {
                from: "door".into(),
                group: None,
                at: "2026-12-04T01:00:00.000Z".into(),
                reason: "timeout".into(),
            },
        });
        assert_eq!(args(&e.command(&missed).unwrap())[3], "p:missed:anna");
        assert!(subscribe.repeatable() && !missed.repeatable());
        // The missed calls of a new registration, for its socket.
        let tell = || {
            Op::Shared(Shared::TellMissed {
                user: "anna".into(),
                socket: "s1".into(),
            })
        };
        assert_eq!(
            args(&e.command(&tell()).unwrap()),
            ["LRANGE", "p:missed:anna", "0", "-1"]
        );
        let entry = r#"{"from":"door","at":"2026-12-04T01:00:00.000Z","reason":"timeout"}"#;
        let reply = Ok(Value::Array(vec![bulk(entry), bulk("not json")]));
        match e.settle(tell(), reply, true).inbound.as_slice() {
            [Inbound::MissedCalls { socket, calls, .. }] => {
                assert_eq!(&**socket, "s1");
                assert_eq!(calls.len(), 1, "what does not parse is left out");
                assert_eq!(&*calls[0].from, "door");
            }
            other => panic!("{other:?}"),
        }
        // A push reads the subscriptions, and leaves out what no longer checks.
        let push = || Op::Push {
            user: "anna".into(),
            message: PushMessage::CallCancelled {
                call: "c1".into(),
                reason: "ended".into(),
            },
        };
        let reply = Ok(Value::Array(vec![bulk(json), bulk(r#"{"endpoint":"x"}"#)]));
        match e.settle(push(), reply, true).inbound.as_slice() {
            [Inbound::Push { subscriptions, .. }] => assert_eq!(subscriptions, &[subscription]),
            other => panic!("{other:?}"),
        }
        let lost = e.settle(push(), Err("broken pipe".into()), true);
        assert!(
            matches!(lost.inbound.as_slice(), [Inbound::Push { subscriptions, .. }] if subscriptions.is_empty())
        );
    }

    #[test]
    fn homes_are_asked_for_and_read() {
        let e = encoder();
        let home = || Op::Home {
            socket: "s1".into(),
            user: "anna".into(),
        };
        assert_eq!(
            args(&e.command(&home()).unwrap())[2..],
            [
                "2",
                "p:user:anna",
                "p:call:anna",
                "n1",
                "s1",
                "10000",
                "p:alive:",
                "p:node:",
                "p:user:",
                "anna"
            ]
        );
        assert!(!home().repeatable());
        for (reply, expected) in [
            (Ok(bulk("n2")), Some("n2")),
            (Ok(Value::Nil), None),
            (Err("broken pipe".to_owned()), None),
        ] {
            match e.settle(home(), reply, true).inbound.as_slice() {
                [Inbound::Home { socket, user, node }] => {
                    assert_eq!((&**socket, &**user), ("s1", "anna"));
                    assert_eq!(node.as_deref(), expected);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_watch_names_the_homes_and_nodes_that_are_gone_once_settled() {
        let e = encoder();
        let watch = || Op::Watch {
            homes: vec![("anna".into(), "n2".into()), ("ben".into(), "n3".into())],
            nodes: vec!["n4".into(), "n5".into()],
        };
        assert_eq!(
            args(&e.command(&watch()).unwrap())[2..],
            [
                "4",
                "p:user:anna",
                "p:user:ben",
                "p:alive:n4",
                "p:alive:n5",
                "2",
                "n2",
                "n3"
            ]
        );
        let reply = || Ok(Value::Array(vec![Value::Int(2), Value::Int(3)]));
        let gone: Vec<String> = e
            .settle(watch(), reply(), true)
            .inbound
            .iter()
            .map(|inbound| match inbound {
                Inbound::HomeGone(user) => format!("home of {user}"),
                Inbound::NodeGone(node) => format!("node {node}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(gone, ["home of ben", "node n4"]);
        assert!(e.settle(watch(), reply(), false).inbound.is_empty());
        let publish = Op::Publish {
            node: "n2".into(),
            message: "{}".into(),
        };
        assert_eq!(
            args(&e.command(&publish).unwrap()),
            ["PUBLISH", "p:node:n2", "{}"]
        );
    }

    #[test]
    fn overview_replies_are_read_and_checked() {
        let keys = encoder().keys;
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("p:user:flat"),
                bulk("p:user:door"),
                bulk("other"),
            ]),
            Value::Int(1),
        ]);
        assert_eq!(
            overview(&keys, reply),
            Ok(Overview {
                users: vec!["door".into(), "flat".into()],
                calls: 1
            })
        );
        assert!(overview(&keys, Value::Int(3)).is_err());
        assert!(overview(&keys, Value::Array(vec![Value::Nil])).is_err());
    }
}
