// Calls that survive the network, with unmodified clients: Socket.IO
// connection state recovery (socket.io-client 4.6+ recovers by itself), the
// reconnect grace that keeps a user registered and in their call while their
// connection is down, re-registration from a new socket taking the call over,
// and call_update. Also a python-socketio client whose handlers take one
// argument, which offsets would break.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { createServer, connect as tcpConnect } from 'node:net';
import { createInterface } from 'node:readline';
import { io } from 'socket.io-client';
import { REPO_ROOT, signalboxBin, startServer, waitUntil, withServerLogs, withTimeout } from './helpers.mjs';

const WAIT_MS = 5000;
let seq = 0;
const uname = (base) => `${base}-r${++seq}`;

/** A socket.io-client socket that records every event with all its arguments. */
class Device {
  constructor(url, opts = {}) {
    this.socket = io(url, {
      forceNew: true,
      transports: ['websocket'],
      reconnectionDelay: 50,
      reconnectionDelayMax: 100,
      randomizationFactor: 0,
      ...opts,
    });
    this.events = []; // {event, args}
    this.waiters = new Set();
    this.socket.onAny((event, ...args) => this._push(event, args));
    this.socket.on('connect', () => this._push('$connect', [this.socket.recovered, this.socket.id]));
    this.socket.on('disconnect', (reason) => this._push('$disconnect', [reason]));
  }

  _push(event, args) {
    this.events.push({ event, args });
    for (const w of [...this.waiters]) w();
  }

  /** The next `event` not taken yet: its arguments (all of them). */
  take(event, timeoutMs = WAIT_MS) {
    return withTimeout(new Promise((resolve) => {
      const check = () => {
        const i = this.events.findIndex((e) => e.event === event);
        if (i < 0) return;
        this.waiters.delete(check);
        resolve(this.events.splice(i, 1)[0].args);
      };
      this.waiters.add(check);
      check();
    }), timeoutMs, `${this.name ?? 'device'}: "${event}"; has ${JSON.stringify(this.events.map((e) => e.event))}`);
  }

  /** Every `event` not taken yet, taken now. */
  takeAll(event) {
    const all = this.events.filter((e) => e.event === event).map((e) => e.args);
    this.events = this.events.filter((e) => e.event !== event);
    return all;
  }

  emit(event, payload) {
    this.socket.emit(event, payload);
  }

  async register(name) {
    this.name = name;
    await this.take('$connect');
    this.emit('register_user', { userId: name });
    const [reply] = await this.take('user_registered');
    assert.equal(reply.success, true, JSON.stringify(reply));
    return this;
  }

  close() {
    this.socket.disconnect();
  }

  /** The TCP socket under the WebSocket transport (the `ws` library's). */
  tcp() {
    return this.socket.io.engine.transport.ws._socket;
  }
}

/**
 * A TCP proxy in front of the server, to lose a connection the way a network
 * does: `freeze()` stops carrying what the server sends (it stays here, in
 * flight), `cut()` drops every connection without a word to either side.
 */
async function lossyProxy(url) {
  const target = new URL(url);
  const pairs = new Set();
  const silent = [];
  const proxy = createServer((client) => {
    const upstream = tcpConnect(Number(target.port), target.hostname);
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    freeze() {
      for (const { client, upstream } of pairs) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    cut() {
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
    },
    /** The client's side goes; the server's stays open and hears nothing. */
    cutClientSide() {
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        pair.upstream.removeAllListeners('close').removeAllListeners('error').on('error', () => {});
        pair.upstream.unpipe(pair.client);
        pair.client.removeAllListeners('close').removeAllListeners('error').on('error', () => {});
        pair.client.resetAndDestroy();
        silent.push(pair.upstream);
      }
    },
    close: () => {
      for (const upstream of silent) upstream.destroy();
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise((r) => proxy.close(r));
    },
  };
}

const offer = { type: 'offer', sdp: 'v=0 offer' };
const answer = { type: 'answer', sdp: 'v=0 answer' };
const candidate = (n) => ({ candidate: `candidate:${n} 1 udp 2122260223 10.0.0.1 ${5000 + n} typ host`, sdpMid: '0', sdpMLineIndex: 0 });

/** caller calls callee; unless `ring`, the callee answers. */
async function call(caller, callee, { ring = false } = {}) {
  caller.emit('make_call', { to: callee.name, from: caller.name, offer });
  await callee.take('incoming_call');
  if (ring) return;
  callee.emit('answer_call', { to: caller.name, from: callee.name, answer });
  await caller.take('call_answered');
}

/** `from` sends candidates `ns` to `to`; `to` must get them, each once and in order. */
function sendCandidates(from, to, ns) {
  for (const n of ns) from.emit('ice_candidate', { to: to.name, from: from.name, candidate: candidate(n) });
}

function candidatesOf(args) {
  return args.map(([payload]) => payload.candidate.candidate.split(' ')[0].split(':')[1]).map(Number);
}

function recoveryTest(name, fn, { args = [] } = {}) {
  test(name, async () => {
    const server = await startServer('signalbox', args, { resolve: signalboxBin });
    const devices = [];
    const device = (opts) => {
      const d = new Device(server.url, opts);
      devices.push(d);
      return d;
    };
    try {
      await withServerLogs(() => server, () => fn({ server, device }))();
    } finally {
      for (const d of devices) d.close();
      await server.stop();
    }
  });
}

async function metric(server, name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

for (const offsets of [false, true]) {
  const args = offsets ? ['--recovery-offsets'] : [];
  const label = offsets ? ' (--recovery-offsets)' : '';

  recoveryTest(`engine.close() mid-call: recovered, same id, each missed event once, the call goes on${label}`, async ({ server, device }) => {
    const alice = await device().register(uname('alice'));
    const bob = await device().register(uname('bob'));
    await call(alice, bob);
    const id = bob.socket.id;
    bob.socket.io.engine.close();
    const [away] = await alice.take('peer_reconnecting');
    assert.deepEqual(away, { from: bob.name });
    sendCandidates(alice, bob, [1, 2, 3]);
    const [recovered, sameId] = await bob.take('$connect');
    assert.equal(recovered, true, 'socket.recovered');
    assert.equal(sameId, id);
    const got = bob.takeAll('ice_candidate');
    assert.deepEqual(candidatesOf(got), [1, 2, 3]);
    for (const eventArgs of got) {
      // An offset is an extra string argument, only with the flag.
      assert.equal(eventArgs.length, offsets ? 2 : 1, JSON.stringify(eventArgs));
      if (offsets) assert.equal(typeof eventArgs[1], 'string');
    }
    assert.deepEqual((await alice.take('peer_reconnected'))[0], { from: bob.name });
    // The call goes on both ways, with a renegotiation (an ICE restart).
    sendCandidates(bob, alice, [4]);
    assert.deepEqual(candidatesOf([await alice.take('ice_candidate')]), [4]);
    const restart = { type: 'offer', sdp: 'v=0 ice restart' };
    bob.emit('call_update', { to: alice.name, from: bob.name, description: restart });
    assert.deepEqual((await alice.take('call_update'))[0], { from: bob.name, description: restart });
    alice.emit('call_update', { to: bob.name, from: alice.name, description: answer });
    assert.deepEqual((await bob.take('call_update'))[0], { from: alice.name, description: answer });
    assert.equal(await metric(server, 'signalbox_recovered_sockets_total'), 1);
    assert.equal(await metric(server, 'signalbox_held_users'), 0);
  }, { args });

  recoveryTest(`engine.close() while ringing, twice in a row, and before any event: recovered each time${label}`, async ({ device }) => {
    const carol = await device().register(uname('carol'));
    const dave = await device().register(uname('dave'));
    await call(carol, dave, { ring: true });
    const id = dave.socket.id;
    for (const round of [1, 2]) {
      dave.socket.io.engine.close();
      await carol.take('peer_reconnecting');
      sendCandidates(carol, dave, [round]);
      const [recovered, sameId] = await dave.take('$connect');
      assert.equal(recovered, true);
      assert.equal(sameId, id);
      assert.deepEqual(candidatesOf(dave.takeAll('ice_candidate')), [round]);
      await carol.take('peer_reconnected');
    }
    dave.emit('answer_call', { to: carol.name, from: dave.name, answer });
    await carol.take('call_answered');
    // A socket that never received an event recovers too (socket.io #4888).
    const quiet = device();
    await quiet.take('$connect');
    const quietId = quiet.socket.id;
    quiet.socket.io.engine.close();
    const [recovered, sameId] = await quiet.take('$connect');
    assert.equal(recovered, true);
    assert.equal(sameId, quietId);
  }, { args });
}

for (const offsets of [true, false]) {
  recoveryTest(`events in flight when the connection died are sent again after the last offset with --recovery-offsets${offsets ? '' : ' (not without)'}`, async ({ server, device }) => {
    const proxy = await lossyProxy(server.url);
    try {
      const alice = await device().register(uname('alice'));
      const bob = await new Device(proxy.url).register(uname('bob'));
      await call(alice, bob);
      // What the server sends bob now stays in the network, then is lost.
      proxy.freeze();
      for (const n of [1, 2, 3]) {
        // Acked once the hub relayed it to bob's connection.
        await alice.socket.emitWithAck('ice_candidate', { to: bob.name, from: alice.name, candidate: candidate(n) });
      }
      proxy.cut();
      await alice.take('peer_reconnecting');
      sendCandidates(alice, bob, [4]);
      const [recovered] = await bob.take('$connect');
      assert.equal(recovered, true);
      assert.deepEqual(candidatesOf(bob.takeAll('ice_candidate')), offsets ? [1, 2, 3, 4] : [4]);
      bob.close();
    } finally {
      await proxy.close();
    }
  }, { args: offsets ? ['--recovery-offsets'] : [] });
}

for (const offsets of [false, true]) {
  recoveryTest(`a connection lost without a word to the server: the client takes its socket over with its pid, and the call never notices${offsets ? ' (--recovery-offsets: and what was in flight comes again)' : ''}`, async ({ server, device }) => {
    const proxy = await lossyProxy(server.url);
    try {
      const alice = await device().register(uname('alice'));
      const bob = await new Device(proxy.url).register(uname('bob'));
      await call(alice, bob);
      const id = bob.socket.id;
      proxy.freeze();
      for (const n of [1, 2]) {
        await alice.socket.emitWithAck('ice_candidate', { to: bob.name, from: alice.name, candidate: candidate(n) });
      }
      // bob's side of the network is gone; the server still sees a live
      // connection, and would until the ping timeout.
      proxy.cutClientSide();
      const [recovered, sameId] = await bob.take('$connect');
      assert.equal(recovered, true);
      assert.equal(sameId, id);
      // Written to the old connection, so in flight: sent again only with offsets.
      assert.deepEqual(candidatesOf(bob.takeAll('ice_candidate')), offsets ? [1, 2] : []);
      assert.deepEqual(alice.takeAll('peer_reconnecting'), []);
      sendCandidates(alice, bob, [3]);
      assert.deepEqual(candidatesOf([await bob.take('ice_candidate')]), [3]);
      sendCandidates(bob, alice, [4]);
      assert.deepEqual(candidatesOf([await alice.take('ice_candidate')]), [4]);
      assert.equal(await metric(server, 'signalbox_recovered_sockets_total'), 1);
      bob.close();
    } finally {
      await proxy.close();
    }
  }, { args: offsets ? ['--recovery-offsets'] : [] });
}

recoveryTest('an abrupt TCP loss, then a new socket registering the same name: the call goes on, queued candidates arrive', async ({ server, device }) => {
  const alice = await device().register(uname('alice'));
  const bob = await device({ reconnection: false }).register(uname('bob'));
  await call(alice, bob);
  bob.tcp().destroy(); // no close frame, no close packet
  await alice.take('peer_reconnecting');
  assert.equal(await metric(server, 'signalbox_held_users'), 1);
  sendCandidates(alice, bob, [1, 2]);
  // A new client, knowing nothing of the old socket, registers bob again.
  const bob2 = await device().register(bob.name);
  await waitUntil(() => bob2.events.filter((e) => e.event === 'ice_candidate').length === 2, WAIT_MS, 'the kept candidates');
  assert.deepEqual(candidatesOf(bob2.takeAll('ice_candidate')), [1, 2]);
  await alice.take('peer_reconnected');
  assert.deepEqual(alice.takeAll('call_ended'), []);
  sendCandidates(bob2, alice, [3]);
  assert.deepEqual(candidatesOf([await alice.take('ice_candidate')]), [3]);
  bob2.emit('end_call', { to: alice.name, from: bob.name });
  assert.deepEqual((await alice.take('call_ended'))[0], { from: bob.name });
  assert.equal(await metric(server, 'signalbox_reconnect_graces_total{outcome="resumed"}'), 1);
});

recoveryTest('the grace running out ends the call as a disconnect; socket.disconnect() ends it at once', async ({ server, device }) => {
  const alice = await device().register(uname('alice'));
  const bob = await device({ reconnection: false }).register(uname('bob'));
  await call(alice, bob);
  bob.tcp().destroy();
  await alice.take('peer_reconnecting');
  const [ended] = await alice.take('call_ended', 5000);
  assert.deepEqual(ended, { from: bob.name, reason: 'disconnected' });
  assert.equal(await metric(server, 'signalbox_reconnect_graces_total{outcome="lapsed"}'), 1);
  const users = await (await fetch(`${server.url}/users`)).json();
  assert.deepEqual(users.connectedUsers, [alice.name]);
  // Leaving on purpose is not a lost connection.
  const carol = await device().register(uname('carol'));
  await call(alice, carol);
  carol.socket.disconnect();
  const [gone] = await alice.take('call_ended');
  assert.deepEqual(gone, { from: carol.name, reason: 'disconnected' });
  assert.deepEqual(alice.takeAll('peer_reconnecting'), []);
}, { args: ['--reconnect-grace', '1s'] });

const PYTHON = process.env.E2E_PYTHON ?? resolvePath(REPO_ROOT, 'target', 'e2e-python', 'bin', 'python');

recoveryTest('python-socketio with one-argument handlers keeps working with the defaults', async ({ server, device }) => {
  assert.ok(existsSync(PYTHON), `python-socketio is installed by tests/run at ${PYTHON}`);
  const name = uname('py');
  const py = spawn(PYTHON, [resolvePath(REPO_ROOT, 'tests', 'e2e', 'one_arg_client.py'), server.url, name], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = [];
  createInterface({ input: py.stdout }).on('line', (l) => lines.push(l));
  try {
    await waitUntil(() => lines.includes('registered'), 10_000, 'the python client to register');
    const alice = await device().register(uname('alice'));
    alice.emit('make_call', { to: name, from: alice.name, offer });
    // The python client answers, sends a candidate back and a call_update,
    // each from a handler that takes exactly one argument.
    await alice.take('call_answered');
    sendCandidates(alice, { name }, [7]);
    assert.deepEqual(candidatesOf([await alice.take('ice_candidate')]), [8]);
    alice.emit('call_update', { to: name, from: alice.name, description: offer });
    assert.deepEqual((await alice.take('call_update'))[0].description.type, 'answer');
    await waitUntil(() => lines.includes('ok call_update'), WAIT_MS, 'the python client to handle call_update');
    assert.deepEqual(lines.filter((l) => l.startsWith('error')), []);
  } finally {
    py.kill();
  }
});
