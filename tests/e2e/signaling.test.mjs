// End-to-end tests of the signalbox signaling protocol with the official
// socket.io-client: the seed's events, signalbox's rules on top of them, and
// the REST pages.
//
// Client -> server (one object argument each, optionally followed by an ack):
//   register_user {userId}            make_call {to, from, offer}
//   answer_call {to, from, answer}    decline_call {to, from}
//   end_call {to, from}               ice_candidate {to, from, candidate}
//   logout_user {userId}
// Server -> client:
//   user_registered {success, userId[, error]}   incoming_call {from, offer}
//   call_answered {from, answer}                 call_declined {from}
//   call_ended {from[, reason]}                  call_timeout {user}
//   call_busy {targetUser}                       call_failed {error, targetUser}
//   ice_candidate {from, candidate}              force_disconnect {reason}
//   signaling_error {event, error}               ack: {ok:true} | {ok:false, error}
// REST: GET / (health JSON), GET /users.
//
// Every test starts its own server (so the REST counts are exact), uses
// unique user names, and checks at the end that the server is still alive and
// that no client received a signaling_error the test did not consume.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { delay, signalboxBin, startServer, waitUntil, withServerLogs, withTimeout } from './helpers.mjs';

const WAIT_MS = 3000; // upper bound for any single expected event
const QUIET_MS = 150; // how long "nothing arrives" is observed

// ---------------------------------------------------------------------------
// Harness

let seq = 0;
/** A unique, valid user name: `alice-<n>`. */
const uname = (base) => `${base}-${++seq}`;

/** Marks "emit the event with no argument at all". */
const NO_ARG = Symbol('no argument');

/** A socket.io-client socket that records every server event, in order. */
class Peer {
  constructor(socket, label) {
    this.socket = socket;
    this.label = label;
    this.name = undefined; // the registered user name, once registered
    this.pending = []; // unconsumed events: {event, args}
    this.history = []; // every event ever received, in order (names only)
    this.waiters = new Set();
    socket.onAny((event, ...args) => this._record(event, args));
    socket.on('connect', () => this._record('$connect', []));
    socket.on('disconnect', (reason) => this._record('$disconnect', [reason]));
  }

  _record(event, args) {
    // ice_servers and push_config follow every successful registration;
    // they are checked in ice.test.mjs and push.test.mjs and are no part of
    // the seed's flows checked here.
    if (event === 'ice_servers' || event === 'push_config') return;
    this.pending.push({ event, args });
    this.history.push(event);
    for (const w of [...this.waiters]) w();
  }

  _take(event) {
    const i = this.pending.findIndex((e) => e.event === event);
    return i < 0 ? undefined : this.pending.splice(i, 1)[0];
  }

  /** The payload of the next unconsumed `event` (the server sends exactly one argument). */
  next(event, timeoutMs = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const e = this._take(event);
        if (!e) return;
        cleanup();
        if (event.startsWith('$') || e.args.length === 1) resolve(e.args[0]);
        else reject(new Error(`${this.label}: "${event}" came with ${e.args.length} arguments: ${JSON.stringify(e.args)}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for "${event}"; `
          + `unconsumed events: ${short(this.pending)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Assert that no (unconsumed) event named in `events` arrives within `ms` (any event when empty). */
  async none(events = [], ms = QUIET_MS) {
    await delay(ms);
    const stray = this.pending.filter((e) => events.length === 0 || events.includes(e.event));
    assert.deepEqual(stray, [], `${this.label}: unexpected events ${short(stray)}`);
  }

  /** Emit without an ack. */
  emit(event, payload = NO_ARG) {
    if (payload === NO_ARG) this.socket.emit(event);
    else this.socket.emit(event, payload);
  }

  /** Emit with an ack callback; resolve with the single ack argument. */
  ack(event, payload = NO_ARG, timeoutMs = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const cb = (err, ...res) => {
        if (err) reject(new Error(`${this.label}: no ack for ${event} within ${timeoutMs} ms`));
        else if (res.length !== 1) reject(new Error(`${this.label}: ack of ${event} has ${res.length} arguments: ${JSON.stringify(res)}`));
        else resolve(res[0]);
      };
      const s = this.socket.timeout(timeoutMs);
      if (payload === NO_ARG) s.emit(event, cb);
      else s.emit(event, payload, cb);
    });
  }

  /** Emit without an ack and expect `signaling_error {event, error}`; returns the error text. */
  async refused(event, payload, errorPrefix) {
    this.emit(event, payload);
    const err = await this.next('signaling_error');
    assert.deepEqual(Object.keys(err).sort(), ['error', 'event'], `signaling_error shape: ${JSON.stringify(err)}`);
    assert.equal(err.event, event, `signaling_error for ${event} (payload ${short(payload)}) names another event`);
    assert.equal(typeof err.error, 'string');
    assert.ok(err.error.startsWith(errorPrefix),
      `${event} ${short(payload)}: expected an error starting ${JSON.stringify(errorPrefix)}, got ${JSON.stringify(err.error)}`);
    return err.error;
  }

  /** Emit with an ack and expect `{ok:false, error}`; returns the error text. */
  async ackRefused(event, payload, errorPrefix) {
    const reply = await this.ack(event, payload);
    assert.deepEqual(Object.keys(reply).sort(), ['error', 'ok'], `${event} ack shape: ${JSON.stringify(reply)}`);
    assert.equal(reply.ok, false, `${event} ${short(payload)} should be refused, ack was ${JSON.stringify(reply)}`);
    assert.equal(typeof reply.error, 'string');
    if (errorPrefix !== undefined) {
      assert.ok(reply.error.startsWith(errorPrefix),
        `${event} ${short(payload)}: expected an ack error starting ${JSON.stringify(errorPrefix)}, got ${JSON.stringify(reply.error)}`);
    }
    return reply.error;
  }

  /** Emit with an ack and expect `{ok:true}`. */
  async ackOk(event, payload) {
    assert.deepEqual(await this.ack(event, payload), { ok: true }, `ack of ${event} ${short(payload)}`);
  }
}

function short(x) {
  if (typeof x === 'symbol') return 'no argument';
  const s = JSON.stringify(x) ?? String(x);
  return s.length > 300 ? `${s.slice(0, 300)}…(${s.length} chars)` : s;
}

/**
 * A test with its own server. `fn(ctx)` gets {server, connect, register, pair, getJson, call}.
 */
function serverTest(name, fn, { args = [] } = {}) {
  test(name, async (t) => {
    const server = await startServer('signalbox', args, { resolve: signalboxBin });
    const peers = [];

    const connect = async (label, opts = {}) => {
      const socket = io(server.url, { forceNew: true, reconnection: false, timeout: 5000, transports: ['websocket'], ...opts });
      const peer = new Peer(socket, label);
      peers.push(peer);
      await withTimeout(new Promise((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('connect_error', (e) => reject(new Error(`${label}: connect_error ${e.message}`)));
      }), 5000, `${label} to connect`);
      peer._take('$connect');
      return peer;
    };

    const register = async (peer, name) => {
      peer.emit('register_user', { userId: name });
      assert.deepEqual(await peer.next('user_registered'), { success: true, userId: name });
      peer.name = name;
      return peer;
    };

    /** Connect and register one user per base name; returns the peers. */
    const users = (...bases) => Promise.all(bases.map(async (b) => {
      const label = typeof b === 'string' ? b : b.name;
      const opts = typeof b === 'string' ? {} : b.opts;
      return register(await connect(label, opts), uname(label));
    }));

    const getJson = async (path) => {
      const res = await fetch(server.url + path, { signal: AbortSignal.timeout(WAIT_MS) });
      assert.equal(res.status, 200, `GET ${path}`);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/, `GET ${path} content-type`);
      return res.json();
    };

    /** caller rings callee (and, unless `answer` is false, callee answers): both verified. */
    const call = async (caller, callee, { answer = true } = {}) => {
      const offer = { type: 'offer', sdp: `v=0 offer ${caller.name}->${callee.name}` };
      caller.emit('make_call', { to: callee.name, from: caller.name, offer });
      assert.deepEqual(await callee.next('incoming_call'), { from: caller.name, offer });
      if (!answer) return;
      const ans = { type: 'answer', sdp: `v=0 answer ${callee.name}->${caller.name}` };
      callee.emit('answer_call', { to: caller.name, from: callee.name, answer: ans });
      assert.deepEqual(await caller.next('call_answered'), { from: callee.name, answer: ans });
    };

    /** ICE relays both ways between a and b (`tag` makes the candidates unique). */
    const iceBothWays = async (a, b, tag) => {
      const ca = { candidate: `candidate:1 1 udp 2122260223 10.0.0.1 5000${tag} typ host`, sdpMid: '0', sdpMLineIndex: 0 };
      const cb = { candidate: `candidate:2 1 udp 2122260223 10.0.0.2 6000${tag} typ host`, sdpMid: '0', sdpMLineIndex: 0 };
      a.emit('ice_candidate', { to: b.name, from: a.name, candidate: ca });
      b.emit('ice_candidate', { to: a.name, from: b.name, candidate: cb });
      assert.deepEqual(await b.next('ice_candidate'), { from: a.name, candidate: ca });
      assert.deepEqual(await a.next('ice_candidate'), { from: b.name, candidate: cb });
    };

    const ctx = { server, connect, register, users, getJson, call, iceBothWays };
    try {
      await withServerLogs(() => server, async () => {
        await fn(ctx, t);
        // Common epilogue: the server is alive and nobody got an unexpected signaling_error.
        assert.equal(server.exited(), false, 'the server exited');
        const health = await getJson('/');
        assert.equal(health.status, 'WebRTC Signaling Server Running');
        for (const p of peers) {
          const stray = p.pending.filter((e) => e.event === 'signaling_error');
          assert.deepEqual(stray, [], `${p.label} got unexpected signaling_error events`);
        }
      })(t);
    } finally {
      for (const p of peers) {
        p.socket.io.reconnection(false);
        p.socket.disconnect();
        p.socket.io.engine?.close();
      }
      await server.stop();
    }
  });
}

// ---------------------------------------------------------------------------
// register_user

// Rows: register_user -> user_registered {success:true, userId}; invalid names
// (empty, > 64 chars, characters outside A-Z a-z 0-9 _ - . @) -> user_registered
// {success:false, userId, error} and nothing registered; ack {ok:true}/{ok:false}.
serverTest('register_user: valid names register, invalid names are refused and register nothing', async ({ connect, getJson }) => {
  const a = await connect('a');
  const name = uname('alice');
  a.emit('register_user', { userId: name });
  assert.deepEqual(await a.next('user_registered'), { success: true, userId: name });

  // Exactly 64 characters using every allowed character class.
  const suffix = `-${++seq}`;
  const long = `Az09_-.@${'x'.repeat(64 - 8 - suffix.length)}${suffix}`;
  assert.equal(long.length, 64);
  const b = await connect('b');
  b.emit('register_user', { userId: long });
  assert.deepEqual(await b.next('user_registered'), { success: true, userId: long });

  const c = await connect('c');
  const invalid = ['', 'x'.repeat(65), 'Bob Smith', 'slash/name', 'émile', 'tab\tname', 'nul\u0000', 'semi;colon', '<script>'];
  for (const bad of invalid) {
    c.emit('register_user', { userId: bad });
    const reply = await c.next('user_registered');
    assert.equal(reply.success, false, `${JSON.stringify(bad)} should be refused`);
    assert.equal(reply.userId, bad);
    assert.equal(typeof reply.error, 'string');
    assert.ok(reply.error.length > 0);
    assert.deepEqual(Object.keys(reply).sort(), ['error', 'success', 'userId']);
  }
  // With an ack: {ok:false, error}; (the seed's user_registered may also come).
  await c.ackRefused('register_user', { userId: 'no spaces allowed' });
  await c.none(['signaling_error']);
  c.pending = c.pending.filter((e) => e.event !== 'user_registered');

  // Nothing of that registered; the refused socket is still unregistered.
  assert.deepEqual(await getJson('/users'), { connectedUsers: [long, name].sort(), totalUsers: 2 });
  await c.refused('make_call', { to: name, from: 'x', offer: { sdp: 'x' } }, 'not registered');

  // Re-registering the same name on the same socket succeeds and changes nothing.
  await a.ackOk('register_user', { userId: name });
  assert.deepEqual(await a.next('user_registered'), { success: true, userId: name });
  await a.none(['force_disconnect', '$disconnect']);
  assert.equal(a.socket.connected, true);
  assert.deepEqual((await getJson('/users')).totalUsers, 2);
});

// ---------------------------------------------------------------------------
// A complete call

// Rows: make_call -> incoming_call {from, offer}; ice_candidate -> ice_candidate
// {from, candidate} both ways while ringing and while active; answer_call ->
// call_answered {from, answer}; end_call -> call_ended {from} (no reason);
// acks {ok:true}; ice_candidate after the end -> "no call with that user".
// Both clients use the default transports (polling, then upgrade to websocket).
serverTest('complete call: offer, trickle ICE before and after the answer, answer, end', async ({ users, getJson }) => {
  const [alice, bob] = await users({ name: 'alice', opts: { transports: ['polling', 'websocket'] } },
    { name: 'bob', opts: { transports: ['polling', 'websocket'] } });

  const offer = {
    type: 'offer',
    sdp: 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n',
    extra: { list: [1, 'two', null, { deep: true }], unicode: 'ü ✓ 🚪', num: 1.5 },
  };
  await alice.ackOk('make_call', { to: bob.name, from: alice.name, offer });
  assert.deepEqual(await bob.next('incoming_call'), { from: alice.name, offer });

  // Trickle ICE before the answer, both ways, several candidates in order.
  const cand = (who, i) => ({ candidate: `candidate:${i} 1 udp 2122260223 192.168.1.${i} ${50000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0, usernameFragment: who });
  await alice.ackOk('ice_candidate', { to: bob.name, from: alice.name, candidate: cand('a', 0) });
  for (let i = 1; i <= 4; i++) alice.emit('ice_candidate', { to: bob.name, from: alice.name, candidate: cand('a', i) });
  for (let i = 0; i <= 4; i++) assert.deepEqual(await bob.next('ice_candidate'), { from: alice.name, candidate: cand('a', i) });
  await bob.ackOk('ice_candidate', { to: alice.name, from: bob.name, candidate: cand('b', 0) });
  bob.emit('ice_candidate', { to: alice.name, from: bob.name, candidate: cand('b', 1) });
  assert.deepEqual(await alice.next('ice_candidate'), { from: bob.name, candidate: cand('b', 0) });
  assert.deepEqual(await alice.next('ice_candidate'), { from: bob.name, candidate: cand('b', 1) });

  const answer = { type: 'answer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' };
  await bob.ackOk('answer_call', { to: alice.name, from: bob.name, answer });
  assert.deepEqual(await alice.next('call_answered'), { from: bob.name, answer });
  assert.equal((await getJson('/')).activeCalls, 1);

  // ICE after the answer, both ways.
  alice.emit('ice_candidate', { to: bob.name, from: alice.name, candidate: cand('a', 9) });
  await bob.ackOk('ice_candidate', { to: alice.name, from: bob.name, candidate: cand('b', 9) });
  assert.deepEqual(await bob.next('ice_candidate'), { from: alice.name, candidate: cand('a', 9) });
  assert.deepEqual(await alice.next('ice_candidate'), { from: bob.name, candidate: cand('b', 9) });

  await alice.ackOk('end_call', { to: bob.name, from: alice.name });
  const ended = await bob.next('call_ended');
  assert.deepEqual(ended, { from: alice.name });
  assert.equal('reason' in ended, false, 'call_ended after end_call carries no reason');
  await alice.none(['call_ended']);
  assert.equal((await getJson('/')).activeCalls, 0);

  // The call is over: no more relaying.
  await alice.refused('ice_candidate', { to: bob.name, from: alice.name, candidate: cand('a', 10) }, 'no call with that user');
  await bob.refused('end_call', { to: alice.name, from: bob.name }, 'no call with that user');
  await bob.none(['ice_candidate']);
});

// ---------------------------------------------------------------------------
// decline_call, and ending a call from either side

// Rows: decline_call -> call_declined {from}; both free afterwards (call again
// in both directions); answer/decline with no ringing call from that user ->
// "no incoming call from that user"; the caller's end_call while ringing
// (cancel) -> callee call_ended {from}; the callee's end_call -> caller call_ended {from}.
serverTest('decline: caller gets call_declined, both can call again; cancel and callee hang-up', async ({ users, call, getJson }) => {
  const [alice, bob, carol] = await users('alice', 'bob', 'carol');

  await call(alice, bob, { answer: false });
  await bob.ackOk('decline_call', { to: alice.name, from: bob.name });
  assert.deepEqual(await alice.next('call_declined'), { from: bob.name });
  assert.equal((await getJson('/')).activeCalls, 0);
  // The declined call is gone.
  await bob.refused('answer_call', { to: alice.name, from: bob.name, answer: { sdp: 'late' } }, 'no incoming call from that user');
  await bob.refused('decline_call', { to: alice.name, from: bob.name }, 'no incoming call from that user');
  await alice.none(['call_answered', 'call_declined']);

  // Both can call again, in both directions: bob -> alice, answered; the callee (alice) hangs up.
  await call(bob, alice);
  alice.emit('end_call', { to: bob.name, from: alice.name });
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name });
  // alice -> bob again; the caller cancels while it rings.
  await call(alice, bob, { answer: false });
  alice.emit('end_call', { to: bob.name, from: alice.name });
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name });
  await bob.refused('answer_call', { to: alice.name, from: bob.name, answer: { sdp: 'x' } }, 'no incoming call from that user');

  // The caller cannot answer or decline its own outgoing call; a callee cannot
  // decline a call from someone who is not ringing it.
  await call(carol, bob, { answer: false });
  await carol.refused('answer_call', { to: bob.name, from: carol.name, answer: { sdp: 'x' } }, 'no incoming call from that user');
  await carol.refused('decline_call', { to: bob.name, from: carol.name }, 'no incoming call from that user');
  await bob.refused('decline_call', { to: alice.name, from: bob.name }, 'no incoming call from that user');
  await carol.none(['call_declined', 'call_answered']);
  // carol's call still rings and can be answered.
  const answer = { type: 'answer', sdp: 'ok' };
  bob.emit('answer_call', { to: carol.name, from: bob.name, answer });
  assert.deepEqual(await carol.next('call_answered'), { from: bob.name, answer });
  // An active call cannot be declined or answered again.
  await bob.refused('decline_call', { to: carol.name, from: bob.name }, 'no incoming call from that user');
  await bob.refused('answer_call', { to: carol.name, from: bob.name, answer }, 'no incoming call from that user');
  await carol.none(['call_declined', 'call_answered', 'call_ended']);
});

// ---------------------------------------------------------------------------
// call_failed

// Rows: make_call to an offline user -> call_failed {error:"user is offline",
// targetUser} (never registered, disconnected, logged out); invalid target name
// -> call_failed error starting "invalid user name"; no signaling_error for these.
serverTest('offline and invalid callees: call_failed, and the caller stays free', async ({ users, connect, register, call, getJson }) => {
  const [alice, bob] = await users('alice', 'bob');
  const ghost = uname('ghost');

  alice.emit('make_call', { to: ghost, from: alice.name, offer: { sdp: 'x' } });
  assert.deepEqual(await alice.next('call_failed'), { error: 'user is offline', targetUser: ghost });

  // A user who was online and disconnected, and one who logged out.
  const gone = await register(await connect('gone'), uname('gone'));
  gone.socket.disconnect();
  await waitUntil(async () => !(await getJson('/users')).connectedUsers.includes(gone.name), WAIT_MS, `${gone.name} to leave`);
  alice.emit('make_call', { to: gone.name, from: alice.name, offer: { sdp: 'x' } });
  assert.deepEqual(await alice.next('call_failed'), { error: 'user is offline', targetUser: gone.name });
  const left = await register(await connect('left'), uname('left'));
  await left.ackOk('logout_user', { userId: left.name });
  alice.emit('make_call', { to: left.name, from: alice.name, offer: { sdp: 'x' } });
  assert.deepEqual(await alice.next('call_failed'), { error: 'user is offline', targetUser: left.name });
  await left.none(['incoming_call']);

  for (const bad of ['bad name', '', 'x'.repeat(65), 'émile']) {
    alice.emit('make_call', { to: bad, from: alice.name, offer: { sdp: 'x' } });
    const failed = await alice.next('call_failed');
    assert.deepEqual(Object.keys(failed).sort(), ['error', 'targetUser']);
    assert.equal(failed.targetUser, bad);
    assert.ok(failed.error.startsWith('invalid user name'), `make_call to ${JSON.stringify(bad)}: ${failed.error}`);
  }
  await alice.none(['signaling_error', 'call_busy']);

  // None of that left alice in a call.
  await call(alice, bob);
});

// ---------------------------------------------------------------------------
// call_busy and "you are already in a call"

// Rows: make_call to the ringing callee / ringing caller / active callee /
// active caller -> call_busy {targetUser}; make_call from the ringing caller,
// the ringing callee, the active caller, the active callee -> call_failed
// "you are already in a call"; make_call to yourself -> "cannot call yourself".
serverTest('busy in all four combinations; already in a call; calling yourself', async ({ users, call, iceBothWays, getJson }) => {
  const [alice, bob, carol, dave] = await users('alice', 'bob', 'carol', 'dave');
  const offer = { type: 'offer', sdp: 'carol' };
  const busy = async (target) => {
    carol.emit('make_call', { to: target.name, from: carol.name, offer });
    assert.deepEqual(await carol.next('call_busy'), { targetUser: target.name });
  };
  const alreadyInCall = async (from, target) => {
    from.emit('make_call', { to: target.name, from: from.name, offer: { sdp: 'again' } });
    assert.deepEqual(await from.next('call_failed'), { error: 'you are already in a call', targetUser: target.name });
  };

  await call(alice, bob, { answer: false });
  await busy(bob); // ringing callee
  await busy(alice); // ringing caller
  await alreadyInCall(alice, dave); // ringing caller calls someone else
  await alreadyInCall(bob, dave); // ringing callee calls someone else
  await alreadyInCall(bob, alice); // ringing callee calls its own caller
  carol.emit('make_call', { to: carol.name, from: carol.name, offer });
  assert.deepEqual(await carol.next('call_failed'), { error: 'cannot call yourself', targetUser: carol.name });
  assert.equal((await getJson('/')).activeCalls, 1);

  // The ringing call is intact: it relays ICE and can be answered.
  await iceBothWays(alice, bob, 1);
  const answer = { type: 'answer', sdp: 'bob' };
  bob.emit('answer_call', { to: alice.name, from: bob.name, answer });
  assert.deepEqual(await alice.next('call_answered'), { from: bob.name, answer });

  await busy(bob); // active callee
  await busy(alice); // active caller
  await alreadyInCall(alice, dave);
  await alreadyInCall(bob, dave);
  await dave.none(['incoming_call']);
  await bob.none(['incoming_call']);
  await alice.none(['incoming_call', 'call_ended']);
  await iceBothWays(alice, bob, 2);
  assert.equal((await getJson('/')).activeCalls, 1);

  // carol was refused several times but is not stuck in anything.
  await call(carol, dave);
  assert.equal((await getJson('/')).activeCalls, 2);
});

// ---------------------------------------------------------------------------
// call_timeout

// Rows: a call ringing unanswered for --call-timeout -> call_timeout {user} to
// BOTH parties, user = the other party; both free again (call each other in
// both directions); answer after the timeout -> "no incoming call from that
// user"; two staggered ringing calls time out each on its own deadline; an
// answered call never times out.
serverTest('call timeout (--call-timeout 800ms): both parties told, both free again', async ({ users, call, iceBothWays, getJson }) => {
  const [alice, bob, carol, dave] = await users('alice', 'bob', 'carol', 'dave');

  const t0 = Date.now();
  await call(alice, bob, { answer: false });
  await delay(300);
  const t1 = Date.now();
  await call(carol, dave, { answer: false });
  assert.equal((await getJson('/')).activeCalls, 2);

  assert.deepEqual(await alice.next('call_timeout'), { user: bob.name });
  assert.deepEqual(await bob.next('call_timeout'), { user: alice.name });
  const e0 = Date.now() - t0;
  assert.ok(e0 >= 750, `alice/bob timed out after ${e0} ms, before the 800 ms call timeout`);
  assert.deepEqual(await carol.next('call_timeout'), { user: dave.name });
  assert.deepEqual(await dave.next('call_timeout'), { user: carol.name });
  const e1 = Date.now() - t1;
  assert.ok(e1 >= 750, `carol/dave timed out after ${e1} ms, before the 800 ms call timeout`);
  assert.equal((await getJson('/')).activeCalls, 0);

  // The rung-out call is gone.
  await bob.refused('answer_call', { to: alice.name, from: bob.name, answer: { sdp: 'late' } }, 'no incoming call from that user');
  await alice.refused('ice_candidate', { to: bob.name, from: alice.name, candidate: { c: 1 } }, 'no call with that user');
  await alice.none(['call_answered', 'call_ended']);

  // Both free again, in both directions; an answered call outlives the timeout.
  await call(bob, alice);
  await call(dave, carol, { answer: false });
  await dave.ackOk('end_call', { to: carol.name, from: dave.name });
  assert.deepEqual(await carol.next('call_ended'), { from: dave.name });
  await alice.none(['call_timeout'], 1100);
  await bob.none(['call_timeout']);
  await carol.none(['call_timeout']);
  await dave.none(['call_timeout']);
  await iceBothWays(alice, bob, 3);
  assert.equal((await getJson('/')).activeCalls, 1);
  alice.emit('end_call', { to: bob.name, from: alice.name });
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name });
  await call(alice, bob);
}, { args: ['--call-timeout', '800ms'] });

// ---------------------------------------------------------------------------
// One device per user: force_disconnect

// Rows: register_user of a name already registered on another socket ->
// force_disconnect {reason:"new_login"} to the old socket, which the server then
// disconnects ("io server disconnect", no automatic reconnection); the peer of
// its call gets call_ended {from, reason:"new_login"}; the new device gets calls.
for (const transport of ['websocket', 'polling']) {
  serverTest(`single device: a new login replaces the old ${transport} socket and ends its call`, async ({ connect, register, users, call, getJson }) => {
    const [bob] = await users('bob');
    const name = uname('alice');
    // The old device would reconnect quickly if it were allowed to.
    const oldDev = await register(await connect('alice@A', {
      transports: [transport], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100, randomizationFactor: 0,
    }), name);
    await call(oldDev, bob);

    const newDev = await connect('alice@B');
    newDev.emit('register_user', { userId: name });
    assert.deepEqual(await newDev.next('user_registered'), { success: true, userId: name });
    newDev.name = name;

    assert.deepEqual(await oldDev.next('force_disconnect'), { reason: 'new_login' },
      `events of the old device: ${short(oldDev.pending)}`);
    assert.equal(await oldDev.next('$disconnect'), 'io server disconnect');
    const fd = oldDev.history.indexOf('force_disconnect');
    const dc = oldDev.history.indexOf('$disconnect');
    assert.ok(fd >= 0 && fd < dc, `force_disconnect must come before the disconnect: ${oldDev.history}`);
    assert.deepEqual(await bob.next('call_ended'), { from: name, reason: 'new_login' });

    // The old device stays disconnected.
    await oldDev.none([], 500);
    assert.equal(oldDev.socket.connected, false);
    assert.deepEqual(oldDev.history.slice(dc + 1), [], `old device reconnected or got more events: ${oldDev.history}`);
    await newDev.none(['force_disconnect', '$disconnect'], 0);
    assert.equal(newDev.socket.connected, true);

    assert.deepEqual(await getJson('/users'), { connectedUsers: [name, bob.name].sort(), totalUsers: 2 });
    assert.equal((await getJson('/')).activeCalls, 0);

    // Calls now reach the new device.
    await call(bob, newDev);
    await oldDev.none(['incoming_call'], 0);
  });
}

// ---------------------------------------------------------------------------
// Leaving by disconnection

// Rows: the connection of a party closes -> the peer gets call_ended {from,
// reason:"disconnected"}: active call (clean socket.disconnect()), ringing
// caller (abrupt transport close), ringing callee (abrupt transport close);
// the user is unregistered and the peer is free again.
serverTest('disconnect mid-call and while ringing: the peer gets call_ended reason "disconnected"', async ({ users, call, getJson }) => {
  const [alice, bob, carol, dave, erin, frank] = await users('alice', 'bob', 'carol', 'dave', 'erin', 'frank');

  await call(alice, bob);
  alice.socket.disconnect();
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name, reason: 'disconnected' });

  await call(carol, dave, { answer: false });
  carol.socket.io.engine.close(); // the caller's transport drops while ringing
  assert.deepEqual(await dave.next('call_ended'), { from: carol.name, reason: 'disconnected' });

  await call(erin, frank, { answer: false });
  frank.socket.io.engine.close(); // the callee's transport drops while ringing
  assert.deepEqual(await erin.next('call_ended'), { from: frank.name, reason: 'disconnected' });

  const users_ = await getJson('/users');
  assert.deepEqual(users_, { connectedUsers: [bob.name, dave.name, erin.name].sort(), totalUsers: 3 });
  assert.equal((await getJson('/')).activeCalls, 0);

  // The survivors are free: they can call each other; the gone users are offline.
  bob.emit('make_call', { to: alice.name, from: bob.name, offer: { sdp: 'x' } });
  assert.deepEqual(await bob.next('call_failed'), { error: 'user is offline', targetUser: alice.name });
  await call(bob, dave);
  erin.emit('make_call', { to: bob.name, from: erin.name, offer: { sdp: 'x' } });
  assert.deepEqual(await erin.next('call_busy'), { targetUser: bob.name });
}, {
  // The seed's behaviour: a lost transport ends the call at once. By default
  // it is held for the reconnect grace instead (tests/e2e/recovery.test.mjs).
  args: ['--reconnect-grace', '0s'],
});

// ---------------------------------------------------------------------------
// logout_user

// Rows: logout_user {userId} mid-call -> the peer gets call_ended {from,
// reason:"logged_out"}; the user leaves GET /users; the socket stays connected
// but is unregistered ("not registered"), and is offline to callers; it can
// register again; logout while ringing; logout naming another user ->
// "cannot log out another user".
serverTest('logout_user: the peer gets call_ended reason "logged_out" and the user disappears', async ({ users, call, getJson }) => {
  const [alice, bob, carol] = await users('alice', 'bob', 'carol');
  await call(alice, bob);
  assert.equal((await getJson('/')).connectedUsers, 3);

  await carol.refused('logout_user', { userId: alice.name }, 'cannot log out another user');
  assert.equal((await getJson('/users')).totalUsers, 3);

  await alice.ackOk('logout_user', { userId: alice.name });
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name, reason: 'logged_out' });
  await alice.none(['call_ended', '$disconnect']);
  assert.equal(alice.socket.connected, true);
  assert.deepEqual(await getJson('/users'), { connectedUsers: [bob.name, carol.name].sort(), totalUsers: 2 });
  assert.deepEqual({ ...(await getJson('/')), timestamp: 0 }, {
    status: 'WebRTC Signaling Server Running', connectedUsers: 2, activeCalls: 0, timestamp: 0,
  });

  await alice.refused('make_call', { to: bob.name, from: alice.name, offer: { sdp: 'x' } }, 'not registered');
  bob.emit('make_call', { to: alice.name, from: bob.name, offer: { sdp: 'x' } });
  assert.deepEqual(await bob.next('call_failed'), { error: 'user is offline', targetUser: alice.name });

  // Register again, then log out while ringing (as the callee).
  alice.emit('register_user', { userId: alice.name });
  assert.deepEqual(await alice.next('user_registered'), { success: true, userId: alice.name });
  await call(carol, alice, { answer: false });
  alice.emit('logout_user', { userId: alice.name });
  assert.deepEqual(await carol.next('call_ended'), { from: alice.name, reason: 'logged_out' });
  assert.equal((await getJson('/')).activeCalls, 0);
  await call(carol, bob);
});

// ---------------------------------------------------------------------------
// Mixed transports

// Rows: every call event relayed between a websocket-only client and a
// polling-only client, in both directions (make_call/incoming_call,
// ice_candidate both ways before and after the answer, answer_call/call_answered,
// end_call/call_ended, decline_call/call_declined).
serverTest('websocket-only client and polling-only client call each other both ways', async ({ users, call, iceBothWays }) => {
  const [ws, poll] = await users({ name: 'wsuser', opts: { transports: ['websocket'] } },
    { name: 'polluser', opts: { transports: ['polling'] } });
  let upgrades = 0;
  poll.socket.io.engine.on('upgrading', () => upgrades++);
  poll.socket.io.engine.on('upgrade', () => upgrades++);
  assert.equal(ws.socket.io.engine.transport.name, 'websocket');
  assert.equal(poll.socket.io.engine.transport.name, 'polling');

  for (const [caller, callee] of [[ws, poll], [poll, ws]]) {
    await call(caller, callee, { answer: false });
    await iceBothWays(caller, callee, 1); // before the answer
    const answer = { type: 'answer', sdp: `answer from ${callee.name}` };
    await callee.ackOk('answer_call', { to: caller.name, from: callee.name, answer });
    assert.deepEqual(await caller.next('call_answered'), { from: callee.name, answer });
    await iceBothWays(caller, callee, 2); // after the answer
    await iceBothWays(callee, caller, 3);
    await callee.ackOk('end_call', { to: caller.name, from: callee.name });
    assert.deepEqual(await caller.next('call_ended'), { from: callee.name });

    await call(caller, callee, { answer: false });
    callee.emit('decline_call', { to: caller.name, from: callee.name });
    assert.deepEqual(await caller.next('call_declined'), { from: callee.name });
  }
  assert.equal(poll.socket.io.engine.transport.name, 'polling');
  assert.equal(upgrades, 0);
});

// ---------------------------------------------------------------------------
// Identity belongs to the socket

// Rows: the `from` a client writes is ignored: end_call / ice_candidate /
// answer_call / decline_call with a forged `from` cannot touch someone else's
// call (signaling_error or ack error); make_call with a forged `from` to a busy
// user -> call_busy; make_call {from:"concierge"} reaches the callee as
// incoming_call {from: <the real name>}; answer_call with a forged from ->
// call_answered {from: <the real name>}.
serverTest("forged `from`: cannot end or start someone else's call; outgoing events carry the real name", async ({ users, call, iceBothWays, getJson }) => {
  const [alice, bob, mallory, carol] = await users('alice', 'bob', 'mallory', 'carol');
  await call(alice, bob);

  await mallory.refused('end_call', { to: bob.name, from: alice.name }, 'no call with that user');
  await mallory.ackRefused('end_call', { to: alice.name, from: bob.name }, 'no call with that user');
  await mallory.refused('ice_candidate', { to: bob.name, from: alice.name, candidate: { c: 'evil' } }, 'no call with that user');
  await mallory.refused('answer_call', { to: alice.name, from: bob.name, answer: { sdp: 'evil' } }, 'no incoming call from that user');
  await mallory.refused('decline_call', { to: alice.name, from: bob.name }, 'no incoming call from that user');
  mallory.emit('make_call', { to: bob.name, from: alice.name, offer: { sdp: 'evil' } });
  assert.deepEqual(await mallory.next('call_busy'), { targetUser: bob.name });
  await alice.none(['call_ended', 'ice_candidate', 'call_answered', 'call_declined', 'incoming_call']);
  await bob.none(['call_ended', 'ice_candidate', 'incoming_call'], 0);
  // The call is untouched.
  await iceBothWays(alice, bob, 1);
  assert.equal((await getJson('/')).activeCalls, 1);

  alice.emit('end_call', { to: bob.name, from: alice.name });
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name });

  // bob is free: carol's make_call with a forged from reaches bob under carol's name.
  const offer = { type: 'offer', sdp: 'from carol' };
  carol.emit('make_call', { to: bob.name, from: 'concierge', offer });
  assert.deepEqual(await bob.next('incoming_call'), { from: carol.name, offer });
  // mallory cannot decline or answer it on bob's behalf.
  await mallory.refused('decline_call', { to: carol.name, from: bob.name }, 'no incoming call from that user');
  await mallory.refused('answer_call', { to: carol.name, from: bob.name, answer: { sdp: 'x' } }, 'no incoming call from that user');
  await carol.none(['call_declined', 'call_answered']);
  // bob answers with a forged from: carol sees bob's real name.
  const answer = { type: 'answer', sdp: 'from bob' };
  bob.emit('answer_call', { to: carol.name, from: 'concierge', answer });
  assert.deepEqual(await carol.next('call_answered'), { from: bob.name, answer });
  carol.emit('ice_candidate', { to: bob.name, from: 'concierge', candidate: { c: 1 } });
  assert.deepEqual(await bob.next('ice_candidate'), { from: carol.name, candidate: { c: 1 } });
  bob.emit('end_call', { to: carol.name, from: 'concierge' });
  assert.deepEqual(await carol.next('call_ended'), { from: bob.name });
});

// ---------------------------------------------------------------------------
// Malformed payloads and unregistered senders

// Rows: every client event with a payload that is not an object, an array, a
// number, null, a boolean, no argument, {}, missing fields, wrong field types,
// an offer/answer larger than 64 KiB -> ack {ok:false, error:"invalid payload..."}
// with an ack, signaling_error {event, error:"invalid payload..."} without; the
// server survives and the alice<->bob call is untouched. Every call event from
// a socket that never registered -> "not registered".
serverTest('malformed payloads for every client event are refused; the server and the call survive', async ({ users, connect, call, iceBothWays, getJson }) => {
  const [alice, bob, mallory] = await users('alice', 'bob', 'mallory');
  await call(alice, bob);

  const huge = { type: 'offer', sdp: 'a'.repeat(70 * 1024) };
  const notObjects = ['a string', ['an', 'array'], [{ to: bob.name }], 42, 0, null, true, NO_ARG];
  const cases = {
    register_user: [{}, { userId: {} }, { userId: 5 }, { userId: null }, { userId: [alice.name] }, { user: 'x' }],
    make_call: [{}, { to: 5, offer: {} }, { to: bob.name }, { offer: { sdp: 'x' } }, { to: null, offer: {} },
      { to: [bob.name], offer: {} }, { to: { name: bob.name }, offer: {} }, { to: bob.name, offer: huge }],
    answer_call: [{}, { to: alice.name }, { answer: {} }, { to: 5, answer: {} }, { to: alice.name, answer: huge }],
    decline_call: [{}, { to: 5 }, { to: {} }, { to: null }, { from: alice.name }],
    end_call: [{}, { to: 5 }, { to: [bob.name] }, { to: null }, { from: alice.name }],
    ice_candidate: [{}, { to: alice.name }, { candidate: {} }, { to: 5, candidate: {} }, { to: false, candidate: {} }],
    logout_user: [{ userId: 5 }, { userId: {} }, { userId: [mallory.name] }],
  };
  let n = 0;
  for (const [event, specific] of Object.entries(cases)) {
    for (const payload of [...notObjects, ...specific]) {
      await mallory.ackRefused(event, payload, 'invalid payload');
      await mallory.refused(event, payload, 'invalid payload');
      n++;
    }
  }
  assert.ok(n > 70);
  await mallory.none(['signaling_error', 'incoming_call', 'call_busy', 'call_failed']);
  mallory.pending = mallory.pending.filter((e) => e.event !== 'user_registered');

  // Nothing happened to anyone: the call still relays, nobody was registered,
  // unregistered or called.
  assert.equal(mallory.socket.connected, true);
  await iceBothWays(alice, bob, 1);
  const health = await getJson('/');
  assert.equal(health.activeCalls, 1);
  assert.equal(health.connectedUsers, 3);
  assert.deepEqual(await getJson('/users'), { connectedUsers: [alice.name, bob.name, mallory.name].sort(), totalUsers: 3 });
  await alice.none(['incoming_call', 'call_ended', 'call_answered', 'call_declined', 'ice_candidate'], 0);
  await bob.none(['incoming_call', 'call_ended', 'call_answered', 'call_declined', 'ice_candidate'], 0);

  // A socket that never registered: every call event (valid payloads) -> "not registered".
  const anon = await connect('anon');
  const valid = {
    make_call: { to: alice.name, from: bob.name, offer: { sdp: 'x' } },
    answer_call: { to: alice.name, from: bob.name, answer: { sdp: 'x' } },
    decline_call: { to: alice.name, from: bob.name },
    end_call: { to: alice.name, from: bob.name },
    ice_candidate: { to: alice.name, from: bob.name, candidate: { c: 1 } },
    logout_user: { userId: alice.name },
  };
  for (const [event, payload] of Object.entries(valid)) {
    await anon.refused(event, payload, 'not registered');
    await anon.ackRefused(event, payload, 'not registered');
  }
  await anon.none(['call_failed', 'call_busy']);
  await alice.none(['incoming_call', 'call_ended', 'ice_candidate', 'call_answered', 'call_declined'], 0);
  await bob.none(['call_ended', 'ice_candidate'], 0);
  await iceBothWays(alice, bob, 2);
  assert.equal((await getJson('/')).activeCalls, 1);
  assert.equal((await getJson('/users')).totalUsers, 3);
}, { args: ['--event-burst', '1000'] }); // one socket sends every malformed payload at once

// ---------------------------------------------------------------------------
// REST

// Rows: GET / -> {status, connectedUsers (registered), activeCalls (ringing or
// active), timestamp (ISO 8601 UTC)}; GET /users -> {connectedUsers: sorted, totalUsers}:
// before/after register, ringing, answered, ended, after a disconnect.
serverTest('GET / and GET /users follow registrations, calls and disconnections', async ({ server, connect, register, call, getJson }) => {
  const health = async (users, calls) => {
    const before = Date.now();
    const h = await getJson('/');
    assert.deepEqual(Object.keys(h).sort(), ['activeCalls', 'connectedUsers', 'status', 'timestamp']);
    assert.equal(h.status, 'WebRTC Signaling Server Running');
    assert.equal(h.connectedUsers, users, `GET / connectedUsers: ${JSON.stringify(h)}`);
    assert.equal(h.activeCalls, calls, `GET / activeCalls: ${JSON.stringify(h)}`);
    assert.match(h.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    const ts = new Date(h.timestamp).getTime();
    assert.ok(!Number.isNaN(ts), `timestamp ${h.timestamp} does not parse`);
    assert.ok(Math.abs(ts - before) < 5000, `timestamp ${h.timestamp} is not now`);
  };
  const usersPage = async (names) => {
    assert.deepEqual(await getJson('/users'), { connectedUsers: [...names].sort(), totalUsers: names.length });
  };

  await health(0, 0);
  await usersPage([]);
  // Connected but not registered sockets do not count.
  const [zed, alice, bob, mike] = await Promise.all(['zed', 'alice', 'bob', 'Mike'].map((l) => connect(l)));
  await health(0, 0);
  await usersPage([]);

  // Registered out of order: /users is sorted (byte order: uppercase first).
  for (const [peer, base] of [[zed, 'zed'], [alice, 'alice'], [mike, 'Mike'], [bob, 'bob']]) await register(peer, uname(base));
  await health(4, 0);
  await usersPage([zed.name, alice.name, mike.name, bob.name]);
  const listed = (await getJson('/users')).connectedUsers;
  assert.deepEqual(listed, [...listed].sort(), '/users is sorted');

  await call(alice, bob, { answer: false });
  await health(4, 1); // ringing
  const answer = { type: 'answer', sdp: 'x' };
  bob.emit('answer_call', { to: alice.name, from: bob.name, answer });
  assert.deepEqual(await alice.next('call_answered'), { from: bob.name, answer });
  await health(4, 1); // active
  await call(zed, mike, { answer: false });
  await health(4, 2);
  alice.emit('end_call', { to: bob.name, from: alice.name });
  assert.deepEqual(await bob.next('call_ended'), { from: alice.name });
  await health(4, 1); // ended
  mike.emit('decline_call', { to: zed.name, from: mike.name });
  assert.deepEqual(await zed.next('call_declined'), { from: mike.name });
  await health(4, 0);

  zed.socket.disconnect();
  await waitUntil(async () => (await getJson('/users')).totalUsers === 3, WAIT_MS, 'zed to leave GET /users');
  await health(3, 0);
  await usersPage([alice.name, mike.name, bob.name]);

  // Other paths are not these pages.
  const res = await fetch(`${server.url}/nope`, { signal: AbortSignal.timeout(WAIT_MS) });
  assert.notEqual(res.status, 200);
  await res.arrayBuffer();
});

// ---------------------------------------------------------------------------
// Acks

// Rows: with an ack callback every client event is answered {ok:true} or
// {ok:false, error} and no signaling_error is emitted; make_call refusals also
// send their call_failed / call_busy; error strings as for signaling_error.
serverTest('acks: {ok:true} on success, {ok:false, error} on refusal, and then no signaling_error', async ({ users, connect, getJson }) => {
  const [alice, bob, carol] = await users('alice', 'bob', 'carol');
  const anon = await connect('anon');
  const ghost = uname('ghost');

  // Refusals with an ack: no signaling_error.
  await anon.ackRefused('end_call', { to: alice.name, from: 'x' }, 'not registered');
  await alice.ackRefused('answer_call', { to: bob.name, from: alice.name, answer: {} }, 'no incoming call from that user');
  await alice.ackRefused('decline_call', { to: bob.name, from: alice.name }, 'no incoming call from that user');
  await alice.ackRefused('end_call', { to: bob.name, from: alice.name }, 'no call with that user');
  await alice.ackRefused('ice_candidate', { to: bob.name, from: alice.name, candidate: {} }, 'no call with that user');
  await alice.ackRefused('logout_user', { userId: bob.name }, 'cannot log out another user');
  await alice.ackRefused('make_call', 'not an object', 'invalid payload');
  await alice.ackRefused('register_user', NO_ARG, 'invalid payload');

  // make_call refusals with an ack: ack error AND the seed's event.
  assert.equal(await alice.ackRefused('make_call', { to: ghost, from: alice.name, offer: {} }, 'user is offline'), 'user is offline');
  assert.deepEqual(await alice.next('call_failed'), { error: 'user is offline', targetUser: ghost });
  await alice.ackRefused('make_call', { to: alice.name, from: alice.name, offer: {} }, 'cannot call yourself');
  assert.deepEqual(await alice.next('call_failed'), { error: 'cannot call yourself', targetUser: alice.name });
  await alice.ackRefused('make_call', { to: 'no good', from: alice.name, offer: {} }, 'invalid user name');
  assert.equal((await alice.next('call_failed')).targetUser, 'no good');

  // Successes.
  const offer = { type: 'offer', sdp: 'o' };
  await alice.ackOk('make_call', { to: bob.name, from: alice.name, offer });
  assert.deepEqual(await bob.next('incoming_call'), { from: alice.name, offer });
  await carol.ackRefused('make_call', { to: bob.name, from: carol.name, offer }); // busy
  assert.deepEqual(await carol.next('call_busy'), { targetUser: bob.name });
  await alice.ackRefused('make_call', { to: carol.name, from: alice.name, offer }, 'you are already in a call');
  assert.deepEqual(await alice.next('call_failed'), { error: 'you are already in a call', targetUser: carol.name });
  await alice.ackOk('ice_candidate', { to: bob.name, from: alice.name, candidate: { c: 1 } });
  assert.deepEqual(await bob.next('ice_candidate'), { from: alice.name, candidate: { c: 1 } });
  await bob.ackOk('decline_call', { to: alice.name, from: bob.name });
  assert.deepEqual(await alice.next('call_declined'), { from: bob.name });
  await alice.ackOk('make_call', { to: bob.name, from: alice.name, offer });
  await bob.next('incoming_call');
  await bob.ackOk('answer_call', { to: alice.name, from: bob.name, answer: { sdp: 'a' } });
  await alice.next('call_answered');
  await bob.ackOk('end_call', { to: alice.name, from: bob.name });
  await alice.next('call_ended');
  await carol.ackOk('logout_user', { userId: carol.name });
  await carol.ackOk('register_user', { userId: carol.name });
  assert.deepEqual(await carol.next('user_registered'), { success: true, userId: carol.name });

  // None of the acked refusals produced a signaling_error (nor anything else unexpected).
  for (const p of [alice, bob, carol, anon]) await p.none(['signaling_error', 'call_failed', 'call_busy'], p === alice ? QUIET_MS : 0);
  assert.equal((await getJson('/')).activeCalls, 0);
});
