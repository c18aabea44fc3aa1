//! Devices of one user on several nodes. A user the directory allows
//! several devices has one *home*: the node that registered them first
//! (Redis's `user:<name>` names it). The home's hub holds every device of
//! theirs, as one node does, so ringing, the first answer and the kicks
//! past `devices` are decided in one place. A device connected to another
//! node is *relayed*: that node passes the device's events to the home,
//! and the home's emits, acks and disconnects for it come back.
//!
//! In the home's hub such a device is the socket `@<node>/<socket>`
//! ([`remote_id`]); node and socket ids are base64url, so neither holds
//! `@` or `/`, and no local socket id starts with `@`.
//!
//! What it costs: every event of a relayed device crosses Redis twice
//! (there and back) where a local one does not: one Redis round trip
//! more. Only users with `devices` above one are relayed; everyone else
//! keeps the one-device rule and their own node.

use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::cluster::Nodes;
use crate::socketio::{Ack, Socket, to_arg};

/// What the nodes of a relayed device tell each other: the device's node
/// to its user's home (`Event`, `Gone`, `Recovered`), and back (`Emit`,
/// `Acked`, `Drop`, `Released`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Relay {
    /// The device sent an event: the home handles it as from
    /// `@node/socket`.
    Event {
        /// The device's node.
        node: Rc<str>,
        /// The device's socket there.
        socket: Rc<str>,
        /// The event's name (one of the client events).
        name: String,
        /// Its argument, as the client sent it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arg: Option<Box<RawValue>>,
        /// The number its ack goes back under, if the client asked for one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
    },
    /// The device's connection closed; `lost`: in a way its client may
    /// come back from (the home holds it for the reconnect grace).
    Gone {
        /// The device's node.
        node: Rc<str>,
        /// The device's socket there.
        socket: Rc<str>,
        /// Whether the client may come back.
        lost: bool,
    },
    /// The device's client recovered its socket.
    Recovered {
        /// The device's node.
        node: Rc<str>,
        /// The device's socket there.
        socket: Rc<str>,
    },
    /// To the device's node: emit `name` with `payload` on `socket`.
    Emit {
        /// The device's socket.
        socket: Rc<str>,
        /// The event's wire name.
        name: String,
        /// Its argument.
        payload: Box<RawValue>,
    },
    /// To the device's node: answer the ack numbered `ack` with `reply`.
    Acked {
        /// The device's socket.
        socket: Rc<str>,
        /// The number [`Relay::Event`] carried.
        ack: u64,
        /// The ack's argument.
        reply: Box<RawValue>,
    },
    /// To the device's node: disconnect the socket (replaced, or its grace
    /// ran out).
    Drop {
        /// The device's socket.
        socket: Rc<str>,
    },
    /// To the device's node: the socket is no longer registered at the
    /// home (it logged out, or left): its events stop being relayed.
    Released {
        /// The device's socket.
        socket: Rc<str>,
    },
}

/// The id a device on `node` has in its home's hub.
pub fn remote_id(node: &str, socket: &str) -> Rc<str> {
    format!("@{node}/{socket}").into()
}

/// The node and socket of a relayed device's id; `None` for a local socket.
pub fn parse_remote(id: &str) -> Option<(&str, &str)> {
    id.strip_prefix('@')?.split_once('/')
}

/// The most acks a relayed device may wait for at once; past them, its
/// events are refused here as too many.
pub const MAX_RELAYED_ACKS: usize = 256;

/// On a device's node: the sockets whose events go to their user's home,
/// with the acks that wait for it.
#[derive(Debug)]
pub struct Relayed<A> {
    sockets: HashMap<Rc<str>, Relaying<A>>,
}

impl<A> Default for Relayed<A> {
    fn default() -> Relayed<A> {
        Relayed {
            sockets: HashMap::new(),
        }
    }
}

#[derive(Debug)]
struct Relaying<A> {
    user: Rc<str>,
    home: Rc<str>,
    acks: HashMap<u64, A>,
    next_ack: u64,
}

impl<A> Relayed<A> {
    /// `socket` is `user`'s, whose home is `home`, from now on.
    pub fn start(&mut self, socket: Rc<str>, user: Rc<str>, home: Rc<str>) {
        let relaying = Relaying {
            user,
            home,
            acks: HashMap::new(),
            next_ack: 0,
        };
        self.sockets.insert(socket, relaying);
    }

    /// The user and home of a relayed socket.
    pub fn of(&self, socket: &str) -> Option<(&Rc<str>, &Rc<str>)> {
        self.sockets.get(socket).map(|r| (&r.user, &r.home))
    }

    /// Keeps `ack` until the home answers it: the number to send it under,
    /// or the ack back when too many wait.
    pub fn wait(&mut self, socket: &str, ack: A) -> Result<u64, A> {
        let Some(relaying) = self.sockets.get_mut(socket) else {
            return Err(ack);
        };
        if relaying.acks.len() >= MAX_RELAYED_ACKS {
            return Err(ack);
        }
        let number = relaying.next_ack;
        relaying.next_ack += 1;
        relaying.acks.insert(number, ack);
        Ok(number)
    }

    /// The ack numbered `number` the home answered, once.
    pub fn answered(&mut self, socket: &str, number: u64) -> Option<A> {
        self.sockets.get_mut(socket)?.acks.remove(&number)
    }

    /// Stops relaying `socket` (its acks that wait are dropped).
    pub fn stop(&mut self, socket: &str) -> bool {
        self.sockets.remove(socket).is_some()
    }

    /// The sockets relayed for `user`.
    pub fn sockets_of(&self, user: &str) -> Vec<Rc<str>> {
        let of_user = self.sockets.iter().filter(|(_, r)| *r.user == *user);
        of_user.map(|(socket, _)| socket.clone()).collect()
    }

    /// Each relayed user and their home, once.
    pub fn homes(&self) -> Vec<(Rc<str>, Rc<str>)> {
        let mut homes: Vec<(Rc<str>, Rc<str>)> = self
            .sockets
            .values()
            .map(|r| (r.user.clone(), r.home.clone()))
            .collect();
        homes.sort_unstable();
        homes.dedup();
        homes
    }

    /// How many sockets are relayed.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// A device the signaling service answers: a socket here, or a relayed
/// one whose home this node is.
#[derive(Clone)]
pub enum Device {
    /// A socket connected here.
    Here(Socket),
    /// A socket on another node.
    There(Remote),
}

/// A relayed device, as its home sees it.
#[derive(Clone)]
pub struct Remote {
    /// Its id in the hub: `@node/socket`.
    pub id: Rc<str>,
    /// Its node.
    pub node: Rc<str>,
    /// Its socket there.
    pub socket: Rc<str>,
    nodes: Rc<dyn Nodes>,
}

impl Remote {
    /// The relayed device `id` names, reached through `nodes`; `None` for
    /// a local id.
    pub fn new(id: &str, nodes: Rc<dyn Nodes>) -> Option<Remote> {
        let (node, socket) = parse_remote(id)?;
        Some(Remote {
            id: id.into(),
            node: node.into(),
            socket: socket.into(),
            nodes,
        })
    }

    fn send(&self, message: &Relay) {
        self.nodes.relay(&self.node, message);
    }
}

impl Device {
    /// Its id in the hub.
    pub fn id(&self) -> Rc<str> {
        match self {
            Device::Here(socket) => socket.id_rc(),
            Device::There(remote) => remote.id.clone(),
        }
    }

    /// Emits `event` with `arg`.
    pub fn emit_value<T: Serialize + ?Sized>(&self, event: &str, arg: &T) {
        match self {
            Device::Here(socket) => socket.emit_value(event, arg),
            Device::There(remote) => remote.send(&Relay::Emit {
                socket: remote.socket.clone(),
                name: event.to_owned(),
                payload: to_arg(arg),
            }),
        }
    }

    /// Whether it can hear anything (a relayed device: as far as its home
    /// knows, yes).
    pub fn connected(&self) -> bool {
        match self {
            Device::Here(socket) => socket.connected(),
            Device::There(_) => true,
        }
    }

    /// Disconnects it and closes its connection.
    pub fn disconnect_and_close(&self) {
        match self {
            Device::Here(socket) => socket.disconnect_and_close(),
            Device::There(remote) => remote.send(&Relay::Drop {
                socket: remote.socket.clone(),
            }),
        }
    }

    /// Where it is, for the log.
    pub fn address(&self) -> String {
        match self {
            Device::Here(socket) => socket.address().to_string(),
            Device::There(remote) => format!("node {}", remote.node),
        }
    }
}

/// Where the answer to an event goes: its ack here, or the ack a relayed
/// device's node keeps.
pub enum Reply {
    /// An ack on a socket here.
    Here(Ack),
    /// An ack kept by a relayed device's node under a number.
    There(Remote, u64),
}

impl Reply {
    /// Answers with one argument.
    pub fn send(self, reply: Box<RawValue>) {
        match self {
            Reply::Here(ack) => ack.send(&[reply]),
            Reply::There(remote, ack) => remote.send(&Relay::Acked {
                socket: remote.socket.clone(),
                ack,
                reply,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_name_node_and_socket() {
        let id = remote_id("n-1", "s_2");
        assert_eq!(&*id, "@n-1/s_2");
        assert_eq!(parse_remote(&id), Some(("n-1", "s_2")));
        assert_eq!(parse_remote("s_2"), None);
        assert_eq!(parse_remote("@n1"), None);
    }

    #[test]
    fn relayed_acks_are_numbered_bounded_and_answered_once() {
        let mut relayed = Relayed::default();
        assert_eq!(relayed.wait("s1", 'a'), Err('a'));
        relayed.start("s1".into(), "anna".into(), "n2".into());
        relayed.start("s2".into(), "anna".into(), "n2".into());
        relayed.start("s3".into(), "ben".into(), "n3".into());
        assert_eq!(relayed.wait("s1", 'a'), Ok(0));
        assert_eq!(relayed.wait("s1", 'b'), Ok(1));
        assert_eq!(relayed.answered("s1", 0), Some('a'));
        assert_eq!(relayed.answered("s1", 0), None);
        for _ in 1..MAX_RELAYED_ACKS {
            assert!(relayed.wait("s2", 'x').is_ok());
        }
        assert_eq!(relayed.wait("s2", 'y'), Ok(MAX_RELAYED_ACKS as u64 - 1));
        assert_eq!(relayed.wait("s2", 'z'), Err('z'));
        let mut anna = relayed.sockets_of("anna");
        anna.sort_unstable();
        assert_eq!(anna, ["s1".into(), "s2".into()] as [Rc<str>; 2]);
        assert_eq!(
            relayed.homes(),
            [("anna".into(), "n2".into()), ("ben".into(), "n3".into())] as [(Rc<str>, Rc<str>); 2]
        );
        assert!(relayed.stop("s1") && !relayed.stop("s1"));
        assert_eq!(relayed.answered("s1", 1), None);
        assert_eq!(relayed.len(), 2);
    }

    #[test]
    fn relay_messages_survive_the_wire() {
        let message = Relay::Event {
            node: "n1".into(),
            socket: "s1".into(),
            name: "answer_call".into(),
            arg: Some(to_arg(&serde_json::json!({ "to": "door" }))),
            ack: Some(3),
        };
        let wire = serde_json::to_string(&message).unwrap();
        assert_eq!(
            wire,
            r#"{"Event":{"node":"n1","socket":"s1","name":"answer_call","arg":{"to":"door"},"ack":3}}"#
        );
        assert!(matches!(
            serde_json::from_str::<Relay>(&wire),
            Ok(Relay::Event { ack: Some(3), .. })
        ));
        assert!(serde_json::from_str::<Relay>(r#"{"Ring":{}}"#).is_err());
    }
}
