//! The hub: presence and calls, driven by client events. A pure state
//! machine: events and the time in, effects out. It decides *what* to send
//! to *which user*; where that user's socket lives is the I/O side's
//! business.

use crate::id::IdMap;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::logging::untrusted;
use crate::rate::Bucket;
use crate::signaling::calls::{Call, CallId, CallState, Calls};
use crate::signaling::directory::Directory;
use crate::signaling::ends::Ends;
use crate::signaling::fork::Fork;
use crate::signaling::limits::Limits;
use crate::signaling::peer::PeerMessage;
use crate::signaling::protocol::{ClientEvent, ServerEvent, SignalError, reason, valid_user_name};

/// What the I/O side must do after the hub handled something. `S`
/// identifies a socket.
#[derive(Debug, Clone)]
pub enum Effect<S> {
    /// Send `event` to this socket: the one its user was registered on
    /// when the hub decided, whoever is registered there by the time it is
    /// carried out.
    ToSocket {
        /// The recipient's socket; if it has closed since, nothing is sent.
        socket: S,
        /// What to emit, under its wire name ([`ServerEvent::name`]).
        event: ServerEvent,
    },
    /// Disconnect this socket (after what was sent to it), and close its
    /// connection.
    Disconnect {
        /// The socket of a device its user replaced by registering again.
        socket: S,
    },
    /// Send `message` to the node where `user` is connected (several
    /// nodes): the other party of a call is not here.
    ToPeer {
        /// The user on the other node.
        user: Rc<str>,
        /// What their hub must know.
        message: PeerMessage,
    },
    /// `user` registered here: the I/O side logs it with the client's
    /// address; several nodes publish where the user is.
    Joined {
        /// The name just registered (valid by [`valid_user_name`]).
        user: Rc<str>,
        /// The socket it registered on; the log shows its address.
        socket: S,
    },
    /// Several nodes: what follows waits until the other nodes have heard
    /// everything before (a registration's reply waits until Redis knows
    /// where the user is, so that whoever the user tells can call them at
    /// once, from any node).
    Barrier,
    /// Several nodes: claim `caller` and `callee` for a call in Redis,
    /// which holds who is busy cluster-wide; the answer goes to
    /// [`Hub::claimed`] with the offer, and `socket`'s events meanwhile
    /// wait.
    Claim {
        /// The caller's socket.
        socket: S,
        /// The user registered on `socket`, who sent `make_call`.
        caller: Rc<str>,
        /// The `to` of `make_call`: a valid name, not yet known to be online.
        callee: Rc<str>,
        /// The caller's SDP offer.
        offer: Box<RawValue>,
    },
    /// Several nodes: claim in Redis those of a group's members (or the
    /// one user) who can ring for a call; the answer goes to
    /// [`Hub::members_claimed`]. With `socket`, that socket's `make_call`
    /// waits for it, as for [`Effect::Claim`].
    ClaimMembers {
        /// The caller's socket, for a new call.
        socket: Option<S>,
        /// What to claim.
        claim: MemberClaim,
    },
    /// Run a door station's `open_command` for an `open_door` (whose ack,
    /// here or on the asker's node, waits for it); then [`Hub::door_done`].
    OpenDoor {
        /// What was asked, for the audit line.
        attempt: DoorAttempt,
        /// The program, then its arguments.
        command: Rc<[String]>,
        /// How long it may run before it is killed.
        timeout: Duration,
    },
    /// Several nodes: the door station of an allowed `open_door` is not
    /// here: its node opens the door ([`PeerMessage::OpenDoor`]) and
    /// answers ([`PeerMessage::DoorAnswer`]), for the ack that waits; or
    /// nobody took the message, and it is [`Hub::door_done`] here, refused.
    AskDoor {
        /// What was asked.
        attempt: DoorAttempt,
    },
    /// Push `message` to each of `user`'s push subscriptions
    /// ([`Hub::subscriptions_of`], or Redis's on several nodes): a call
    /// for a user none of whose devices is connected, or its end.
    Push {
        /// Whose subscriptions.
        user: Rc<str>,
        /// What to tell their devices.
        message: crate::push::PushMessage,
    },
    /// Several nodes: what Redis keeps for the whole cluster in place of
    /// this hub (push subscriptions, missed calls) changes, or is read.
    Shared(Shared<S>),
    /// `user` is no longer registered here (several nodes: withdraw it).
    Left {
        /// The name that was registered; no socket here has it any more.
        user: Rc<str>,
    },
    /// The call between `caller` and `callee` ended here (several nodes:
    /// release what the cluster holds for both parties). The node where a
    /// call ends says so, before it tells the other party's node, which
    /// does not.
    CallOver {
        /// Who called; the claims to release are those holding `caller>callee`.
        caller: Rc<str>,
        /// Who was called: a user, or a group's name ([`Call::called`]).
        callee: Rc<str>,
        /// A group's member whose claim alone goes back, as the call goes
        /// on without them (or ends, member by member); `None`: the claims
        /// of `caller` and `callee`.
        member: Option<Rc<str>>,
    },
}

/// Several nodes: push subscriptions and missed calls live in Redis, for
/// whichever node a user registers on next (see [`Effect::Shared`]).
#[derive(Debug, Clone)]
pub enum Shared<S> {
    /// `register_push`: keep `subscription` for `user` (the same endpoint
    /// again replaces it; past the bound per user, the oldest goes).
    Subscribe {
        /// Whose.
        user: Rc<str>,
        /// Checked, and allowed by the push policy.
        subscription: crate::push::Subscription,
    },
    /// `unregister_push`, or a push service said it is gone.
    Unsubscribe {
        /// Whose.
        user: Rc<str>,
        /// The subscription's endpoint.
        endpoint: String,
    },
    /// A call rang `user` here and ended unanswered.
    Missed {
        /// Who missed it.
        user: Rc<str>,
        /// The missed call.
        call: crate::signaling::protocol::MissedCall,
    },
    /// `missed_calls_seen`: forget `user`'s missed calls.
    MissedSeen {
        /// Whose.
        user: Rc<str>,
    },
    /// `user` just registered on `socket`: send it `missed_calls` if they
    /// have any.
    TellMissed {
        /// Whose.
        user: Rc<str>,
        /// Their new socket.
        socket: S,
    },
}

impl<S> std::fmt::Display for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shared::Subscribe { user, subscription } => {
                write!(f, "subscribe {user} {}", subscription.endpoint)
            }
            Shared::Unsubscribe { user, endpoint } => write!(f, "unsubscribe {user} {endpoint}"),
            Shared::Missed { user, call } => write!(f, "missed {user} from {}", call.from),
            Shared::MissedSeen { user } => write!(f, "missed seen {user}"),
            Shared::TellMissed { user, .. } => write!(f, "tell missed {user}"),
        }
    }
}

/// Several nodes: a round of claims in Redis for the members a call may
/// ring (see [`Effect::ClaimMembers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberClaim {
    /// Which round, so that a late answer is not taken for a newer one.
    pub round: u64,
    /// Who calls; their claim is set to `caller>called` if any member's is.
    pub caller: Rc<str>,
    /// The group (or the user) rung now.
    pub called: Rc<str>,
    /// What the caller's claim holds now, for a call that goes on (a turn
    /// or a forward): `caller>previous`; `None` for a new call, whose
    /// caller must be free.
    pub previous: Option<Rc<str>>,
    /// The members to claim, in order.
    pub members: Vec<Rc<str>>,
    /// Claim only the first who can ring (in-order groups).
    pub first_only: bool,
}

/// The result of one client event: whether it was accepted, and what follows.
#[derive(Debug)]
pub struct Outcome<S> {
    /// `Ok` when the event did what it asks; the refusal otherwise.
    pub result: Result<(), SignalError>,
    /// What to send and to whom.
    pub effects: Vec<Effect<S>>,
}

/// The answer to the claim on both users of a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Both users are now held for the call.
    Granted,
    /// The callee is not registered (on any node).
    Offline,
    /// The caller is already ringing or in a call (on some node).
    CallerBusy,
    /// The callee is ringing or in a call.
    Busy,
    /// The callee is registered on no node but has push subscriptions:
    /// claimed like [`Claim::Granted`], and woken by a push.
    Asleep,
    /// Redis could not be asked.
    Unavailable,
}

impl Claim {
    /// Whether the user is now held for the call.
    pub fn claimed(self) -> bool {
        matches!(self, Claim::Granted | Claim::Asleep)
    }
}

/// A registered user and their socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration<S> {
    /// The registered name (valid by [`valid_user_name`]).
    pub user: Rc<str>,
    /// The socket it is registered on; a socket has at most one name.
    pub socket: S,
}

/// A user in a call, with the call's two parties: what a claim in Redis
/// holds for that user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InCall {
    /// The user the claim is for: the caller or the callee.
    pub user: Rc<str>,
    /// Who called; the claim holds `caller>callee`.
    pub caller: Rc<str>,
    /// Who was called.
    pub callee: Rc<str>,
}

/// How calls have ended since start, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallTotals {
    /// Calls answered.
    pub answered: u64,
    /// Calls declined by the callee.
    pub declined: u64,
    /// Calls that rang out.
    pub timeout: u64,
    /// Calls refused because the callee was busy.
    pub busy: u64,
    /// Calls that could not be made (offline, yourself, already in a call).
    pub failed: u64,
}

/// How reconnect graces have ended since start, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GraceTotals {
    /// Users who came back in time (recovered, or registered again).
    pub resumed: u64,
    /// Users whose grace ran out.
    pub lapsed: u64,
}

/// A user whose socket was lost in a way its client may come back from:
/// still registered, still in their call, their events kept.
#[derive(Debug)]
struct Held<S> {
    /// The device whose connection was lost.
    socket: S,
    /// When the grace runs out.
    until: Instant,
    /// What they were sent meanwhile, in order.
    queue: VecDeque<ServerEvent>,
    /// About how many bytes `queue` holds.
    bytes: usize,
    /// The other party told `peer_reconnecting`, who hears
    /// `peer_reconnected` if still in the call (a caller who rang the user
    /// meanwhile saw only ringing, and hears nothing).
    told: Option<Rc<str>>,
}

/// The most events kept for a held user: a call's worth of signaling many
/// times over. Past it, or past [`MAX_HELD_BYTES`], the grace ends at once.
pub const MAX_HELD_EVENTS: usize = 256;

/// The most bytes kept for a held user: several SDPs.
pub const MAX_HELD_BYTES: usize = 512 * 1024;

/// Presence and calls on this node: who is registered on which socket, who calls whom.
#[derive(Debug)]
pub struct Hub<S> {
    /// Each registered user's first (oldest) device.
    users: HashMap<Rc<str>, S>,
    /// The other devices of users the directory allows several, oldest first.
    more: HashMap<Rc<str>, Vec<S>>,
    /// Which devices of a user with several hear their call.
    routes: HashMap<Rc<str>, Route<S>>,
    /// Registered users whose socket was lost, for the reconnect grace.
    held: HashMap<Rc<str>, Held<S>>,
    /// When each held user's grace runs out, in order.
    graces: BTreeSet<(Instant, Rc<str>)>,
    /// How long a lost user is held (zero: not at all).
    grace: Duration,
    grace_totals: GraceTotals,
    /// The time of the last call into the hub: an overflowing grace ends then.
    now: Instant,
    names: IdMap<S, Rc<str>>,
    /// The only name a socket may register, when it proved one with a token.
    allowed: IdMap<S, Rc<str>>,
    calls: Calls,
    call_timeout: Duration,
    totals: CallTotals,
    call_rate: (f64, f64),
    /// Call-rate buckets of users who called lately, online or not: kept
    /// until full again, so that leaving does not reset a limit, then
    /// swept, so that the map follows the callers of the last minute, not
    /// every name ever seen.
    call_buckets: HashMap<Rc<str>, Bucket>,
    /// When the buckets are next swept; `None` while there are none.
    next_sweep: Option<Instant>,
    /// Bucket places the sweeps gave back since [`Hub::take_swept`].
    swept: usize,
    /// Several nodes: who is busy is Redis's to say (see [`Effect::Claim`]).
    several_nodes: bool,
    /// Groups, devices, forwarding and who may call whom.
    directory: Rc<Directory>,
    /// The plans of ringing calls that ring groups or may be forwarded.
    forks: HashMap<CallId, Fork>,
    /// When each fork is next due, in order.
    fork_deadlines: BTreeSet<(Instant, CallId)>,
    /// Users in do-not-disturb.
    dnd: HashSet<Rc<str>>,
    /// Several nodes: calls whose members Redis is asked to claim, by caller.
    claiming: HashMap<Rc<str>, groups::Claiming>,
    /// The number of the last claim round.
    rounds: u64,
    /// When answered calls end: their maximum length, a door opened.
    ends: Ends,
    /// `--max-call-duration`.
    max_call: Option<Duration>,
    /// Attempts to open doors, by station, door and result.
    door_totals: std::collections::BTreeMap<DoorKey, u64>,
    /// Each user's push subscriptions, oldest first.
    subscriptions: HashMap<Rc<str>, Vec<crate::push::Subscription>>,
    /// How many subscriptions `subscriptions` holds.
    subscription_count: usize,
    /// Which push services subscriptions may name.
    push_policy: crate::push::Policy,
    /// Calls ringing users with no device here, who were pushed.
    waking: HashMap<Rc<str>, pushes::Waking>,
    /// Several nodes: those Redis just found registered nowhere but with
    /// push subscriptions, in the claim being settled; they are woken as
    /// they ring. Empty between events.
    asleep: HashSet<Rc<str>>,
    /// Users here who are ringing, and for whom.
    ringing: HashMap<Rc<str>, missed::Ringing>,
    /// Each user's missed calls, oldest first.
    missed: HashMap<Rc<str>, VecDeque<missed::Missed>>,
    /// How many `missed` holds.
    missed_count: usize,
    /// The hub's clock on the wall, for when a call was missed.
    wall: missed::WallClock,
    /// What each call's record needs beyond the call.
    facts: HashMap<CallId, records::Facts>,
    /// How the call now ending ends, said by the path that ends it.
    ending: Option<records::Ending>,
    /// Records of calls that ended, until taken.
    records: Vec<records::CallRecord>,
    /// Whether subscriptions or missed calls changed since last asked.
    state_changed: bool,
}

/// Where a call's events go for a user with several devices.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<S> {
    /// The devices still ringing (each may decline alone).
    Ringing(Vec<S>),
    /// The device that made or answered the call.
    Bound(S),
}

/// How often full call-rate buckets are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl<S: Clone + Eq + Hash> Hub<S> {
    /// An empty hub whose calls ring for `call_timeout`, with users' call
    /// rates bounded by `limits`; one node of several with `several_nodes`.
    pub fn new(call_timeout: Duration, limits: &Limits, several_nodes: bool) -> Hub<S> {
        Hub {
            users: HashMap::new(),
            more: HashMap::new(),
            routes: HashMap::new(),
            held: HashMap::new(),
            graces: BTreeSet::new(),
            grace: Duration::ZERO,
            grace_totals: GraceTotals::default(),
            now: Instant::now(),
            names: IdMap::default(),
            allowed: IdMap::default(),
            calls: Calls::default(),
            call_timeout,
            totals: CallTotals::default(),
            call_rate: (limits.calls_per_minute / 60.0, limits.call_burst),
            call_buckets: HashMap::new(),
            next_sweep: None,
            swept: 0,
            several_nodes,
            directory: Rc::default(),
            forks: HashMap::new(),
            fork_deadlines: BTreeSet::new(),
            dnd: HashSet::new(),
            claiming: HashMap::new(),
            rounds: 0,
            ends: Ends::default(),
            max_call: None,
            door_totals: std::collections::BTreeMap::new(),
            subscriptions: HashMap::new(),
            subscription_count: 0,
            push_policy: crate::push::Policy::default(),
            waking: HashMap::new(),
            asleep: HashSet::new(),
            ringing: HashMap::new(),
            missed: HashMap::new(),
            missed_count: 0,
            wall: missed::WallClock::now(),
            facts: HashMap::new(),
            ending: None,
            records: Vec::new(),
            state_changed: false,
        }
    }

    /// Dates missed calls by `wall` (tests pin it).
    pub fn set_wall_clock(&mut self, wall: missed::WallClock) {
        self.wall = wall;
    }

    /// Takes push subscriptions only for services `policy` allows.
    pub fn with_push_policy(mut self, policy: crate::push::Policy) -> Hub<S> {
        self.push_policy = policy;
        self
    }

    /// Uses `directory` for calls from now on; calls in progress keep
    /// the plan they started with.
    pub fn set_directory(&mut self, directory: Rc<Directory>) {
        self.directory = directory;
    }

    /// The directory in use.
    pub fn directory(&self) -> &Rc<Directory> {
        &self.directory
    }

    /// Whether `user` is in do-not-disturb.
    pub fn is_dnd(&self, user: &str) -> bool {
        self.dnd.contains(user)
    }

    /// Ends answered calls after `max` (`--max-call-duration`; a user's
    /// `max_call` may be shorter).
    pub fn with_max_call(mut self, max: Option<Duration>) -> Hub<S> {
        self.max_call = max;
        self
    }

    /// Holds users whose socket was lost for `grace` (zero: they leave at once).
    pub fn with_grace(mut self, grace: Duration) -> Hub<S> {
        self.grace = grace;
        self
    }

    /// How calls have ended since start.
    pub fn totals(&self) -> CallTotals {
        self.totals
    }

    /// How reconnect graces have ended since start.
    pub fn grace_totals(&self) -> GraceTotals {
        self.grace_totals
    }

    /// How many users are held for their reconnect grace.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// How many events are kept for held users, in all.
    pub fn held_events(&self) -> usize {
        self.held.values().map(|held| held.queue.len()).sum()
    }

    /// Whether `user` is held for their reconnect grace.
    pub fn is_held(&self, user: &str) -> bool {
        self.held.contains_key(user)
    }

    /// The registered users, sorted.
    pub fn users(&self) -> Vec<&str> {
        let mut users: Vec<&str> = self.users.keys().map(|u| &**u).collect();
        users.sort_unstable();
        users
    }

    /// Every registered user with their socket.
    pub fn registrations(&self) -> Vec<Registration<S>> {
        self.users
            .iter()
            .map(|(user, socket)| Registration {
                user: user.clone(),
                socket: socket.clone(),
            })
            .collect()
    }

    /// How many users are registered.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// How many calls are ringing or active.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// How many calls are ringing.
    pub fn ringing_count(&self) -> usize {
        self.calls.ringing()
    }

    /// The socket `user` is registered on.
    pub fn socket_of(&self, user: &str) -> Option<&S> {
        self.users.get(user)
    }

    /// The user registered on `socket`.
    pub fn user_of(&self, socket: &S) -> Option<&Rc<str>> {
        self.names.get(socket)
    }

    /// When the hub next needs [`Hub::expire`] called.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.calls.next_deadline(),
            self.next_sweep,
            self.graces.first().map(|(at, _)| *at),
            self.fork_deadlines.first().map(|(at, _)| *at),
            self.ends.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends the calls whose ringing time is up (deadline at or before
    /// `now`), ends the reconnect graces that ran out, and sweeps the
    /// call-rate buckets when that is due.
    pub fn expire(&mut self, now: Instant) -> Vec<Effect<S>> {
        self.now = now;
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        let mut effects = Vec::new();
        let mut lapsed = false;
        while let Some((until, user)) = self.graces.first().cloned()
            && until <= now
        {
            self.lapse(&user, &mut effects);
            lapsed = true;
        }
        if lapsed {
            // A burst of lost connections held many users at once.
            crate::id::shrink_when_sparse(&mut self.held);
            crate::id::shrink_when_sparse(&mut self.users);
            crate::id::shrink_when_sparse(&mut self.names);
            crate::id::shrink_when_sparse(&mut self.allowed);
        }
        while let Some(&(at, id)) = self.fork_deadlines.first()
            && at <= now
        {
            self.fork_due(id, now, &mut effects);
        }
        for (id, end) in self.ends.expire(now) {
            self.end_due(id, end, &mut effects);
        }
        for (id, call) in self.calls.expire(now) {
            self.ending(records::Ending::Timeout);
            self.ended(id, &call);
            self.totals.timeout += 1;
            log::info!(
                "call {} -> {}: timed out",
                untrusted(&call.caller),
                untrusted(&call.callee)
            );
            self.over(&call, &mut effects);
            let event = ServerEvent::CallTimeout {
                user: call.callee.clone(),
            };
            self.tell(&call.caller, event, &mut effects);
            for other in call.others(&call.caller) {
                let event = ServerEvent::CallTimeout {
                    user: call.caller.clone(),
                };
                self.tell(&other, event, &mut effects);
            }
        }
        effects
    }

    /// Forgets the call-rate buckets that are full again (a fresh one is
    /// the same), and gives the map's room back once it emptied out.
    fn sweep(&mut self, now: Instant) {
        self.call_buckets.retain(|_, bucket| !bucket.is_full(now));
        let capacity = self.call_buckets.capacity();
        if capacity > 2 * self.call_buckets.len() + 16 {
            self.call_buckets.shrink_to_fit();
            self.swept += capacity - self.call_buckets.capacity();
        }
        self.next_sweep = (!self.call_buckets.is_empty()).then(|| now + SWEEP_EVERY);
    }

    /// How many places for call-rate buckets the sweeps gave back since the
    /// last call: the I/O side may hand the memory back to the system.
    pub fn take_swept(&mut self) -> usize {
        std::mem::take(&mut self.swept)
    }

    /// How many call-rate buckets the hub keeps (for tests and benchmarks).
    pub fn call_bucket_count(&self) -> usize {
        self.call_buckets.len()
    }

    /// Handles one client event from `socket` at `now`.
    pub fn handle(&mut self, socket: &S, event: ClientEvent, now: Instant) -> Outcome<S> {
        // Anything due first: an answer at the very deadline finds the call gone.
        let mut effects = self.expire(now);
        let result = match event {
            ClientEvent::RegisterUser { user_id } => self.register(socket, user_id, &mut effects),
            ClientEvent::LogoutUser { user_id } => self.logout(socket, user_id, &mut effects),
            event => match self.names.get(socket).cloned() {
                None => Err(SignalError::NotRegistered),
                Some(me) => self.call_event(socket, me, event, now, &mut effects),
            },
        };
        Outcome { result, effects }
    }

    /// What a registration on `socket` brings once it was answered (and
    /// the client has its ICE servers): the user's missed calls, and a
    /// call that was waking them, with what it sent meanwhile.
    pub fn welcome(&mut self, socket: &S, now: Instant) -> Vec<Effect<S>> {
        let mut effects = self.expire(now);
        if let Some(user) = self.names.get(socket).cloned() {
            self.tell_missed(&user, socket, &mut effects);
            self.woken(&user, socket, &mut effects);
        }
        effects
    }

    /// Binds `socket` to the name its token proves: it may register only that.
    pub fn authenticate(&mut self, socket: &S, user: &str) {
        self.allowed.insert(socket.clone(), user.into());
    }

    /// The socket's connection was lost in a way its client may come back
    /// from (it closed or failed, or missed a ping): its user stays
    /// registered, and in their call, for the reconnect grace; the other
    /// party hears `peer_reconnecting`. Without a grace, as [`disconnected`](Hub::disconnected).
    pub fn lost(&mut self, socket: &S, now: Instant) -> Vec<Effect<S>> {
        let Some(user) = self.names.get(socket).cloned() else {
            return self.disconnected(socket, now);
        };
        if self.grace.is_zero() || self.held.contains_key(&user) {
            return self.disconnected(socket, now);
        }
        if self.device_count(&user) > 1
            && self.routes.get(&user) != Some(&Route::Bound(socket.clone()))
        {
            // Its other devices are there, and the call (if any) is not
            // this one's: nothing of it to keep.
            return self.disconnected(socket, now);
        }
        self.allowed.remove(socket);
        let mut effects = self.expire(now);
        let until = now + self.grace;
        let told = self.peer_of(&user);
        self.held.insert(
            user.clone(),
            Held {
                socket: socket.clone(),
                until,
                queue: VecDeque::new(),
                bytes: 0,
                told: told.clone(),
            },
        );
        self.graces.insert((until, user.clone()));
        log::info!(
            "{} lost its connection; held for {:?}",
            untrusted(&user),
            self.grace
        );
        if let Some(peer) = told {
            let event = ServerEvent::PeerReconnecting { from: user };
            self.tell(&peer, event, &mut effects);
        }
        effects
    }

    /// The socket a held user had was recovered by its client: the user
    /// is back, gets what was kept for them, and the other party hears
    /// `peer_reconnected`.
    pub fn recovered(&mut self, socket: &S, now: Instant) -> Vec<Effect<S>> {
        let mut effects = self.expire(now);
        if let Some(user) = self.names.get(socket).cloned()
            && self
                .held
                .get(&user)
                .is_some_and(|held| held.socket == *socket)
        {
            self.resume(&user, socket, &mut effects);
        }
        effects
    }

    /// The other party of `user`'s call, if they are in one.
    fn peer_of(&self, user: &str) -> Option<Rc<str>> {
        self.calls.of(user)?.1.peer_of(user).cloned()
    }

    /// Ends `user`'s grace: none, if they were not held.
    fn unhold(&mut self, user: &str) -> Option<Held<S>> {
        let held = self.held.remove(user)?;
        self.graces.remove(&(held.until, user.into()));
        Some(held)
    }

    /// A held user is back on `socket`: what was kept goes to it, in
    /// order; the other party hears `peer_reconnected`.
    fn resume(&mut self, user: &Rc<str>, socket: &S, effects: &mut Vec<Effect<S>>) {
        let Some(held) = self.unhold(user) else {
            return;
        };
        self.grace_totals.resumed += 1;
        log::info!(
            "{} is back ({} events kept)",
            untrusted(user),
            held.queue.len()
        );
        effects.extend(held.queue.into_iter().map(|event| Effect::ToSocket {
            socket: socket.clone(),
            event,
        }));
        if let Some(peer) = self
            .peer_of(user)
            .filter(|peer| held.told.as_ref() == Some(peer))
        {
            let event = ServerEvent::PeerReconnected { from: user.clone() };
            self.tell(&peer, event, effects);
        }
    }

    /// A held user's grace ran out (or what was kept for them overflowed):
    /// they leave as if their connection had just closed.
    fn lapse(&mut self, user: &Rc<str>, effects: &mut Vec<Effect<S>>) {
        let Some(held) = self.unhold(user) else {
            return;
        };
        self.grace_totals.lapsed += 1;
        if self.remove_device(user, &held.socket, reason::DISCONNECTED, effects) {
            log::info!("a device of {} did not come back", untrusted(user));
            effects.push(Effect::Disconnect {
                socket: held.socket,
            });
            return;
        }
        let Some(socket) = self.users.remove(user) else {
            return;
        };
        self.names.remove(&socket);
        self.dnd.remove(user);
        log::info!("{} did not come back; disconnected", untrusted(user));
        self.end_call_of(user, reason::DISCONNECTED, effects);
        effects.push(Effect::Left { user: user.clone() });
        // Its client may still come back with the socket: it must get a
        // fresh one, not a socket the hub no longer knows.
        effects.push(Effect::Disconnect { socket });
    }

    /// The socket left (its connection closed): its user leaves, and their
    /// call ends.
    pub fn disconnected(&mut self, socket: &S, now: Instant) -> Vec<Effect<S>> {
        self.allowed.remove(socket);
        let mut effects = self.expire(now);
        if let Some(user) = self.names.get(socket).cloned()
            && self.remove_device(&user, socket, reason::DISCONNECTED, &mut effects)
        {
            log::info!("a device of {} disconnected", untrusted(&user));
            return effects;
        }
        if let Some(user) = self.names.remove(socket) {
            self.users.remove(&user);
            self.dnd.remove(&user);
            log::info!("{} disconnected", untrusted(&user));
            self.end_call_of(&user, reason::DISCONNECTED, &mut effects);
            effects.push(Effect::Left { user });
        }
        effects
    }

    /// Ends every call, telling both parties `reason`.
    pub fn end_all_calls(&mut self, reason: &'static str) -> Vec<Effect<S>> {
        let mut effects = Vec::new();
        self.forks.clear();
        self.fork_deadlines.clear();
        self.ends.clear();
        self.routes.clear();
        for (id, call) in self.calls.end_all() {
            self.ending(records::Ending::Ended {
                by: None,
                reason: Some(reason.into()),
            });
            self.record(id, &call);
            log::info!(
                "call {} -> {}: ended ({reason})",
                untrusted(&call.caller),
                untrusted(&call.callee)
            );
            self.over(&call, &mut effects);
            let event = ServerEvent::CallEnded {
                from: call.callee.clone(),
                reason: Some(reason),
            };
            self.tell(&call.caller, event, &mut effects);
            for other in call.others(&call.caller) {
                let event = ServerEvent::CallEnded {
                    from: call.caller.clone(),
                    reason: Some(reason),
                };
                self.tell(&other, event, &mut effects);
            }
        }
        effects
    }

    /// Sends `event` to `user`: to their socket when they are connected
    /// here, else as a message to the node that has them.
    fn tell(&mut self, user: &Rc<str>, event: ServerEvent, effects: &mut Vec<Effect<S>>) {
        let missed = self.note_ring(user, &event, effects);
        if let Some(held) = self.held.get_mut(user) {
            let size = event.size();
            if held.queue.len() < MAX_HELD_EVENTS && held.bytes + size <= MAX_HELD_BYTES {
                held.bytes += size;
                held.queue.push_back(event);
            } else if held.until > self.now {
                // Not everything could be kept: the grace ends at the next
                // expiry, as soon as the service wakes.
                log::info!("{}: too much kept while away", untrusted(user));
                self.graces.remove(&(held.until, user.clone()));
                held.until = self.now;
                self.graces.insert((self.now, user.clone()));
            }
        } else if self.waking.contains_key(user) {
            self.keep_for_waking(user, event, missed, effects);
        } else if let Some(route) = self.routes.get(user) {
            let sockets = match route {
                Route::Bound(socket) => std::slice::from_ref(socket),
                Route::Ringing(sockets) => sockets.as_slice(),
            };
            to_each(sockets, event, effects);
        } else if let Some(socket) = self.users.get(user) {
            match self.more.get(user) {
                Some(more) => {
                    to_each(std::slice::from_ref(socket), event.clone(), effects);
                    to_each(more, event, effects);
                }
                None => effects.push(Effect::ToSocket {
                    socket: socket.clone(),
                    event,
                }),
            }
        } else if let Some(message) = PeerMessage::for_event(user, event) {
            effects.push(Effect::ToPeer {
                user: user.clone(),
                message,
            });
        }
    }

    /// Sends each of `others` what `make` builds from `from` and `payload`.
    fn tell_all<P: Clone>(
        &mut self,
        others: &[Rc<str>],
        from: &Rc<str>,
        payload: P,
        effects: &mut Vec<Effect<S>>,
        make: impl Fn(Rc<str>, P) -> ServerEvent,
    ) {
        if let Some((last, rest)) = others.split_last() {
            for other in rest {
                self.tell(other, make(from.clone(), payload.clone()), effects);
            }
            self.tell(last, make(from.clone(), payload), effects);
        }
    }

    /// A call ended here: both parties are free again. On several nodes, a
    /// group's members' claims go back one by one; a mirror leaves the
    /// caller's to the caller's node.
    fn over(&self, call: &Call, effects: &mut Vec<Effect<S>>) {
        let called = call.called();
        if !(call.mirror && call.is_ringing()) {
            effects.push(Effect::CallOver {
                caller: call.caller.clone(),
                callee: called.clone(),
                member: None,
            });
        }
        if !self.several_nodes || call.group.is_none() {
            return;
        }
        let answered = (call.callee != *called).then_some(&call.callee);
        for member in call.legs.iter().chain(answered) {
            effects.push(Effect::CallOver {
                caller: call.caller.clone(),
                callee: called.clone(),
                member: Some(member.clone()),
            });
        }
    }

    fn register(
        &mut self,
        socket: &S,
        name: String,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let reply = |success: bool, error: Option<String>| Effect::ToSocket {
            socket: socket.clone(),
            event: ServerEvent::UserRegistered {
                success,
                user_id: name.clone(),
                error,
            },
        };
        if let Some(error) = self.registration_refusal(socket, &name) {
            effects.push(reply(false, Some(error.to_string())));
            return Err(error);
        }
        match self.names.get(socket) {
            Some(current) if **current == *name => {
                effects.push(reply(true, None));
                return Ok(());
            }
            Some(current) => {
                // The socket takes another name: the old one logs out.
                let current = current.clone();
                self.sign_off(&current, socket, reason::LOGGED_OUT, effects);
            }
            None => {}
        }
        let user: Rc<str> = name.as_str().into();
        if let Some(old) = self.held.get(&user).map(|held| held.socket.clone()) {
            // The held user is back on a new socket: it takes over the
            // registration and the call; the lost socket is given up.
            log::info!("{} registered again within its grace", untrusted(&user));
            self.names.remove(&old);
            effects.push(Effect::Disconnect {
                socket: old.clone(),
            });
            self.replace_device(&user, &old, socket);
            if let Some(held) = self.held.get_mut(&user) {
                held.socket = socket.clone();
            }
            self.joined(&user, socket, reply(true, None), effects);
            self.resume(&user, socket, effects);
            self.tell_dnd(&user, Some(socket), effects);
            return Ok(());
        }
        // On several nodes, this is the user's home: their devices
        // elsewhere are relayed here (see `relay`).
        if self.users.contains_key(&user)
            && (self.device_count(&user) > 1 || self.directory.devices(&user) > 1)
        {
            return self.add_device(&user, socket, reply, effects);
        }
        if let Some(old) = self.users.get(&user).cloned() {
            // One device per user: the newest registration wins.
            log::info!(
                "{} registered on another device; disconnecting the old one",
                untrusted(&user)
            );
            self.leave(&user, reason::NEW_LOGIN, effects);
            effects.push(Effect::ToSocket {
                socket: old.clone(),
                event: ServerEvent::ForceDisconnect {
                    reason: reason::NEW_LOGIN.into(),
                },
            });
            effects.push(Effect::Disconnect { socket: old });
        }
        self.users.insert(user.clone(), socket.clone());
        self.joined(&user, socket, reply(true, None), effects);
        Ok(())
    }

    /// Why `socket` may not register `name`, if it may not: a name
    /// outside the rules, a group's, or not the one its token proves.
    pub fn registration_refusal(&self, socket: &S, name: &str) -> Option<SignalError> {
        if !valid_user_name(name) {
            Some(SignalError::InvalidUserName)
        } else if self.directory.group(name).is_some() {
            Some(SignalError::GroupName)
        } else if self
            .allowed
            .get(socket)
            .is_some_and(|allowed| **allowed != *name)
        {
            Some(SignalError::NotYourToken)
        } else {
            None
        }
    }

    /// `socket` is `user`'s now: the I/O side hears of it, then the
    /// client gets `reply` (on several nodes, once they all know).
    fn joined(
        &mut self,
        user: &Rc<str>,
        socket: &S,
        reply: Effect<S>,
        effects: &mut Vec<Effect<S>>,
    ) {
        self.names.insert(socket.clone(), user.clone());
        effects.push(Effect::Joined {
            user: user.clone(),
            socket: socket.clone(),
        });
        if self.several_nodes {
            effects.push(Effect::Barrier);
        }
        effects.push(reply);
    }

    fn logout(
        &mut self,
        socket: &S,
        name: Option<String>,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let me = self
            .names
            .get(socket)
            .cloned()
            .ok_or(SignalError::NotRegistered)?;
        if name.is_some_and(|n| *n != *me) {
            return Err(SignalError::NotYourName);
        }
        self.sign_off(&me, socket, reason::LOGGED_OUT, effects);
        Ok(())
    }

    /// `socket` stops being `user`'s: one of their devices goes, or the
    /// user leaves with their last.
    fn sign_off(
        &mut self,
        user: &Rc<str>,
        socket: &S,
        why: &'static str,
        effects: &mut Vec<Effect<S>>,
    ) {
        if !self.remove_device(user, socket, why, effects) {
            self.leave(user, why, effects);
        }
    }

    /// `user` stops being registered; their call ends for the peer.
    fn leave(&mut self, user: &Rc<str>, why: &'static str, effects: &mut Vec<Effect<S>>) {
        self.unhold(user);
        self.dnd.remove(user);
        let present = self.users.remove(user).inspect(|socket| {
            self.names.remove(socket);
        });
        for socket in self.more.remove(user).unwrap_or_default() {
            self.names.remove(&socket);
        }
        log::info!("{} left ({why})", untrusted(user));
        self.end_call_of(user, why, effects);
        // Withdrawn after the call's end went out: a message from the peer
        // meanwhile still finds the user, and the peer hears `why`.
        if present.is_some() {
            effects.push(Effect::Left { user: user.clone() });
        }
    }

    fn end_call_of(&mut self, user: &Rc<str>, why: &'static str, effects: &mut Vec<Effect<S>>) {
        let Some((id, call)) = self.calls.of(user) else {
            return;
        };
        if call.is_leg(user) {
            // One member of a ringing group: the others ring on.
            self.leg_gone(id, user, groups::LegEnd::Left(why), effects);
            return;
        }
        self.ending(records::Ending::Ended {
            by: Some(user.clone()),
            reason: Some(why.into()),
        });
        let Some(call) = self.finish(id) else {
            return;
        };
        log::info!(
            "call {} -> {}: ended, {} {why}",
            untrusted(&call.caller),
            untrusted(&call.callee),
            untrusted(user)
        );
        self.over(&call, effects);
        for other in call.others(user) {
            let event = ServerEvent::CallEnded {
                from: user.clone(),
                reason: Some(why),
            };
            self.tell(&other, event, effects);
        }
    }

    /// Ends call `id` here: the call and what the hub kept for it.
    fn finish(&mut self, id: CallId) -> Option<Call> {
        let call = self.calls.end(id)?;
        self.ended(id, &call);
        Some(call)
    }

    /// Forgets what the hub kept for call `id`, which ended.
    fn ended(&mut self, id: CallId, call: &Call) {
        self.record(id, call);
        self.take_fork(id);
        self.ends.forget(id);
        for user in [&call.caller, &call.callee].into_iter().chain(&call.legs) {
            self.routes.remove(user);
        }
    }

    fn call_event(
        &mut self,
        socket: &S,
        me: Rc<str>,
        event: ClientEvent,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        match event {
            ClientEvent::MakeCall { to, offer } => {
                self.make_call(socket, me, to.into(), offer, now, effects)
            }
            ClientEvent::AnswerCall { to, answer } => {
                let id = self.ringing_from(&me, &to)?;
                if !self.routes_to(&me, socket) {
                    return Err(SignalError::NoIncomingCall);
                }
                self.ring_taken(&me);
                self.answered(id, &me, Some(socket), answer, now, effects);
                Ok(())
            }
            ClientEvent::DeclineCall { to } => {
                let id = self.ringing_from(&me, &to)?;
                if !self.routes_to(&me, socket) {
                    return Err(SignalError::NoIncomingCall);
                }
                if self.device_declines(&me, socket) {
                    return Ok(());
                }
                self.ring_taken(&me);
                if self.calls.get(id).is_some_and(|call| call.is_leg(&me)) {
                    log::info!("call {} -> {}: declined", untrusted(&to), untrusted(&me));
                    self.leg_gone(id, &me, groups::LegEnd::Declined, effects);
                    return Ok(());
                }
                self.ending(records::Ending::Declined { by: me.clone() });
                if let Some(call) = self.finish(id) {
                    self.over(&call, effects);
                }
                self.totals.declined += 1;
                log::info!("call {} -> {}: declined", untrusted(&to), untrusted(&me));
                let event = ServerEvent::CallDeclined { from: me.clone() };
                self.tell(&to.into(), event, effects);
                Ok(())
            }
            ClientEvent::EndCall { to } => {
                let id = self.call_with(&me, &to, socket)?;
                if self.calls.get(id).is_some_and(|call| call.is_leg(&me)) {
                    // A member who hangs up while it rings only stops ringing.
                    self.leg_gone(id, &me, groups::LegEnd::Declined, effects);
                    return Ok(());
                }
                self.ending(records::Ending::Ended {
                    by: Some(me.clone()),
                    reason: None,
                });
                if let Some(call) = self.finish(id) {
                    log::info!(
                        "call {} -> {}: ended by {}",
                        untrusted(&call.caller),
                        untrusted(&call.callee),
                        untrusted(&me)
                    );
                    self.over(&call, effects);
                    for other in call.others(&me) {
                        let event = ServerEvent::CallEnded {
                            from: me.clone(),
                            reason: None,
                        };
                        self.tell(&other, event, effects);
                    }
                }
                Ok(())
            }
            ClientEvent::IceCandidate { to, candidate } => {
                let id = self.call_with(&me, &to, socket)?;
                let Some(call) = self.calls.get(id) else {
                    return Err(SignalError::NoSuchCall);
                };
                let others = call.others(&me);
                let plan = match self.forks.get_mut(&id) {
                    Some(fork) => Some(fork),
                    None => self
                        .claiming
                        .get_mut(&me)
                        .map(|claiming| &mut claiming.fork),
                };
                if call.is_ringing()
                    && *call.caller == *me
                    && let Some(fork) = plan
                {
                    fork.keep_candidate(&candidate);
                }
                self.tell_all(&others, &me, candidate, effects, |from, candidate| {
                    ServerEvent::IceCandidate { from, candidate }
                });
                Ok(())
            }
            ClientEvent::CallUpdate { to, description } => {
                let id = self.active_call_with(&me, &to, socket)?;
                let others = self
                    .calls
                    .get(id)
                    .map(|c| c.others(&me))
                    .unwrap_or_default();
                self.tell_all(&others, &me, description, effects, |from, description| {
                    ServerEvent::CallUpdate { from, description }
                });
                Ok(())
            }
            ClientEvent::SetDnd { on } => {
                let changed = if on {
                    self.dnd.insert(me.clone())
                } else {
                    self.dnd.remove(&me)
                };
                if changed {
                    log::info!(
                        "{}: do-not-disturb {}",
                        untrusted(&me),
                        if on { "on" } else { "off" }
                    );
                    self.tell_dnd(&me, None, effects);
                }
                Ok(())
            }
            ClientEvent::OpenDoor { to, door } => {
                self.open_door(socket, me, to, door, now, effects)
            }
            ClientEvent::RegisterPush { subscription } => {
                self.add_subscription(&me, subscription, effects)
            }
            ClientEvent::UnregisterPush { endpoint } => {
                self.remove_subscription(&me, &endpoint, effects);
                Ok(())
            }
            ClientEvent::MissedCallsSeen => {
                self.missed_seen(&me, effects);
                Ok(())
            }
            ClientEvent::RegisterUser { .. } | ClientEvent::LogoutUser { .. } => Ok(()),
        }
    }

    /// What refuses a call from `me` to `to` before anyone else is asked:
    /// the caller's rate, the name, calling oneself, being in a call already.
    fn call_refusal(&mut self, me: &Rc<str>, to: &str, now: Instant) -> Option<SignalError> {
        let (rate, burst) = self.call_rate;
        let allowed = self
            .call_buckets
            .entry(me.clone())
            .or_insert_with(|| Bucket::new(rate, burst, now))
            .take(now);
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        if !allowed {
            Some(SignalError::TooManyCalls)
        } else if !valid_user_name(to) {
            Some(SignalError::InvalidUserName)
        } else if **me == *to {
            Some(SignalError::CallingYourself)
        } else if self.calls.of(me).is_some() {
            Some(SignalError::AlreadyInCall)
        } else if !self.directory.may_call(me, to) {
            Some(SignalError::NotAllowed)
        } else {
            None
        }
    }

    /// Tells the caller why their call was not made.
    /// (Counted in the totals of the caller's node only.)
    fn refuse_call(
        &mut self,
        me: &Rc<str>,
        to: Rc<str>,
        error: &SignalError,
        effects: &mut Vec<Effect<S>>,
    ) {
        let here = self.users.contains_key(me);
        if *error == SignalError::UserBusy {
            self.totals.busy += u64::from(here);
            log::info!("call {} -> {}: busy", untrusted(me), untrusted(&to));
        } else {
            self.totals.failed += u64::from(here);
            log::info!(
                "call {} -> {}: failed ({error})",
                untrusted(me),
                untrusted(&to)
            );
        }
        let event = groups::refusal_event(to, error);
        self.tell(me, event, effects);
    }

    /// Rings `callee` for `me`; wakes them when they are `asleep`.
    fn start_call(
        &mut self,
        me: Rc<str>,
        callee: Rc<str>,
        offer: Box<RawValue>,
        asleep: bool,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let id = self
            .calls
            .ring(me.clone(), callee.clone(), now + self.call_timeout);
        self.fact_rang(id, &callee);
        log::info!("call {} -> {}: ringing", untrusted(&me), untrusted(&callee));
        if asleep {
            self.wake(id, &me, &callee, None, effects);
        }
        let event = ServerEvent::IncomingCall {
            from: me,
            offer,
            group: None,
        };
        self.tell(&callee, event, effects);
    }

    /// `make_call`: the checks this node can make alone, then the claim on
    /// both users (here, or in Redis on several nodes), then the ring.
    fn make_call(
        &mut self,
        socket: &S,
        me: Rc<str>,
        callee: Rc<str>,
        offer: Box<RawValue>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        if let Some(error) = self.call_refusal(&me, &callee, now) {
            self.refuse_call(&me, callee, &error, effects);
            return Err(error);
        }
        let forks =
            self.directory.group(&callee).is_some() || self.directory.no_answer(&callee).is_some();
        if self.several_nodes && forks {
            if self.device_count(&me) > 1 {
                self.routes.insert(me.clone(), Route::Bound(socket.clone()));
            }
            let fork = Fork::new(callee, offer, 0);
            self.claim_round(&me, fork, None, groups::Round::Dial, Some(socket), effects);
            return Ok(());
        }
        if self.several_nodes {
            if self.device_count(&me) > 1 {
                self.routes.insert(me.clone(), Route::Bound(socket.clone()));
            }
            effects.push(Effect::Claim {
                socket: socket.clone(),
                caller: me,
                callee,
                offer,
            });
            return Ok(());
        }
        if self.device_count(&me) > 1 {
            self.routes.insert(me.clone(), Route::Bound(socket.clone()));
        }
        let result = self.dial(&me, Fork::new(callee, offer, 0), None, now, effects);
        if result.is_err() {
            self.routes.remove(&me);
        }
        result
    }

    /// The answer to the claim for a call from `caller` to `callee`: ring,
    /// or tell the caller why not. Should the caller have left or started
    /// another call while Redis was asked, the claims go back.
    pub fn claimed(
        &mut self,
        caller: Rc<str>,
        callee: &str,
        offer: Box<RawValue>,
        claim: Claim,
        now: Instant,
    ) -> Outcome<S> {
        let mut effects = self.expire(now);
        let callee: Rc<str> = callee.into();
        let refusal = match claim {
            Claim::Granted | Claim::Asleep => None,
            Claim::Offline => Some(SignalError::UserOffline),
            Claim::Busy => Some(SignalError::UserBusy),
            Claim::CallerBusy => Some(SignalError::AlreadyInCall),
            Claim::Unavailable => Some(SignalError::Unavailable),
        };
        if let Some(error) = refusal {
            self.refuse_call(&caller, callee, &error, &mut effects);
            if self.calls.of(&caller).is_none() {
                self.routes.remove(&caller);
            }
            return Outcome {
                result: Err(error),
                effects,
            };
        }
        if !self.users.contains_key(&caller) || self.calls.of(&caller).is_some() {
            effects.push(Effect::CallOver {
                caller,
                callee,
                member: None,
            });
            return Outcome {
                result: Err(SignalError::AlreadyInCall),
                effects,
            };
        }
        if self.users.contains_key(&callee) && self.calls.of(&callee).is_some() {
            // Redis found the callee free, but the end of their last call
            // (decided on another node) has not reached this one yet: busy
            // for a moment more.
            effects.push(Effect::CallOver {
                caller: caller.clone(),
                callee: callee.clone(),
                member: None,
            });
            let error = SignalError::UserBusy;
            self.refuse_call(&caller, callee, &error, &mut effects);
            self.routes.remove(&caller);
            return Outcome {
                result: Err(error),
                effects,
            };
        }
        self.ring_devices(&callee);
        let asleep = claim == Claim::Asleep && !self.users.contains_key(&callee);
        self.start_call(caller, callee, offer, asleep, now, &mut effects);
        Outcome {
            result: Ok(()),
            effects,
        }
    }

    /// The ringing call `me` made to `callee`.
    fn ringing_to(&self, me: &str, callee: &str) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call))
                if call.is_ringing() && *call.caller == *me && *call.callee == *callee =>
            {
                Ok(id)
            }
            _ => Err(SignalError::NoSuchCall),
        }
    }

    /// The ringing call from `caller` to `me` (called, or ringing as a
    /// member of a group).
    fn ringing_from(&self, me: &str, caller: &str) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call))
                if call.is_ringing()
                    && *call.caller == *caller
                    && (*call.callee == *me || call.is_leg(me)) =>
            {
                Ok(id)
            }
            _ => Err(SignalError::NoIncomingCall),
        }
    }

    /// The ringing or active call between `me` and `peer` (as `me` names
    /// them: a group, or a member of it, for the caller), from a device
    /// of `me`'s that is in it.
    fn call_with(&self, me: &str, peer: &str, socket: &S) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call)) if call.is_between(me, peer) && self.routes_to(me, socket) => Ok(id),
            _ => Err(SignalError::NoSuchCall),
        }
    }

    /// The answered call between `me` and `peer`, as [`Hub::call_with`].
    fn active_call_with(&self, me: &str, peer: &str, socket: &S) -> Result<u64, SignalError> {
        match self.call_with(me, peer, socket) {
            Ok(id) if self.calls.get(id).is_some_and(|call| !call.is_ringing()) => Ok(id),
            _ => Err(SignalError::NoSuchCall),
        }
    }

    /// The ringing or active call between `me` and `peer`, whichever of
    /// `me`'s devices is in it (for what comes from another node).
    fn call_between(&self, me: &str, peer: &str) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call)) if call.is_between(me, peer) => Ok(id),
            _ => Err(SignalError::NoSuchCall),
        }
    }

    /// Whether `user` is in an answered call (for tests and metrics).
    pub fn in_active_call(&self, user: &str) -> bool {
        self.calls
            .of(user)
            .is_some_and(|(_, call)| matches!(call.state, CallState::Active { .. }))
    }
}

mod admin;
mod devices;
mod doors;
mod groups;
mod kept;
mod missed;
mod peers;
mod pushes;
mod records;

pub use admin::LiveCall;
pub use kept::{Kept, KeptSubscription};
pub use records::{CallRecord, DoorOpened};

pub use missed::{MAX_MISSED, MAX_MISSED_PER_USER, WallClock};

pub use pushes::{MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS_PER_USER, push_call_id};

pub use doors::{DoorAttempt, DoorKey, DoorResult};

/// Sends `event` to each of `sockets`.
fn to_each<S: Clone>(sockets: &[S], event: ServerEvent, effects: &mut Vec<Effect<S>>) {
    if let Some((last, rest)) = sockets.split_last() {
        for socket in rest {
            effects.push(Effect::ToSocket {
                socket: socket.clone(),
                event: event.clone(),
            });
        }
        effects.push(Effect::ToSocket {
            socket: last.clone(),
            event,
        });
    }
}

#[cfg(test)]
#[path = "../hub_tests.rs"]
mod tests;
