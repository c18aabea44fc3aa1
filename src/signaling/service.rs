//! The I/O side of signaling: Socket.IO events in, the hub's effects out,
//! and one timer for the hub's deadlines.

use crate::id::IdMap;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use serde_json::json;
use smol::Timer;
use smol::channel::{Receiver, Sender, bounded};

use super::hub::{Effect, Hub};
use super::ice::IceConfig;
use super::limits::{Bucket, Limits};
use super::protocol::{CLIENT_EVENTS, ClientEvent, ServerEvent, SignalError};
use crate::config::Config;
use crate::rt;
use crate::socketio::{self, Ack, ConnectError, Message, Socket, to_arg};
use serde_json::value::RawValue;

/// A connection, as the hub knows it: the socket id.
type Conn = Rc<str>;

/// The signaling service on one Socket.IO namespace.
pub struct Signaling {
    hub: RefCell<Hub<Conn>>,
    sockets: RefCell<IdMap<Conn, Client>>,
    wake: Sender<()>,
    ice: IceConfig,
    limits: Limits,
}

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
    pub fn install(io: &socketio::Server, config: &Config) -> Rc<Signaling> {
        let (wake, woken) = bounded(1);
        let limits = config.signaling.clone();
        let service = Rc::new(Signaling {
            hub: RefCell::new(Hub::new(config.call_timeout, &limits)),
            sockets: RefCell::new(IdMap::default()),
            wake,
            ice: config.ice.clone(),
            limits,
        });
        let auth_secret = config.auth_secret.clone();
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
                let effects = service
                    .hub
                    .borrow_mut()
                    .disconnected(&socket.id_rc(), Instant::now());
                service.execute(effects);
            }
        });
        for name in CLIENT_EVENTS {
            let weak = Rc::downgrade(&service);
            namespace.on(name, move |socket, message, ack| {
                if let Some(service) = weak.upgrade() {
                    service.on_event(socket, name, message, ack);
                }
            });
        }
        rt::spawn(run_timer(Rc::downgrade(&service), woken)).detach();
        service
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
            log::warn!("socket {}: disconnected for flooding events", socket.id());
            socket.disconnect_and_close();
        }
        false
    }

    fn on_event(&self, socket: &Socket, name: &'static str, message: Message, ack: Option<Ack>) {
        if !self.within_budget(socket) {
            if socket.connected() {
                self.answer(socket, name, ack, Err(SignalError::RateLimited));
            }
            return;
        }
        let mut registered = false;
        let outcome = match ClientEvent::parse(name, message.arg(0), &self.limits) {
            Ok(Some(event)) => {
                let rings = matches!(event, ClientEvent::MakeCall { .. });
                registered = matches!(event, ClientEvent::RegisterUser { .. });
                let outcome = self
                    .hub
                    .borrow_mut()
                    .handle(&socket.id_rc(), event, Instant::now());
                if rings && outcome.result.is_ok() {
                    // A new deadline: let the timer look again.
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
        self.execute(outcome.effects);
        if registered && outcome.result.is_ok() {
            self.send_ice_servers(socket);
        }
        self.answer(socket, name, ack, outcome.result);
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
        log::debug!("socket {}: {name} refused: {error}", socket.id());
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
                Effect::ToUser { user, event } => {
                    let conn = self.hub.borrow().conn_of(&user).cloned();
                    if let Some(socket) = conn.and_then(|c| self.socket(&c)) {
                        socket.emit_value(event.name(), &event);
                    }
                }
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
                // One node: every party is here, and nothing is held elsewhere.
                Effect::ToPeer { .. }
                | Effect::Joined { .. }
                | Effect::Left { .. }
                | Effect::CallOver { .. } => {}
            }
        }
    }

    fn socket(&self, conn: &str) -> Option<Socket> {
        self.sockets.borrow().get(conn).map(|c| c.socket.clone())
    }
}

/// Checks the token in a CONNECT auth payload; the user it names.
fn authenticate(secret: &str, auth: Option<&RawValue>) -> Result<String, ConnectError> {
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
    crate::auth::verify(secret.as_bytes(), &token.token, now)
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
        let effects = service.hub.borrow_mut().expire(Instant::now());
        service.execute(effects);
    }
}
