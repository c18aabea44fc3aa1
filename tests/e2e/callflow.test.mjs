// One complete call with the official socket.io-client, as a door station and
// an app would make it: health, registration over both transports, offer, ICE
// both ways, answer, hang-up, presence.
//
// Short and slow-machine tolerant, so that it also proves the ARM builds under
// qemu user-mode emulation (tests/arm runs it with
// E2E_SERVER_CMD='cross/run-under-qemu <target> {name}'); without
// E2E_SERVER_CMD it runs against the native target/debug/signalbox like the
// rest of the e2e suite. Every wait is for an event, with a generous timeout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { once, signalboxBin, startServer, waitUntil, withServerLogs } from './helpers.mjs';

const START_MS = 60_000; // server start-up, emulated
const EVENT_MS = 20_000; // any single expected event or HTTP answer

let server;

/** GET `path` on the server and return the parsed JSON body. */
async function getJson(path) {
  const res = await fetch(server.url + path, { signal: AbortSignal.timeout(EVENT_MS) });
  assert.equal(res.status, 200, `GET ${path}`);
  return res.json();
}

/** Emit `event` with `payload` and resolve with the next `reply` event on `receiver`. */
async function relay(sender, event, payload, receiver, reply) {
  const received = once(receiver, reply, EVENT_MS);
  const ack = await sender.timeout(EVENT_MS).emitWithAck(event, payload);
  assert.deepEqual(ack, { ok: true }, `ack of ${event}`);
  const args = await received;
  assert.equal(args.length, 1, `${reply} carries one argument`);
  return args[0];
}

test('a call between two socket.io-client users', { timeout: 3 * 60_000 }, async (t) => {
  server = await startServer('signalbox', [], { resolve: signalboxBin, startTimeoutMs: START_MS });
  const clients = [];
  const errors = []; // signaling_error events, none expected
  t.after(async () => {
    for (const c of clients) c.disconnect();
    await server.stop();
  });

  await withServerLogs(() => server, async () => {
    const health = await getJson('/');
    assert.equal(health.status, 'WebRTC Signaling Server Running');
    assert.equal(health.connectedUsers, 0);
    assert.equal(health.activeCalls, 0);

    const connect = (opts) => {
      const socket = io(server.url, { forceNew: true, reconnection: false, timeout: EVENT_MS, ...opts });
      socket.on('signaling_error', (e) => errors.push(e));
      clients.push(socket);
      return socket;
    };
    const alice = connect({ transports: ['websocket'] });
    const bob = connect({}); // the default: long-polling, then upgraded to WebSocket

    for (const [socket, userId] of [[alice, 'alice'], [bob, 'bob']]) {
      const registered = await relay(socket, 'register_user', { userId }, socket, 'user_registered');
      assert.deepEqual(registered, { success: true, userId });
    }
    assert.equal(alice.io.engine.transport.name, 'websocket');
    await waitUntil(() => bob.io.engine.transport.name === 'websocket', EVENT_MS, "bob's upgrade to websocket");

    const offer = { type: 'offer', sdp: 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' };
    const incoming = await relay(alice, 'make_call', { to: 'bob', from: 'alice', offer }, bob, 'incoming_call');
    assert.deepEqual(incoming, { from: 'alice', offer });

    const aliceCandidate = { candidate: 'candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    const bobCandidate = { candidate: 'candidate:2 1 udp 2122260223 192.0.2.20 54401 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    assert.deepEqual(
      await relay(alice, 'ice_candidate', { to: 'bob', from: 'alice', candidate: aliceCandidate }, bob, 'ice_candidate'),
      { from: 'alice', candidate: aliceCandidate },
    );
    assert.deepEqual(
      await relay(bob, 'ice_candidate', { to: 'alice', from: 'bob', candidate: bobCandidate }, alice, 'ice_candidate'),
      { from: 'bob', candidate: bobCandidate },
    );

    const answer = { type: 'answer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' };
    const answered = await relay(bob, 'answer_call', { to: 'alice', from: 'bob', answer }, alice, 'call_answered');
    assert.deepEqual(answered, { from: 'bob', answer });
    const during = await getJson('/');
    assert.equal(during.connectedUsers, 2);
    assert.equal(during.activeCalls, 1);

    const ended = await relay(alice, 'end_call', { to: 'bob', from: 'alice' }, bob, 'call_ended');
    assert.deepEqual(ended, { from: 'alice' });

    assert.deepEqual(await getJson('/users'), { connectedUsers: ['alice', 'bob'], totalUsers: 2 });
    assert.equal((await getJson('/')).activeCalls, 0);
    assert.deepEqual(errors, [], 'no signaling_error');

    // The log: one line per registration and per call transition, none per
    // ICE candidate.
    await waitUntil(() => server.logs.some((l) => /call alice -> bob: ended/.test(l)), EVENT_MS, 'the log line of the hang-up');
    const callLines = server.logs.filter((l) => /call alice -> bob/.test(l));
    assert.equal(callLines.length, 3, callLines.join('\n'));
    for (const [n, pattern] of [[0, /ringing/], [1, /answered/], [2, /ended/]]) assert.match(callLines[n], pattern);
    assert.equal(server.logs.filter((l) => /\b(alice|bob) registered/.test(l)).length, 2, server.logs.join('\n'));
    assert.deepEqual(server.logs.filter((l) => /candidate/i.test(l)), []);
  })(t);
});
