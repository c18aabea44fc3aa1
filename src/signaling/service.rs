//! The I/O side of signaling: Socket.IO events in, the hub's effects out,
//! and one timer for the hub's deadlines.

use crate::id::IdMap;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use serde_json::json;
use smol::Timer;
use smol::channel::{Receiver, Sender, bounded};

use super::cluster::{Claim, Cluster, Inbound};
use super::hub::{Effect, Hub, Outcome};
use super::ice::IceConfig;
use super::limits::Limits;
use super::protocol::{CLIENT_EVENTS, ClientEvent, ServerEvent, SignalError};
use crate::logging::untrusted;
use crate::rate::Bucket;
use crate::rt;
use crate::socketio::{self, Ack, ConnectError, Incoming, Message, Socket, to_arg};
use serde_json::value::RawValue;

/// A connection, as the hub knows it: the socket id.
type Conn = Rc<str>;

/// The signaling service on one Socket.IO namespace.
pub struct Signaling {
    me: Weak<Signaling>,
    hub: RefCell<Hub<Conn>>,
    sockets: RefCell<IdMap<Conn, Client>>,
    wake: Sender<()>,
    ice: IceConfig,
    limits: Limits,
    /// Several nodes: the link to the others.
    cluster: Option<Rc<Cluster>>,
    /// Connections whose `make_call` waits for the cluster's claim, with
    /// what they sent meanwhile (handled in order once the claim is in).
    waiting: RefCell<IdMap<Conn, Waiting>>,
    /// Until when refreshes set lost claims again (after Redis came back).
    restore_until: Cell<Option<Instant>>,
}

/// A `make_call` waiting for its claim, and the events that came after it.
struct Waiting {
    offer: Box<RawValue>,
    ack: Option<Ack>,
    later: VecDeque<(&'static str, Message, Option<Ack>)>,
}

/// The most events a socket may send while its `make_call` waits for the
/// cluster (a few ICE candidates, typically).
const MAX_WAITING_EVENTS: usize = 256;

/// How many bucket places a sweep must free for the memory to be handed
/// back to the system (a few hundred KiB).
const SWEPT_ENOUGH_TO_GIVE_BACK: usize = 4096;

/// The link to the other nodes, as [`Cluster::connect`] made it.
pub type ClusterLink = (Cluster, Receiver<Inbound>);

/// A connected socket and its event budget.
struct Client {
    socket: Socket,
    events: Bucket,
    /// Events refused in a row for exceeding the budget.
    strikes: u32,
}

impl Signaling {
    /// Installs the service on `io`'s root namespace and starts its timer.
    /// With an auth secret in `config`, a client must connect with a valid
    /// token (`auth: {token}`) and may register only the name inside it.
    /// With a cluster link, the hub's users and calls are shared with the
    /// other nodes through it.
    pub fn install(
        io: &socketio::Server,
        settings: &super::Settings,
        cluster: Option<ClusterLink>,
    ) -> Rc<Signaling> {
        let (wake, woken) = bounded(1);
        let limits = settings.limits.clone();
        let (cluster, inbound) = match cluster {
            Some((cluster, inbound)) => (Some(Rc::new(cluster)), Some(inbound)),
            None => (None, None),
        };
        let service = Rc::new_cyclic(|me| Signaling {
            me: me.clone(),
            hub: RefCell::new(Hub::new(settings.call_timeout, &limits)),
            sockets: RefCell::new(IdMap::default()),
            wake,
            ice: settings.ice.clone(),
            limits,
            cluster,
            waiting: RefCell::new(IdMap::default()),
            restore_until: Cell::new(None),
        });
        let auth_secret = settings.auth_secret.clone();
        let namespace = io.of("/");
        let weak = Rc::downgrade(&service);
        namespace.on_connect(move |socket, auth| {
            let Some(service) = weak.upgrade() else {
                return Ok(());
            };
            if let Some(secret) = &auth_secret {
                let user = authenticate(secret, auth)?;
                service
                    .hub
                    .borrow_mut()
                    .authenticate(&socket.id_rc(), &user);
            }
            let limits = &service.limits;
            let client = Client {
                socket: socket.clone(),
                events: Bucket::new(limits.event_rate, limits.event_burst, Instant::now()),
                strikes: 0,
            };
            service.sockets.borrow_mut().insert(socket.id_rc(), client);
            Ok(())
        });
        let weak = Rc::downgrade(&service);
        namespace.on_disconnect(move |socket, _reason| {
            if let Some(service) = weak.upgrade() {
                service.sockets.borrow_mut().remove(socket.id());
                service.waiting.borrow_mut().remove(socket.id());
                let effects = service
                    .hub
                    .borrow_mut()
                    .disconnected(&socket.id_rc(), Instant::now());
                service.execute(effects);
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
                    service.wait_behind_claim(socket, name, message, ack);
                }
            });
        }
        let weak = Rc::downgrade(&service);
        namespace.on_fallback(move |socket, name, _, ack| {
            if let Some(service) = weak.upgrade() {
                service.unknown_event(socket, name, ack);
            }
        });
        rt::spawn(run_timer(Rc::downgrade(&service), woken)).detach();
        if let Some(inbound) = inbound {
            rt::spawn(run_cluster(Rc::downgrade(&service), inbound)).detach();
            rt::spawn(keep_cluster_current(Rc::downgrade(&service))).detach();
        }
        service
    }

    /// The link to the other nodes, when there are some.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_deref()
    }

    /// The hub, for reading counts and users.
    pub fn hub(&self) -> std::cell::Ref<'_, Hub<Conn>> {
        self.hub.borrow()
    }

    /// Ends every call for a shutdown: both parties get `call_ended` with
    /// reason `server_shutdown`.
    pub fn end_all_calls(&self) {
        let effects = self
            .hub
            .borrow_mut()
            .end_all_calls(super::protocol::reason::SERVER_SHUTDOWN);
        self.execute(effects);
    }

    /// Takes one event from the socket's budget. A socket that keeps
    /// sending past it is disconnected.
    fn within_budget(&self, socket: &Socket) -> bool {
        let now = Instant::now();
        let abusive = {
            let mut sockets = self.sockets.borrow_mut();
            let Some(client) = sockets.get_mut(socket.id()) else {
                return false;
            };
            if client.events.take(now) {
                client.strikes = 0;
                return true;
            }
            client.strikes += 1;
            client.strikes >= self.limits.event_strikes
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
                socket,
                shown(name),
                ack.take(),
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
        socket: &Socket,
        name: &'static str,
        message: Message,
        ack: Option<Ack>,
    ) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        let Some(wait) = waiting.get_mut(socket.id()) else {
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
        socket: &Socket,
        name: &'static str,
        message: Message,
        ack: Option<Ack>,
    ) {
        let mut registered = false;
        let parsed = if message.attachments.is_empty() {
            ClientEvent::parse(name, message.arg(0), &self.limits)
        } else {
            // A payload whose SDP or candidate is a placeholder would be
            // relayed with the binary part left behind.
            Err(SignalError::InvalidPayload(
                "binary attachments are not accepted".into(),
            ))
        };
        let outcome = match parsed {
            Ok(Some(ClientEvent::MakeCall { to, offer })) if self.cluster.is_some() => {
                self.begin_call(socket, to, offer, ack);
                return;
            }
            Ok(Some(event)) => {
                let rings = matches!(event, ClientEvent::MakeCall { .. });
                registered = matches!(event, ClientEvent::RegisterUser { .. });
                let outcome = self
                    .hub
                    .borrow_mut()
                    .handle(&socket.id_rc(), event, Instant::now());
                if rings {
                    // A ring timeout, or a call-rate bucket to sweep: let
                    // the timer look again.
                    let _ = self.wake.try_send(());
                }
                outcome
            }
            Ok(None) => return,
            Err(error) => super::hub::Outcome {
                result: Err(error),
                effects: Vec::new(),
            },
        };
        let mut effects = outcome.effects;
        let joined = effects
            .iter()
            .position(|effect| matches!(effect, Effect::Joined { .. }));
        if let (Some(cluster), Some(joined)) = (&self.cluster, joined) {
            // The reply waits until Redis knows where the user is, so that
            // whoever they tell can call them at once, from any node.
            let reply = effects.split_off(joined + 1);
            self.execute(effects);
            let (me, socket) = (self.me.clone(), socket.clone());
            cluster.after(move || {
                if let Some(service) = me.upgrade() {
                    service.execute(reply);
                    service.registered(&socket, name, ack, outcome.result);
                }
            });
            return;
        }
        self.execute(effects);
        if registered {
            self.registered(socket, name, ack, outcome.result);
        } else {
            self.answer(socket, name, ack, outcome.result);
        }
    }

    /// Finishes `register_user`: the ICE servers, then the ack.
    fn registered(
        &self,
        socket: &Socket,
        name: &str,
        ack: Option<Ack>,
        result: Result<(), SignalError>,
    ) {
        if result.is_ok() && socket.connected() {
            self.send_ice_servers(socket);
        }
        self.answer(socket, name, ack, result);
    }

    /// Answers a client event: through its ack when it asked for one, else
    /// with `signaling_error` for a refusal no seed event reported.
    fn answer(
        &self,
        socket: &Socket,
        name: &str,
        ack: Option<Ack>,
        result: Result<(), SignalError>,
    ) {
        match (result, ack) {
            (Ok(()), Some(ack)) => ack.send(&[to_arg(&json!({ "ok": true }))]),
            (Err(error), Some(ack)) => {
                ack.send(&[to_arg(&json!({ "ok": false, "error": error.to_string() }))])
            }
            (Err(error), None) => self.refused(socket, name, &error),
            (Ok(()), None) => {}
        }
    }

    /// Sends a newly registered client its ICE servers, with TURN
    /// credentials minted for its user.
    fn send_ice_servers(&self, socket: &Socket) {
        let user = self.hub.borrow().user_of(&socket.id_rc()).cloned();
        let Some(user) = user else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let event = ServerEvent::IceServers(self.ice.servers_for(&user, now));
        socket.emit_value(event.name(), &event);
    }

    /// Tells a client its event was refused, unless a seed event already did.
    fn refused(&self, socket: &Socket, name: &str, error: &SignalError) {
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

    /// Carries out the hub's effects. No borrow is held while a socket acts,
    /// since a disconnect comes straight back through the hooks.
    fn execute(&self, effects: Vec<Effect<Conn>>) {
        for effect in effects {
            match effect {
                Effect::ToConn { conn, event } => {
                    if let Some(socket) = self.socket(&conn) {
                        socket.emit_value(event.name(), &event);
                    }
                }
                Effect::Disconnect { conn } => {
                    if let Some(socket) = self.socket(&conn) {
                        socket.disconnect_and_close();
                    }
                }
                // Several nodes only; one node has every party here.
                Effect::ToPeer { message, .. } => {
                    if let Some(cluster) = &self.cluster {
                        cluster.route(&message);
                    }
                }
                Effect::Joined { user, conn } => {
                    // Logged here, where the client's address is known.
                    match self.socket(&conn) {
                        Some(socket) => {
                            log::info!("{} registered from {}", untrusted(&user), socket.address())
                        }
                        None => log::info!("{} registered", untrusted(&user)),
                    }
                    if let Some(cluster) = &self.cluster {
                        cluster.joined(user, conn);
                    }
                }
                Effect::Left { user } => {
                    if let Some(cluster) = &self.cluster {
                        cluster.left(user);
                    }
                }
                Effect::CallOver { caller, callee } => {
                    if let Some(cluster) = &self.cluster {
                        cluster.release(&caller, &callee);
                    }
                }
            }
        }
    }

    /// `make_call` on several nodes: the checks this node can make, then
    /// the claim on both users in Redis; the socket's next events wait.
    fn begin_call(&self, socket: &Socket, to: String, offer: Box<RawValue>, ack: Option<Ack>) {
        let conn = socket.id_rc();
        let begun = self.hub.borrow_mut().begin_call(&conn, &to, Instant::now());
        // A call-rate bucket to sweep: let the timer look again.
        let _ = self.wake.try_send(());
        match (begun, &self.cluster) {
            (Ok(caller), Some(cluster)) => {
                let wait = Waiting {
                    offer,
                    ack,
                    later: VecDeque::new(),
                };
                self.waiting.borrow_mut().insert(conn.clone(), wait);
                cluster.claim(conn, caller, to.into());
            }
            (Ok(_), None) => {}
            (Err(outcome), _) => {
                self.execute(outcome.effects);
                self.answer(socket, "make_call", ack, outcome.result);
            }
        }
    }

    /// The cluster answered a claim: ring, or tell the caller why not; then
    /// the events the socket sent meanwhile.
    fn claimed(&self, conn: Rc<str>, caller: Rc<str>, callee: Rc<str>, claim: Claim) {
        let wait = self.waiting.borrow_mut().remove(&conn);
        let Some(wait) = wait else {
            // The caller left meanwhile: give the claims back.
            if claim == Claim::Granted
                && let Some(cluster) = &self.cluster
            {
                cluster.release(&caller, &callee);
            }
            return;
        };
        let now = Instant::now();
        let outcome: Outcome<Conn> = {
            let mut hub = self.hub.borrow_mut();
            match claim {
                Claim::Granted => hub.call_claimed(caller, &callee, wait.offer, now),
                Claim::Offline => hub.call_refused(caller, &callee, SignalError::UserOffline),
                Claim::Busy => hub.call_refused(caller, &callee, SignalError::UserBusy),
                Claim::CallerBusy => hub.call_refused(caller, &callee, SignalError::AlreadyInCall),
                Claim::Unavailable => hub.call_refused(caller, &callee, SignalError::Unavailable),
            }
        };
        if outcome.result.is_ok() {
            let _ = self.wake.try_send(());
        }
        self.execute(outcome.effects);
        let Some(socket) = self.socket(&conn) else {
            return;
        };
        self.answer(&socket, "make_call", wait.ack, outcome.result);
        let mut later = wait.later;
        while let Some((name, message, ack)) = later.pop_front() {
            if self.wait_behind_claim(&socket, name, message, ack) {
                // Another make_call now waits: the rest queue behind it.
                if let Some(wait) = self.waiting.borrow_mut().get_mut(&conn) {
                    wait.later.extend(later);
                }
                return;
            }
        }
    }

    /// Handles what the cluster brought.
    fn inbound(&self, inbound: Inbound) {
        let now = Instant::now();
        match inbound {
            Inbound::Message(super::peer::PeerMessage::Kick {
                user,
                conn: Some(conn),
            }) if self.hub.borrow().conn_of(&user) != Some(&conn) => {
                // For a device this user has since replaced here: stale.
                log::debug!("ignored a stale kick for {}", untrusted(&user));
            }
            Inbound::Message(message) => {
                let rings = matches!(message, super::peer::PeerMessage::Ring { .. });
                let effects = self.hub.borrow_mut().peer(message, now);
                if rings {
                    let _ = self.wake.try_send(());
                }
                self.execute(effects);
            }
            Inbound::Claimed {
                conn,
                caller,
                callee,
                claim,
            } => self.claimed(conn, caller, callee, claim),
            Inbound::Lost(user) => {
                let effects = self.hub.borrow_mut().peer_lost(&user, now);
                if !effects.is_empty() {
                    log::info!("{} is gone from the cluster", untrusted(&user));
                }
                self.execute(effects);
            }
            Inbound::Reconnected => {
                if let Some(cluster) = &self.cluster {
                    self.restore_until.set(Some(now + cluster.ttl()));
                }
                self.hold(true);
            }
        }
    }

    /// Refreshes this node's users and claims in Redis; `restore`: Redis
    /// just came back, set again whatever it lost.
    fn hold(&self, restore: bool) {
        if let Some(cluster) = &self.cluster {
            let hub = self.hub.borrow();
            cluster.hold(&hub.registrations(), &hub.calls_here(), restore);
        }
    }

    fn socket(&self, conn: &str) -> Option<Socket> {
        self.sockets.borrow().get(conn).map(|c| c.socket.clone())
    }
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

/// Sleeps until the hub's next deadline (or a wake-up), then expires what is due.
async fn run_timer(service: Weak<Signaling>, woken: Receiver<()>) {
    loop {
        let deadline = match service.upgrade() {
            Some(service) => service.hub.borrow().next_deadline(),
            None => return,
        };
        let wake = async {
            let _ = woken.recv().await;
        };
        match deadline {
            Some(deadline) => {
                future::or(
                    async {
                        Timer::at(deadline).await;
                    },
                    wake,
                )
                .await
            }
            None => wake.await,
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        let (effects, swept) = {
            let mut hub = service.hub.borrow_mut();
            (hub.expire(Instant::now()), hub.take_swept())
        };
        service.execute(effects);
        // Thousands of names gone at once: their memory goes back too.
        if swept >= SWEPT_ENOUGH_TO_GIVE_BACK {
            crate::rt::give_back_memory();
        }
    }
}

/// Carries what the cluster brings back to the service.
async fn run_cluster(service: Weak<Signaling>, inbound: Receiver<Inbound>) {
    while let Ok(item) = inbound.recv().await {
        let Some(service) = service.upgrade() else {
            return;
        };
        service.inbound(item);
    }
}

/// Keeps this node's presence and claims alive in Redis, and checks that
/// the other parties of its calls are still somewhere.
async fn keep_cluster_current(service: Weak<Signaling>) {
    let period = match service.upgrade().and_then(|s| s.cluster.clone()) {
        Some(cluster) => cluster.refresh_period(),
        None => return,
    };
    let check_every = Duration::from_secs(1).min(period);
    let mut next_hold = Instant::now() + period;
    loop {
        Timer::after(check_every).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let Some(cluster) = &service.cluster else {
            return;
        };
        let now = Instant::now();
        if now >= next_hold {
            next_hold += period;
            // Claims are set again, not only refreshed, for a while after
            // Redis came back, in case the first restore was lost.
            let restore = service.restore_until.get().is_some_and(|until| now < until);
            service.hold(restore);
        }
        let peers = service.hub.borrow().remote_peers();
        cluster.check(peers);
    }
}
