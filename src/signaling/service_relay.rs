//! The service's side of [`relay`](super::super::relay): on a device's
//! node, asking for its user's home and passing its events there; on the
//! home, handling them as from `@node/socket` and sending back what the
//! hub decided.

use std::collections::VecDeque;
use std::ops::Bound;
use std::rc::Rc;
use std::time::Instant;

use super::{Later, Signaling, Waiting};
use crate::logging::untrusted;
use crate::signaling::protocol::{CLIENT_EVENTS, ClientEvent, ServerEvent, SignalError};
use crate::signaling::relay::{Device, Relay, Remote, Reply, remote_id};
use crate::socketio::{Message, Socket};

impl Signaling {
    /// Whether registering `user` on `socket` must first find the user's
    /// home: several nodes, a user with several devices, none of them
    /// here, and nothing that refuses the name here.
    pub(super) fn needs_home(&self, socket: &Socket, user: &str) -> bool {
        let hub = self.hub.borrow();
        self.nodes.is_some()
            && hub.directory().devices(user) > 1
            && hub.device_count(user) == 0
            && hub.registration_refusal(&socket.id_rc(), user).is_none()
    }

    /// Asks the cluster where `user` lives; `register` and what `socket`
    /// sends meanwhile wait for [`Signaling::homed`].
    pub(super) fn ask_home(&self, socket: &Socket, user: &str, register: Later) {
        let Some(nodes) = &self.nodes else {
            return;
        };
        let wait = Waiting {
            offer: None,
            ack: None,
            later: VecDeque::from([register]),
        };
        self.waiting.borrow_mut().insert(socket.id_rc(), wait);
        nodes.home(socket.id_rc(), user.into());
    }

    /// The cluster named `user`'s home for the registration on `socket`:
    /// here, the hub registers them; elsewhere, the socket's events go
    /// there from now on (a name it had here logs out first).
    pub(super) fn homed(&self, socket: &Rc<str>, user: &Rc<str>, home: Option<Rc<str>>) {
        let Some(wait) = self.waiting.borrow_mut().remove(socket) else {
            return;
        };
        let (Some(here), Some(nodes)) = (self.socket(socket), &self.nodes) else {
            return;
        };
        let mut later = wait.later;
        let Some((name, message, mut ack)) = later.pop_front() else {
            return;
        };
        let device = Device::Here(here.clone());
        match home {
            None => {
                let error = SignalError::Unavailable;
                let event = ServerEvent::UserRegistered {
                    success: false,
                    user_id: user.to_string(),
                    error: Some(error.to_string()),
                };
                device.emit_value(event.name(), &event);
                self.answer(&device, name, ack, Err(error));
            }
            Some(home) if home == nodes.node() => {
                let parsed = ClientEvent::parse(name, message.arg(0), &self.limits);
                self.handle_parsed(&device, name, parsed, true, ack);
            }
            Some(home) => {
                if self.hub.borrow().user_of(socket).is_some() {
                    let logout = ClientEvent::LogoutUser { user_id: None };
                    let outcome = self.with_hub(|hub| hub.handle(socket, logout, Instant::now()));
                    self.execute(outcome.effects, None);
                }
                log::info!(
                    "{} registers from {}; their home is node {home}",
                    untrusted(user),
                    here.address()
                );
                self.relayed
                    .borrow_mut()
                    .start(socket.clone(), user.clone(), home);
                self.relay_event(&here, name, &message, &mut ack);
            }
        }
        self.replay(&device, later);
    }

    /// Passes an event of a relayed socket to its user's home (true). A
    /// registration under another name stops the relay (false: it is
    /// handled here, and the home hears a logout).
    pub(super) fn relay_event(
        &self,
        socket: &Socket,
        name: &'static str,
        message: &Message,
        ack: &mut Option<Reply>,
    ) -> bool {
        let Some(nodes) = &self.nodes else {
            return false;
        };
        let Some((user, home)) = self
            .relayed
            .borrow()
            .of(socket.id())
            .map(|(user, home)| (user.clone(), home.clone()))
        else {
            return false;
        };
        let send = |name: &str, arg, ack| {
            let event = Relay::Event {
                node: nodes.node(),
                socket: socket.id_rc(),
                name: name.to_owned(),
                arg,
                ack,
            };
            nodes.relay(&home, &event);
        };
        if name == "register_user"
            && let Ok(Some(ClientEvent::RegisterUser { user_id })) =
                ClientEvent::parse(name, message.arg(0), &self.limits)
            && *user_id != *user
        {
            send(
                "logout_user",
                Some(crate::socketio::to_arg(&serde_json::json!({}))),
                None,
            );
            self.relayed.borrow_mut().stop(socket.id());
            return false;
        }
        let device = Device::Here(socket.clone());
        if !message.attachments.is_empty() {
            let error = SignalError::InvalidPayload("binary attachments are not accepted".into());
            self.answer(&device, name, ack.take(), Err(error));
            return true;
        }
        let number = match ack.take() {
            Some(Reply::Here(waiting)) => {
                match self.relayed.borrow_mut().wait(socket.id(), waiting) {
                    Ok(number) => Some(number),
                    Err(waiting) => {
                        let error = Err(SignalError::RateLimited);
                        self.answer(&device, name, Some(Reply::Here(waiting)), error);
                        return true;
                    }
                }
            }
            _ => None,
        };
        send(name, message.args.first().cloned(), number);
        true
    }

    /// A relayed socket's connection closed (true): its home hears it.
    /// When its client may come back, the socket is kept until the home
    /// says whether it holds the device.
    pub(super) fn relay_gone(&self, socket: &Socket, lost: bool) -> bool {
        let Some(nodes) = &self.nodes else {
            return false;
        };
        let Some(home) = self
            .relayed
            .borrow()
            .of(socket.id())
            .map(|(_, h)| h.clone())
        else {
            return false;
        };
        let gone = Relay::Gone {
            node: nodes.node(),
            socket: socket.id_rc(),
            lost,
        };
        nodes.relay(&home, &gone);
        if !lost {
            self.relayed.borrow_mut().stop(socket.id());
            self.clients.borrow_mut().remove(socket.id());
        }
        true
    }

    /// A client recovered its socket: its user is back (at their home,
    /// for a relayed one).
    pub(super) fn recovered(&self, socket: &Socket) {
        let relayed_to = self
            .relayed
            .borrow()
            .of(socket.id())
            .map(|(_, h)| h.clone());
        match (relayed_to, &self.nodes) {
            (Some(home), Some(nodes)) => {
                let back = Relay::Recovered {
                    node: nodes.node(),
                    socket: socket.id_rc(),
                };
                nodes.relay(&home, &back);
            }
            _ => {
                let effects = self.with_hub(|hub| hub.recovered(&socket.id_rc(), Instant::now()));
                self.execute(effects, None);
            }
        }
    }

    /// Handles a message about a relayed device: as its home (an event,
    /// its end, its recovery), or as its node (what to send it).
    pub(super) fn relay(&self, relay: Relay) {
        let now = Instant::now();
        match relay {
            Relay::Event {
                node,
                socket,
                name,
                arg,
                ack,
            } => {
                let Some(name) = CLIENT_EVENTS.iter().copied().find(|n| *n == name) else {
                    return;
                };
                let Some(remote) = self.remote(&node, &socket) else {
                    return;
                };
                self.hosted.borrow_mut().insert(remote.id.clone());
                let reply = ack.map(|number| Reply::There(remote.clone(), number));
                let message = Message {
                    args: arg.into_iter().collect(),
                    attachments: Vec::new(),
                };
                let device = Device::There(remote.clone());
                self.wait_behind_claim(&device, name, message, reply);
                self.settle_hosted(&remote);
            }
            Relay::Gone { node, socket, lost } => {
                let Some(remote) = self.remote(&node, &socket) else {
                    return;
                };
                self.waiting.borrow_mut().remove(&remote.id);
                let effects = self.with_hub(|hub| {
                    if lost {
                        hub.lost(&remote.id, now)
                    } else {
                        hub.disconnected(&remote.id, now)
                    }
                });
                self.execute(effects, None);
                if lost {
                    self.settle_hosted(&remote);
                } else {
                    self.hosted.borrow_mut().remove(&remote.id);
                }
            }
            Relay::Recovered { node, socket } => {
                if let Some(remote) = self.remote(&node, &socket) {
                    let effects = self.with_hub(|hub| hub.recovered(&remote.id, now));
                    self.execute(effects, None);
                }
            }
            Relay::Emit {
                socket,
                name,
                payload,
            } => {
                if let Some(socket) = self.socket(&socket) {
                    socket.emit_value(&name, &payload);
                }
            }
            Relay::Acked { socket, ack, reply } => {
                let waiting = self.relayed.borrow_mut().answered(&socket, ack);
                if let Some(waiting) = waiting {
                    waiting.send(&[reply]);
                }
            }
            Relay::Drop { socket: id } => {
                self.relayed.borrow_mut().stop(&id);
                if let Some(socket) = self.socket(&id) {
                    socket.disconnect_and_close();
                    if !socket.connected() {
                        self.clients.borrow_mut().remove(&id);
                    }
                }
            }
            Relay::Released { socket: id } => {
                self.relayed.borrow_mut().stop(&id);
                if let Some(socket) = self.socket(&id)
                    && !socket.connected()
                {
                    // Away, and no longer anyone's: a recovered socket
                    // would look registered to its client, and be none.
                    self.clients.borrow_mut().remove(&id);
                    socket.disconnect();
                }
            }
        }
    }

    /// The relayed device `socket` on `node`, as this node's hub knows it.
    fn remote(&self, node: &str, socket: &str) -> Option<Remote> {
        let nodes = self.nodes.clone()?;
        Remote::new(&remote_id(node, socket), nodes)
    }

    /// After something about a hosted device: once the hub no longer has
    /// it (it logged out, or left without a grace), its node stops
    /// relaying it.
    fn settle_hosted(&self, remote: &Remote) {
        let registered = self.hub.borrow().user_of(&remote.id).is_some();
        let waits = self.waiting.borrow().contains_key(&remote.id);
        if !registered && !waits && self.hosted.borrow_mut().remove(&remote.id) {
            let released = Relay::Released {
                socket: remote.socket.clone(),
            };
            if let Some(nodes) = &self.nodes {
                nodes.relay(&remote.node, &released);
            }
        }
    }

    /// `user`'s home no longer holds them (it died): their devices here
    /// are disconnected, so that their clients register again and find a
    /// new home.
    pub(super) fn home_gone(&self, user: &str) {
        let sockets = self.relayed.borrow().sockets_of(user);
        if sockets.is_empty() {
            return;
        }
        log::info!(
            "the home of {} is gone; disconnecting its {} device(s) here",
            untrusted(user),
            sockets.len()
        );
        for id in sockets {
            self.relayed.borrow_mut().stop(&id);
            if let Some(socket) = self.socket(&id) {
                socket.disconnect_and_close();
                if !socket.connected() {
                    self.clients.borrow_mut().remove(&id);
                }
            }
        }
    }

    /// A node whose devices this node hosts is gone: they leave.
    pub(super) fn node_gone(&self, node: &str) {
        let prefix = format!("@{node}/");
        let gone: Vec<Rc<str>> = self
            .hosted
            .borrow()
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|id| id.starts_with(&prefix))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        log::info!("node {node} is gone, and {} device(s) with it", gone.len());
        for id in gone {
            self.hosted.borrow_mut().remove(&id);
            self.waiting.borrow_mut().remove(&id);
            let effects = self.with_hub(|hub| hub.disconnected(&id, Instant::now()));
            self.execute(effects, None);
        }
    }

    /// Shutting down: the devices relayed here are let go and
    /// disconnected, so that their clients register again at once and
    /// find a new home, not a presence TTL later.
    pub fn let_hosted_go(&self) {
        if let Some(nodes) = &self.nodes {
            nodes.retire();
        }
        let hosted = std::mem::take(&mut *self.hosted.borrow_mut());
        for id in hosted {
            self.waiting.borrow_mut().remove(&id);
            let effects = self.with_hub(|hub| hub.disconnected(&id, Instant::now()));
            self.execute(effects, None);
            if let Some(device) = self.device(&id) {
                device.disconnect_and_close();
            }
        }
    }

    /// The nodes whose devices this node hosts, once each.
    pub(super) fn hosting_nodes(&self) -> Vec<Rc<str>> {
        let mut nodes: Vec<Rc<str>> = self
            .hosted
            .borrow()
            .iter()
            .filter_map(|id| crate::signaling::relay::parse_remote(id))
            .map(|(node, _)| Rc::from(node))
            .collect();
        nodes.dedup();
        nodes
    }
}
