//! The driver of signaling: Socket.IO events in, the hub's decisions
//! ([`Effect`]s) out to sockets and to the other nodes, and one alarm for
//! every deadline (the hub's ring timeouts and sweeps, the cluster's
//! refreshes and checks). After each call into the hub, the alarm is set to
//! its next deadline.

use crate::id::IdMap;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use serde_json::value::RawValue;
use smol::channel::Receiver;

use super::cluster::{Inbound, Nodes, NodesLink, Refresh};
use super::door_commands::{self, DoorAsks, DoorCommands};
use super::hub::{DoorAttempt, DoorResult, Effect, Hub, MemberClaim, Outcome};
use super::ice::IceConfig;
use super::limits::Limits;
use super::peer::PeerMessage;
use super::protocol::{CLIENT_EVENTS, ClientEvent, ServerEvent, SignalError};
use super::relay::{Device, Relayed, Remote, Reply};
use crate::logging::untrusted;
use crate::push::{Delivered, Policy, PushMessage, Pusher, Subscription};
use crate::rate::Bucket;
use crate::rt::{self, Alarm, Wake};
use crate::socketio::{self, Ack, ConnectError, Incoming, Message, Socket, to_arg};

/// A socket, as the hub knows it: its id.
type SocketId = Rc<str>;

/// The signaling service on one Socket.IO namespace.
pub struct Signaling {
    me: Weak<Signaling>,
    hub: RefCell<Hub<SocketId>>,
    clients: RefCell<IdMap<SocketId, Client>>,
    ice: IceConfig,
    limits: Limits,
    /// Several nodes: the others.
    nodes: Option<Rc<dyn Nodes>>,
    /// When this node refreshes what it holds in Redis, and checks its peers.
    refresh: RefCell<Option<Refresh>>,
    /// Sockets whose `make_call` waits for the cluster's claim, with what
    /// they sent meanwhile (handled in order once the claim is in).
    waiting: RefCell<IdMap<SocketId, Waiting>>,
    /// Set to the first of the hub's and the refresh's deadlines.
    alarm: Alarm,
    /// Graces that ran out since memory was last handed back.
    lapsed_since_give_back: std::cell::Cell<u64>,
    /// Door stations' commands running now, with the acks that wait.
    door_commands: DoorCommands<Option<Reply>>,
    /// Several nodes: `open_door`s waiting for their station's node.
    door_asks: DoorAsks<Option<Reply>>,
    /// Sockets here whose user's home is another node: their events go
    /// there (see [`relay`](super::relay)).
    relayed: RefCell<Relayed<Ack>>,
    /// Devices on other nodes whose home this node is, in the hub as
    /// `@node/socket`, sorted so that a node's are together.
    hosted: RefCell<std::collections::BTreeSet<SocketId>>,
    /// Sends Web Push messages (its key may be replaced once, at start).
    pusher: RefCell<Pusher>,
    /// How long a call rings: a push about it is worth no more.
    call_timeout: std::time::Duration,
    /// The durable call log, with a state directory.
    call_log: RefCell<Option<crate::calllog::CallLog>>,
    /// Where subscriptions and missed calls are kept, with a state directory.
    state_dir: RefCell<Option<std::path::PathBuf>>,
    /// They changed since they were last written.
    state_dirty: std::cell::Cell<bool>,
    /// A write of them is under way.
    state_saving: std::cell::Cell<bool>,
    /// Told when a write of them ends.
    state_saved: crate::rt::Notify,
}

/// A `make_call` waiting for its claim, and the events that came after it.
struct Waiting {
    offer: Option<Box<RawValue>>,
    ack: Option<Reply>,
    later: VecDeque<Later>,
}

/// An event that waits behind a claim, or behind the question of its
/// user's home.
type Later = (&'static str, Message, Option<Reply>);

/// The most events a socket may send while its `make_call` waits for the
/// cluster (a few ICE candidates, typically).
const MAX_WAITING_EVENTS: usize = 256;

/// How many bucket places a sweep must free for the memory to be handed
/// back to the system (a few hundred KiB).
const SWEPT_ENOUGH_TO_GIVE_BACK: usize = 4096;

/// A connected socket and its event budget.
struct Client {
    socket: Socket,
    events: Bucket,
    /// Refusals it may collect before it is disconnected, forgiven at the
    /// event rate. Counted this way, not in a row: a flood read slowly (a
    /// busy server reads each client a turn at a time) has a token refill
    /// between every hundred of its events, and was never cut off.
    strikes: Bucket,
}

impl Signaling {
    /// Installs the service on `io`'s root namespace. With an auth secret
    /// in `settings`, a client must connect with a valid token (`auth:
    /// {token}`) and may register only the name inside it. With the other
    /// nodes of a cluster, the hub's users and calls are shared with them.
    pub fn install(
        io: &socketio::Server,
        settings: &super::Settings,
        nodes: Option<NodesLink>,
    ) -> Rc<Signaling> {
        let limits = settings.limits.clone();
        let (nodes, inbound) = match nodes {
            Some((nodes, inbound)) => (Some(nodes), Some(inbound)),
            None => (None, None),
        };
        let now = Instant::now();
        let policy = Policy::new(settings.push.allow.iter().cloned());
        let service = Rc::new_cyclic(|me: &Weak<Signaling>| Signaling {
            me: me.clone(),
            hub: RefCell::new(
                Hub::new(settings.call_timeout, &limits, nodes.is_some())
                    .with_grace(settings.reconnect_grace)
                    .with_max_call(settings.max_call_duration)
                    .with_push_policy(policy.clone()),
            ),
            pusher: RefCell::new(pusher(
                me.clone(),
                crate::push::crypto::VapidKey::generate().ok(),
                &settings.push,
                policy,
            )),
            call_timeout: settings.call_timeout,
            call_log: RefCell::new(None),
            state_dir: RefCell::new(None),
            state_dirty: std::cell::Cell::new(false),
            state_saving: std::cell::Cell::new(false),
            state_saved: crate::rt::Notify::default(),
            clients: RefCell::new(IdMap::default()),
            ice: settings.ice.clone(),
            limits,
            refresh: RefCell::new(
                nodes
                    .as_ref()
                    .map(|nodes| Refresh::new(nodes.refresh_period(), now)),
            ),
            nodes,
            waiting: RefCell::new(IdMap::default()),
            alarm: Alarm::new(me.clone()),
            lapsed_since_give_back: std::cell::Cell::new(0),
            door_commands: DoorCommands::default(),
            door_asks: DoorAsks::default(),
            relayed: RefCell::default(),
            hosted: RefCell::default(),
        });
        service.set_alarm();
        let auth_secret = settings.auth_secret.clone();
        let namespace = io.of("/");
        let weak = Rc::downgrade(&service);
        namespace.on_connect(move |socket, auth| {
            let Some(service) = weak.upgrade() else {
                return Ok(());
            };
            if let Some(secret) = &auth_secret {
                let user = authenticate(secret, auth)?;
                service.with_hub(|hub| hub.authenticate(&socket.id_rc(), &user));
            }
            let limits = &service.limits;
            let now = Instant::now();
            // The last strike is the one that disconnects.
            let strikes = f64::from(limits.event_strikes.saturating_sub(1));
            let client = Client {
                socket: socket.clone(),
                events: Bucket::new(limits.event_rate, limits.event_burst, now),
                strikes: Bucket::new(limits.event_rate, strikes, now),
            };
            service.clients.borrow_mut().insert(socket.id_rc(), client);
            Ok(())
        });
        let weak = Rc::downgrade(&service);
        namespace.on_disconnect(move |socket, reason| {
            if let Some(service) = weak.upgrade() {
                service.left(socket, reason);
            }
        });
        let weak = Rc::downgrade(&service);
        namespace.on_recover(move |socket| {
            if let Some(service) = weak.upgrade() {
                service.recovered(socket);
            }
        });
        // Everything a socket sends is charged first, known events or not.
        let weak = Rc::downgrade(&service);
        namespace.guard(move |socket, incoming| {
            weak.upgrade()
                .is_none_or(|service| service.admit(socket, incoming))
        });
        for name in CLIENT_EVENTS {
            let weak = Rc::downgrade(&service);
            namespace.on(name, move |socket, message, ack| {
                if let Some(service) = weak.upgrade() {
                    let device = Device::Here(socket.clone());
                    service.wait_behind_claim(&device, name, message, ack.map(Reply::Here));
                }
            });
        }
        let weak = Rc::downgrade(&service);
        namespace.on_fallback(move |socket, name, _, ack| {
            if let Some(service) = weak.upgrade() {
                service.unknown_event(socket, name, ack);
            }
        });
        if let Some(inbound) = inbound {
            rt::spawn(hear_the_others(Rc::downgrade(&service), inbound)).detach();
        }
        service
    }

    /// A socket left its namespace. When its connection was lost in a way
    /// the client may come back from, its user is held for the reconnect
    /// grace (the socket stays known, so that the hub can give it up
    /// later); otherwise the user leaves now.
    fn left(&self, socket: &Socket, reason: socketio::DisconnectReason) {
        let id = socket.id_rc();
        self.waiting.borrow_mut().remove(&id);
        if self.relay_gone(socket, reason.recoverable()) {
            return;
        }
        let now = Instant::now();
        let registered = self.hub.borrow().user_of(&id).is_some();
        let effects = self.with_hub(|hub| {
            if reason.recoverable() {
                hub.lost(&id, now)
            } else {
                hub.disconnected(&id, now)
            }
        });
        if self.hub.borrow().user_of(&id).is_none() {
            self.clients.borrow_mut().remove(&id);
            if registered {
                // Its user is gone (no grace): a recovered socket would
                // look registered to its client, and be none.
                socket.disconnect();
            }
        }
        self.execute(effects, None);
    }

    /// The other nodes, when there are some.
    pub fn nodes(&self) -> Option<&dyn Nodes> {
        self.nodes.as_deref()
    }

    /// Uses `directory` for new calls; calls in progress keep their plan.
    pub fn set_directory(&self, directory: Rc<super::directory::Directory>) {
        self.with_hub(|hub| hub.set_directory(directory));
    }

    /// The hub, for reading counts and users.
    pub fn hub(&self) -> std::cell::Ref<'_, Hub<SocketId>> {
        self.hub.borrow()
    }

    /// Calls into the hub, then sets the alarm to its next deadline.
    fn with_hub<R>(&self, f: impl FnOnce(&mut Hub<SocketId>) -> R) -> R {
        let result = f(&mut self.hub.borrow_mut());
        self.log_calls();
        self.keep_state();
        self.set_alarm();
        result
    }

    /// Reads back what was kept in `dir` before a restart, and keeps what
    /// changes there from now on.
    pub fn restore_state(&self, dir: &std::path::Path) -> std::io::Result<()> {
        if let Some(text) = crate::statefile::load(dir)? {
            let kept: super::hub::Kept = serde_json::from_str(&text).map_err(|error| {
                std::io::Error::other(format!(
                    "{}: {error}",
                    crate::statefile::path(dir).display()
                ))
            })?;
            self.hub.borrow_mut().restore(kept);
        }
        *self.state_dir.borrow_mut() = Some(dir.to_owned());
        Ok(())
    }

    /// Notes a change of what is kept, and writes it.
    fn keep_state(&self) {
        if self.hub.borrow_mut().take_state_changed() {
            self.state_dirty.set(true);
            self.write_state();
        }
    }

    /// Writes what is kept to the state directory on a blocking thread,
    /// one write at a time; changes meanwhile are written after it.
    fn write_state(&self) {
        let Some(dir) = self.state_dir.borrow().clone() else {
            return;
        };
        if !self.state_dirty.get() || self.state_saving.get() {
            return;
        }
        self.state_dirty.set(false);
        self.state_saving.set(true);
        let snapshot = serde_json::to_vec(&self.hub.borrow().kept()).unwrap_or_default();
        let me = self.me.clone();
        rt::spawn(async move {
            let result = smol::unblock(move || crate::statefile::save(&dir, &snapshot)).await;
            if let Err(error) = result {
                log::warn!("state: cannot write subscriptions and missed calls: {error}");
            }
            if let Some(service) = me.upgrade() {
                service.state_saving.set(false);
                service.write_state();
                service.state_saved.notify();
            }
        })
        .detach();
    }

    /// Waits until what is kept is written, for at most `limit`.
    pub async fn settle_state(&self, limit: std::time::Duration) {
        let saved = self
            .state_saved
            .until(|| !self.state_saving.get() && !self.state_dirty.get());
        futures_lite::future::or(saved, async {
            smol::Timer::after(limit).await;
        })
        .await;
    }

    /// Writes the records of the calls that ended to the call log.
    fn log_calls(&self) {
        let records = self.hub.borrow_mut().take_records();
        if let Some(log) = &*self.call_log.borrow() {
            for record in &records {
                log.append(record);
            }
        }
    }

    /// Writes a record of every call that ends from now on to `log`.
    pub fn set_call_log(&self, log: crate::calllog::CallLog) {
        *self.call_log.borrow_mut() = Some(log);
    }

    /// Sends every device of `user` away with `reason` (the admin API);
    /// how many went.
    pub fn kick(&self, user: &str, reason: Rc<str>) -> usize {
        let (devices, effects) = self.with_hub(|hub| hub.kick(user, reason));
        if devices > 0 {
            log::info!("{} sent away by the administrator", untrusted(user));
        }
        self.execute(effects, None);
        devices
    }

    /// The call log, when there is one.
    pub fn call_log(&self) -> Option<crate::calllog::CallLog> {
        self.call_log.borrow().clone()
    }

    fn set_alarm(&self) {
        let hub = self.hub.borrow().next_deadline();
        let refresh = self.refresh.borrow().as_ref().map(Refresh::next_deadline);
        let first = match (hub, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.alarm.set(first);
    }

    /// Ends every call for a shutdown: both parties get `call_ended` with
    /// reason `server_shutdown`.
    pub fn end_all_calls(&self) {
        let effects =
            self.with_hub(|hub| hub.end_all_calls(super::protocol::reason::SERVER_SHUTDOWN));
        self.execute(effects, None);
    }

    /// Takes one event from the socket's budget. A socket that keeps
    /// sending past it, faster than its refusals are forgiven, is
    /// disconnected.
    fn within_budget(&self, socket: &Socket) -> bool {
        let now = Instant::now();
        let abusive = {
            let mut clients = self.clients.borrow_mut();
            let Some(client) = clients.get_mut(socket.id()) else {
                return false;
            };
            if client.events.take(now) {
                return true;
            }
            !client.strikes.take(now)
        };
        if abusive {
            log::warn!(
                "socket {} from {}: disconnected for flooding events",
                socket.id(),
                socket.address()
            );
            socket.disconnect_and_close();
        }
        false
    }

    /// Charges what a socket sent to its budget; an event past it is
    /// refused with `rate limit exceeded`, a repeated CONNECT dropped.
    fn admit(&self, socket: &Socket, incoming: Incoming<'_>) -> bool {
        if self.within_budget(socket) {
            return true;
        }
        if let Incoming::Event { name, ack } = incoming
            && socket.connected()
        {
            self.answer(
                &Device::Here(socket.clone()),
                shown(name),
                ack.take().map(Reply::Here),
                Err(SignalError::RateLimited),
            );
        }
        false
    }

    /// Answers an event the protocol does not have, like any refusal: the
    /// ack, or else `signaling_error`.
    fn unknown_event(&self, socket: &Socket, name: &str, ack: Option<Ack>) {
        const UNKNOWN: &str = "unknown event";
        let name = shown(name);
        log::debug!(
            "socket {}: {} refused: {UNKNOWN}",
            socket.id(),
            untrusted(name)
        );
        match ack {
            Some(ack) => ack.send(&[to_arg(&json!({ "ok": false, "error": UNKNOWN }))]),
            None => {
                let event = ServerEvent::SignalingError {
                    event: name.to_owned(),
                    error: UNKNOWN.to_owned(),
                };
                socket.emit_value(event.name(), &event);
            }
        }
    }

    /// Holds an event back while the socket's `make_call` waits for the
    /// cluster (true), or handles it now (false).
    fn wait_behind_claim(
        &self,
        socket: &Device,
        name: &'static str,
        message: Message,
        ack: Option<Reply>,
    ) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        let Some(wait) = waiting.get_mut(&socket.id()) else {
            drop(waiting);
            self.handle_event(socket, name, message, ack);
            return false;
        };
        if wait.later.len() >= MAX_WAITING_EVENTS {
            drop(waiting);
            self.answer(socket, name, ack, Err(SignalError::RateLimited));
        } else {
            wait.later.push_back((name, message, ack));
        }
        true
    }

    fn handle_event(
        &self,
        socket: &Device,
        name: &'static str,
        message: Message,
        mut ack: Option<Reply>,
    ) {
        if let Device::Here(here) = socket
            && self.relay_event(here, name, &message, &mut ack)
        {
            return;
        }
        let parsed = if message.attachments.is_empty() {
            ClientEvent::parse(name, message.arg(0), &self.limits)
        } else {
            // A payload whose SDP or candidate is a placeholder would be
            // relayed with the binary part left behind.
            Err(SignalError::InvalidPayload(
                "binary attachments are not accepted".into(),
            ))
        };
        let registers = matches!(parsed, Ok(Some(ClientEvent::RegisterUser { .. })));
        if let (Device::Here(here), Ok(Some(ClientEvent::RegisterUser { user_id }))) =
            (socket, &parsed)
            && self.needs_home(here, user_id)
        {
            self.ask_home(here, user_id, (name, message, ack));
            return;
        }
        self.handle_parsed(socket, name, parsed, registers, ack);
    }

    /// Handles a parsed event from `socket` in the hub, and answers it.
    fn handle_parsed(
        &self,
        socket: &Device,
        name: &'static str,
        parsed: Result<Option<ClientEvent>, SignalError>,
        registers: bool,
        mut ack: Option<Reply>,
    ) {
        let outcome = match parsed {
            Ok(Some(event)) => self.with_hub(|hub| hub.handle(&socket.id(), event, Instant::now())),
            Ok(None) => return,
            Err(error) => Outcome {
                result: Err(error),
                effects: Vec::new(),
            },
        };
        let mut outcome = outcome;
        if let Some(at) = outcome
            .effects
            .iter()
            .position(|effect| matches!(effect, Effect::OpenDoor { .. }))
        {
            // The ack waits for the door's command.
            let effect = outcome.effects.remove(at);
            self.execute_door_command(Some(effect), ack.take());
        }
        if let Some(at) = outcome
            .effects
            .iter()
            .position(|effect| matches!(effect, Effect::AskDoor { .. }))
            && let Effect::AskDoor { attempt } = outcome.effects.remove(at)
        {
            // The ack waits for the station's node.
            self.ask_door(attempt, ack.take());
        }
        let claiming = outcome.effects.iter().any(|effect| {
            matches!(
                effect,
                Effect::Claim { .. }
                    | Effect::ClaimMembers {
                        socket: Some(_),
                        ..
                    }
            )
        });
        if claiming {
            // Answered when the claim is: see `claimed`.
            let wait = Waiting {
                offer: None,
                ack: ack.take(),
                later: VecDeque::new(),
            };
            self.waiting.borrow_mut().insert(socket.id(), wait);
        }
        let (me, socket, result) = (self.me.clone(), socket.clone(), outcome.result);
        let reply = move || {
            if let Some(service) = me.upgrade() {
                if registers {
                    service.registered(&socket, name, ack, result);
                } else if !claiming {
                    service.answer(&socket, name, ack, result);
                }
            }
        };
        self.execute(outcome.effects, Some(Box::new(reply)));
    }

    /// Finishes `register_user`: the ICE servers, then the ack.
    fn registered(
        &self,
        socket: &Device,
        name: &str,
        ack: Option<Reply>,
        result: Result<(), SignalError>,
    ) {
        if result.is_ok() && socket.connected() {
            let key = self.pusher.borrow().public_key();
            let event = ServerEvent::PushConfig {
                vapid_public_key: key.into(),
            };
            socket.emit_value(event.name(), &event);
            self.send_ice_servers(socket);
            self.send_directory(socket);
        }
        let ok = result.is_ok();
        self.answer(socket, name, ack, result);
        if ok {
            let effects = self.with_hub(|hub| hub.welcome(&socket.id(), Instant::now()));
            self.execute(effects, None);
        }
    }

    /// Answers a client event: through its ack when it asked for one, else
    /// with `signaling_error` for a refusal no seed event reported.
    fn answer(
        &self,
        socket: &Device,
        name: &str,
        ack: Option<Reply>,
        result: Result<(), SignalError>,
    ) {
        match (result, ack) {
            (Ok(()), Some(ack)) => ack.send(to_arg(&json!({ "ok": true }))),
            (Err(error), Some(ack)) => {
                ack.send(to_arg(&json!({ "ok": false, "error": error.to_string() })))
            }
            (Err(error), None) => self.refused(socket, name, &error),
            (Ok(()), None) => {}
        }
    }

    /// Sends a newly registered client its ICE servers, with TURN
    /// credentials minted for its user.
    fn send_ice_servers(&self, socket: &Device) {
        let user = self.hub.borrow().user_of(&socket.id()).cloned();
        let Some(user) = user else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let event = ServerEvent::IceServers(self.ice.servers_for(&user, now));
        socket.emit_value(event.name(), &event);
    }

    /// Sends a newly registered client what the directory holds for it
    /// (nothing without a directory).
    fn send_directory(&self, socket: &Device) {
        let hub = self.hub.borrow();
        let directory = hub.directory();
        let Some(user) = hub.user_of(&socket.id()) else {
            return;
        };
        if directory.is_empty() {
            return;
        }
        let (groups, users) = directory.callable_by(user);
        let doors = directory
            .stations()
            .into_iter()
            .map(|(name, door)| (name.clone(), door.doors.clone()))
            .collect();
        let event = ServerEvent::Directory {
            doors,
            groups,
            users,
        };
        drop(hub);
        socket.emit_value(event.name(), &event);
    }

    /// Tells a client its event was refused, unless a seed event already did.
    fn refused(&self, socket: &Device, name: &str, error: &SignalError) {
        if error.reported_by_seed_event() {
            return;
        }
        log::debug!(
            "socket {}: {} refused: {error}",
            socket.id(),
            untrusted(name)
        );
        let event = ServerEvent::SignalingError {
            event: name.to_owned(),
            error: error.to_string(),
        };
        socket.emit_value(event.name(), &event);
    }

    /// Carries out the hub's effects in order, then `then`. At a barrier
    /// the rest waits until the other nodes heard what came before. No
    /// borrow is held while a socket acts, since a disconnect comes
    /// straight back through the hooks.
    fn execute(&self, effects: Vec<Effect<SocketId>>, then: Option<Box<dyn FnOnce()>>) {
        let mut effects = effects.into_iter();
        while let Some(effect) = effects.next() {
            match effect {
                Effect::ToSocket { socket, event } => {
                    if let Some(socket) = self.device(&socket) {
                        socket.emit_value(event.name(), &event);
                    }
                }
                Effect::Disconnect { socket: id } => match self.device(&id) {
                    Some(Device::Here(socket)) => {
                        socket.disconnect_and_close();
                        if !socket.connected() {
                            // A socket that was away leaves no hook behind.
                            self.clients.borrow_mut().remove(&id);
                        }
                    }
                    Some(device @ Device::There(_)) => {
                        self.hosted.borrow_mut().remove(&id);
                        device.disconnect_and_close();
                    }
                    None => {}
                },
                Effect::Joined { user, socket } => {
                    // Logged here, where the client's address is known.
                    match self.device(&socket) {
                        Some(socket) => {
                            log::info!("{} registered from {}", untrusted(&user), socket.address())
                        }
                        None => log::info!("{} registered", untrusted(&user)),
                    }
                    if let Some(nodes) = &self.nodes {
                        nodes.joined(super::hub::Registration { user, socket });
                    }
                }
                Effect::Barrier => {
                    if let Some(nodes) = &self.nodes {
                        let rest: Vec<Effect<SocketId>> = effects.collect();
                        let me = self.me.clone();
                        nodes.after(Box::new(move || {
                            if let Some(service) = me.upgrade() {
                                service.execute(rest, then);
                            }
                        }));
                        return;
                    }
                }
                // Several nodes only; one node has every party here.
                Effect::ToPeer { message, .. } => {
                    if let Some(nodes) = &self.nodes {
                        nodes.route(&message);
                    }
                }
                Effect::Left { user } => {
                    if let Some(nodes) = &self.nodes {
                        nodes.left(user);
                    }
                }
                Effect::CallOver {
                    caller,
                    callee,
                    member,
                } => {
                    if let Some(nodes) = &self.nodes {
                        nodes.release(&caller, &callee, member.as_ref());
                    }
                }
                effect @ Effect::OpenDoor { .. } => self.execute_door_command(Some(effect), None),
                Effect::AskDoor { attempt } => self.ask_door(attempt, None),
                Effect::Push { user, message } => match &self.nodes {
                    Some(nodes) => nodes.push(user, message),
                    None => {
                        let subscriptions = self.hub.borrow().subscriptions_of(&user).to_vec();
                        self.push(&user, &message, subscriptions);
                    }
                },
                Effect::Shared(shared) => {
                    if let Some(nodes) = &self.nodes {
                        nodes.shared(shared);
                    }
                }
                Effect::ClaimMembers { socket, claim } => {
                    if let Some(nodes) = &self.nodes {
                        nodes.claim_members(socket, claim);
                    }
                }
                Effect::Claim {
                    socket,
                    caller,
                    callee,
                    offer,
                } => {
                    if let Some(wait) = self.waiting.borrow_mut().get_mut(&socket) {
                        wait.offer = Some(offer);
                    }
                    if let Some(nodes) = &self.nodes {
                        nodes.claim(socket, caller, callee);
                    }
                }
            }
        }
        if let Some(then) = then {
            then();
        }
    }

    /// The cluster answered a claim: ring, or tell the caller why not; then
    /// the events the socket sent meanwhile.
    fn claimed(
        &self,
        socket_id: Rc<str>,
        caller: Rc<str>,
        callee: Rc<str>,
        claim: super::hub::Claim,
    ) {
        let wait = self.waiting.borrow_mut().remove(&socket_id);
        let Some(Waiting {
            offer: Some(offer),
            ack,
            later,
        }) = wait
        else {
            // The caller left meanwhile: give the claims back.
            if claim.claimed()
                && let Some(nodes) = &self.nodes
            {
                nodes.release(&caller, &callee, None);
            }
            return;
        };
        let outcome =
            self.with_hub(|hub| hub.claimed(caller, &callee, offer, claim, Instant::now()));
        self.execute(outcome.effects, None);
        self.go_on_after_claim(&socket_id, ack, later, outcome.result);
    }

    /// The cluster answered a round of member claims: the hub goes on;
    /// when a `make_call` waited for it, its ack, then the events its
    /// socket sent meanwhile.
    fn members_claimed(
        &self,
        socket_id: Option<Rc<str>>,
        claim: MemberClaim,
        answer: Result<Vec<super::hub::Claim>, super::hub::Claim>,
    ) {
        let wait = socket_id
            .as_ref()
            .and_then(|id| self.waiting.borrow_mut().remove(id));
        let outcome = self.with_hub(|hub| hub.members_claimed(claim, answer, Instant::now()));
        self.execute(outcome.effects, None);
        if let (Some(socket_id), Some(wait)) = (socket_id, wait) {
            self.go_on_after_claim(&socket_id, wait.ack, wait.later, outcome.result);
        }
    }

    /// A `make_call` that waited for the cluster is answered; the events
    /// its socket sent meanwhile are handled in order.
    fn go_on_after_claim(
        &self,
        socket_id: &Rc<str>,
        ack: Option<Reply>,
        later: VecDeque<Later>,
        result: Result<(), SignalError>,
    ) {
        let Some(socket) = self.device(socket_id) else {
            return;
        };
        self.answer(&socket, "make_call", ack, result);
        self.replay(&socket, later);
    }

    /// Handles in order the events `socket` sent while it waited for the
    /// cluster.
    fn replay(&self, socket: &Device, mut later: VecDeque<Later>) {
        let socket_id = &socket.id();
        while let Some((name, message, ack)) = later.pop_front() {
            if self.wait_behind_claim(socket, name, message, ack) {
                // Another make_call now waits: the rest queue behind it.
                if let Some(wait) = self.waiting.borrow_mut().get_mut(socket_id) {
                    wait.later.extend(later);
                }
                return;
            }
        }
    }

    /// Runs a door station's command (an [`Effect::OpenDoor`]) and answers
    /// `ack` with its result; while one runs for that door, waits for it.
    fn execute_door_command(&self, effect: Option<Effect<SocketId>>, ack: Option<Reply>) {
        let Some(Effect::OpenDoor {
            attempt,
            command,
            timeout,
            ..
        }) = effect
        else {
            return;
        };
        if !self.door_commands.wait(attempt.clone(), ack) {
            return;
        }
        let me = self.me.clone();
        rt::spawn(async move {
            let result = door_commands::run(&command, &attempt, timeout).await;
            let Some(service) = me.upgrade() else {
                return;
            };
            for (attempt, ack) in service.door_commands.finished(&attempt) {
                service.door_done(attempt, &result, ack);
            }
        })
        .detach();
    }

    /// Several nodes: `attempt`'s station is on another node, which opens
    /// the door and answers ([`PeerMessage::DoorAnswer`]) for `ack`; when
    /// no node took the message, the station is offline.
    fn ask_door(&self, attempt: DoorAttempt, ack: Option<Reply>) {
        let Some(nodes) = &self.nodes else {
            return;
        };
        let message = PeerMessage::OpenDoor {
            from: attempt.by.clone(),
            to: attempt.station.clone(),
            door: attempt.door.clone(),
            in_call: attempt.call.is_some(),
        };
        let delivered = nodes.deliver(&message);
        let number = self.door_asks.ask(&attempt, ack);
        let patience = self
            .hub
            .borrow()
            .directory()
            .door_of(&attempt.station, &attempt.door)
            .map_or(door_commands::ASK_GRACE, |spec| {
                spec.open_timeout + door_commands::ASK_GRACE
            });
        let me = self.me.clone();
        rt::spawn(async move {
            let refusal = match delivered.await {
                Ok(true) => {
                    smol::Timer::after(patience).await;
                    let waiting = me
                        .upgrade()
                        .and_then(|s| s.door_asks.give_up(&attempt, number));
                    if let Some(Some(ack)) = waiting {
                        let error = "the door station's node did not answer";
                        ack.send(to_arg(&json!({ "ok": false, "error": error })));
                    }
                    return;
                }
                Ok(false) => SignalError::DoorOffline,
                Err(_) => SignalError::Unavailable,
            };
            let Some(service) = me.upgrade() else {
                return;
            };
            let Some(ack) = service.door_asks.give_up(&attempt, number) else {
                return;
            };
            service.door_done(attempt, &DoorResult::Refused(refusal), ack);
        })
        .detach();
    }

    /// An `open_door` decided here ended with `result`: the hub audits and
    /// counts it (and what follows), and `ack` hears it.
    fn door_done(&self, attempt: DoorAttempt, result: &DoorResult, ack: Option<Reply>) {
        let effects = self.with_hub(|hub| {
            let mut effects = Vec::new();
            hub.door_done(attempt, result.clone(), Instant::now(), &mut effects);
            effects
        });
        self.execute(effects, None);
        if let Some(ack) = ack {
            ack.send(to_arg(&result.ack()));
        }
    }

    /// Handles what the other nodes brought.
    pub(crate) fn inbound(&self, inbound: Inbound) {
        let now = Instant::now();
        match inbound {
            Inbound::Message(PeerMessage::Kick {
                user,
                socket: Some(socket),
            }) if self.hub.borrow().socket_of(&user) != Some(&socket) => {
                // For a device this user has since replaced here: stale.
                log::debug!("ignored a stale kick for {}", untrusted(&user));
            }
            Inbound::Message(PeerMessage::DoorAnswer {
                to,
                station,
                door,
                ack,
            }) => {
                let opened = ack.get("ok") == Some(&serde_json::Value::Bool(true));
                let effects =
                    self.with_hub(|hub| hub.door_answered(&to, &station, &door, opened, now));
                self.execute(effects, None);
                if let Some(Some(reply)) = self.door_asks.answered(&to, &station, &door) {
                    reply.send(to_arg(&ack));
                }
            }
            Inbound::Message(message) => {
                let effects = self.with_hub(|hub| hub.peer(message, now));
                self.execute(effects, None);
            }
            Inbound::Claimed {
                socket,
                caller,
                callee,
                claim,
            } => self.claimed(socket, caller, callee, claim),
            Inbound::MembersClaimed {
                socket,
                claim,
                answer,
            } => self.members_claimed(socket, claim, answer),
            Inbound::Lost(user) => {
                let effects = self.with_hub(|hub| hub.peer_lost(&user, now));
                if !effects.is_empty() {
                    log::info!("{} is gone from the cluster", untrusted(&user));
                }
                self.execute(effects, None);
            }
            Inbound::Relay(relay) => self.relay(relay),
            Inbound::Home { socket, user, node } => self.homed(&socket, &user, node),
            Inbound::HomeGone(user) => self.home_gone(&user),
            Inbound::MissedCalls {
                user,
                socket,
                calls,
            } => {
                let still = self.hub.borrow().user_of(&socket) == Some(&user);
                if still && !calls.is_empty() {
                    let event = ServerEvent::MissedCalls { calls };
                    self.execute(vec![Effect::ToSocket { socket, event }], None);
                }
            }
            Inbound::Push {
                user,
                message,
                subscriptions,
            } => self.push(&user, &message, subscriptions),
            Inbound::NodeGone(node) => self.node_gone(&node),
            Inbound::Reconnected => {
                if let (Some(nodes), Some(refresh)) = (&self.nodes, &mut *self.refresh.borrow_mut())
                {
                    refresh.restore_until(now + nodes.ttl());
                }
                self.hold(true);
            }
        }
    }

    /// Refreshes this node's users and claims in Redis; `restore`: Redis
    /// came back lately, set again whatever it lost.
    fn hold(&self, restore: bool) {
        if let Some(nodes) = &self.nodes {
            let hub = self.hub.borrow();
            nodes.hold(&hub.registrations(), &hub.calls_here(), restore);
        }
    }

    /// Signs pushes with `key` from now on (the one kept in the state
    /// directory or given with `--vapid-key-file`, read at start).
    pub fn set_vapid_key(
        &self,
        key: crate::push::crypto::VapidKey,
        settings: &super::PushSettings,
    ) {
        let policy = self.pusher.borrow().policy().clone();
        *self.pusher.borrow_mut() = pusher(self.me.clone(), Some(key), settings, policy);
    }

    /// The VAPID public key clients subscribe with.
    pub fn vapid_public_key(&self) -> String {
        self.pusher.borrow().public_key()
    }

    /// What became of pushes since start.
    pub fn push_totals(&self) -> crate::push::PushTotals {
        self.pusher.borrow().totals()
    }

    /// Pushes `message` to each of `user`'s `subscriptions`.
    fn push(&self, user: &Rc<str>, message: &PushMessage, subscriptions: Vec<Subscription>) {
        let pusher = self.pusher.borrow().clone();
        for subscription in subscriptions {
            pusher.push(user.clone(), subscription, message, self.call_timeout);
        }
    }

    /// A push service answered: a subscription it says is gone is forgotten.
    fn pushed(&self, delivered: Delivered) {
        if let Delivered::Gone { user, endpoint } = delivered {
            let effects = self.with_hub(|hub| {
                let mut effects = Vec::new();
                hub.remove_subscription(&user, &endpoint, &mut effects);
                effects
            });
            self.execute(effects, None);
        }
    }

    fn socket(&self, id: &str) -> Option<Socket> {
        self.clients.borrow().get(id).map(|c| c.socket.clone())
    }

    /// The device `id` names in the hub: a socket here, or a relayed one.
    fn device(&self, id: &str) -> Option<Device> {
        match &self.nodes {
            Some(nodes) if id.starts_with('@') => Remote::new(id, nodes.clone()).map(Device::There),
            _ => self.socket(id).map(Device::Here),
        }
    }
}

impl Wake for Signaling {
    /// Rings out the calls whose time is up, sweeps, and keeps this node's
    /// presence and claims alive in Redis and its peers checked.
    fn wake(self: Rc<Self>, now: Instant) {
        let (effects, swept, lapsed) = {
            let mut hub = self.hub.borrow_mut();
            let before = hub.grace_totals().lapsed;
            let effects = hub.expire(now);
            (
                effects,
                hub.take_swept(),
                hub.grace_totals().lapsed - before,
            )
        };
        self.log_calls();
        self.keep_state();
        self.execute(effects, None);
        // Thousands of names gone (swept, or their graces ran out, one by
        // one after a burst of lost connections): their memory goes back.
        let lapsed = self.lapsed_since_give_back.get() + lapsed;
        let burst_over = lapsed >= 256 && self.hub.borrow().held_count() == 0;
        if lapsed > 0 {
            crate::id::shrink_when_sparse(&mut self.clients.borrow_mut());
            crate::id::shrink_when_sparse(&mut self.waiting.borrow_mut());
        }
        if swept >= SWEPT_ENOUGH_TO_GIVE_BACK
            || lapsed >= SWEPT_ENOUGH_TO_GIVE_BACK as u64
            || burst_over
        {
            rt::give_back_memory();
            self.lapsed_since_give_back.set(0);
        } else {
            self.lapsed_since_give_back.set(lapsed);
        }
        let due = self.refresh.borrow_mut().as_mut().map(|r| r.due(now));
        if let (Some(due), Some(nodes)) = (due, &self.nodes) {
            if let Some(restore) = due.hold {
                self.hold(restore);
            }
            if due.check {
                nodes.check(self.hub.borrow().remote_peers());
                nodes.watch(self.relayed.borrow().homes(), self.hosting_nodes());
            }
        }
        self.set_alarm();
    }
}

/// A pusher that tells `service` what became of each push.
fn pusher(
    service: Weak<Signaling>,
    key: Option<crate::push::crypto::VapidKey>,
    settings: &super::PushSettings,
    policy: Policy,
) -> Pusher {
    Pusher::new(key, settings.contact.clone(), policy, move |delivered| {
        if let Some(service) = service.upgrade() {
            service.pushed(delivered);
        }
    })
}

/// An event name as errors and logs repeat it: at most 64 bytes of it.
fn shown(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Checks the token in a CONNECT auth payload; the user it names.
fn authenticate(secret: &[u8], auth: Option<&RawValue>) -> Result<String, ConnectError> {
    #[derive(serde::Deserialize)]
    struct Auth {
        token: String,
    }
    let token = auth
        .and_then(|raw| serde_json::from_str::<Auth>(raw.get()).ok())
        .ok_or_else(|| ConnectError::new("authentication required: connect with auth {token}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::auth::verify(secret, &token.token, now)
        .map_err(|error| ConnectError::new(format!("authentication failed: {error}")))
}

/// Carries what the other nodes bring back to the service.
async fn hear_the_others(service: Weak<Signaling>, inbound: Receiver<Inbound>) {
    while let Ok(item) = inbound.recv().await {
        let Some(service) = service.upgrade() else {
            return;
        };
        service.inbound(item);
    }
}

#[path = "service_relay.rs"]
mod relay;

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
