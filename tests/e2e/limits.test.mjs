// Limits that hold: a socket that floods events, known to the protocol or
// not, gets "rate limit exceeded" and, if it keeps on, is disconnected; a user
// cannot start calls faster than --calls-per-minute; a well-behaved call
// beside it is untouched.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { once, signalboxBin, startServer, waitUntil } from './helpers.mjs';

const first = async (emitter, event, ms) => (await once(emitter, event, ms))[0];

async function registered(url, name) {
  const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false });
  const reply = first(socket, 'user_registered');
  socket.emit('register_user', { userId: name });
  assert.equal((await reply).success, true);
  return socket;
}

/** alice and bob, registered, in an answered call. */
async function inCall(url) {
  const alice = await registered(url, 'alice');
  const bob = await registered(url, 'bob');
  const ringing = first(bob, 'incoming_call');
  alice.emit('make_call', { to: 'bob', from: 'alice', offer: { sdp: 'o' } });
  await ringing;
  const answered = first(alice, 'call_answered');
  bob.emit('answer_call', { to: 'alice', from: 'bob', answer: { sdp: 'a' } });
  await answered;
  return [alice, bob];
}

test('a flooding socket is refused, then disconnected; a call beside it relays on', async () => {
  const server = await startServer('signalbox', ['--event-rate', '20', '--event-burst', '40'], { resolve: signalboxBin });
  try {
    const [alice, bob] = await inCall(server.url);

    const flooder = await registered(server.url, 'mallory');
    const replies = [];
    const gone = first(flooder, 'disconnect', 5000);
    for (let i = 0; i < 400; i++) {
      flooder.emit('ice_candidate', { to: 'alice', candidate: { i } }, (reply) => replies.push(reply));
    }
    assert.equal(await gone, 'io server disconnect');
    const limited = replies.filter((r) => r.error === 'rate limit exceeded: slow down');
    assert.ok(limited.length > 0, JSON.stringify(replies.slice(0, 5)));
    assert.ok(replies.length < 400, 'the flood was cut off');

    // The call goes on.
    const relayed = first(bob, 'ice_candidate');
    alice.emit('ice_candidate', { to: 'bob', from: 'alice', candidate: { candidate: 'after flood' } });
    assert.deepEqual(await relayed, { from: 'alice', candidate: { candidate: 'after flood' } });
    for (const s of [alice, bob]) s.close();
  } finally {
    await server.stop();
  }
});

test('an unknown event is refused, and a flood of them ends like any flood; a call beside it relays on', async () => {
  const server = await startServer('signalbox', ['--event-rate', '20', '--event-burst', '40'], { resolve: signalboxBin });
  try {
    const [alice, bob] = await inCall(server.url);

    // Not registered, and not even a known event: still counted.
    const flooder = io(server.url, { transports: ['websocket'], forceNew: true, reconnection: false });
    await first(flooder, 'connect');
    const refused = first(flooder, 'signaling_error');
    flooder.emit('no_such_event', { x: 1 });
    assert.deepEqual(await refused, { event: 'no_such_event', error: 'unknown event' });
    const acked = await new Promise((resolve) => flooder.emit('no_such_event', 1, resolve));
    assert.deepEqual(acked, { ok: false, error: 'unknown event' });

    const replies = [];
    const gone = first(flooder, 'disconnect', 5000);
    const big = 'x'.repeat(10_000);
    for (let i = 0; i < 400; i++) {
      flooder.emit('no_such_event', { i, big }, (reply) => replies.push(reply));
    }
    assert.equal(await gone, 'io server disconnect');
    const limited = replies.filter((r) => r.error === 'rate limit exceeded: slow down');
    assert.ok(limited.length > 0, JSON.stringify(replies.slice(0, 5)));
    assert.ok(replies.some((r) => r.error === 'unknown event'), 'within the budget it was answered');
    assert.ok(replies.length < 400, 'the flood was cut off');

    // The call goes on, both ways.
    const toBob = first(bob, 'ice_candidate');
    alice.emit('ice_candidate', { to: 'bob', from: 'alice', candidate: { candidate: 'after flood' } });
    assert.deepEqual(await toBob, { from: 'alice', candidate: { candidate: 'after flood' } });
    const toAlice = first(alice, 'ice_candidate');
    bob.emit('ice_candidate', { to: 'alice', from: 'bob', candidate: { candidate: 'back' } });
    assert.deepEqual(await toAlice, { from: 'bob', candidate: { candidate: 'back' } });
    assert.ok(alice.connected && bob.connected);
    for (const s of [alice, bob]) s.close();
  } finally {
    await server.stop();
  }
});

test('a user cannot start calls faster than --calls-per-minute', async () => {
  const server = await startServer('signalbox', ['--calls-per-minute', '3'], { resolve: signalboxBin });
  try {
    const door = await registered(server.url, 'door');
    const flat = await registered(server.url, 'flat');
    for (let i = 0; i < 3; i++) {
      const ringing = first(flat, 'incoming_call');
      door.emit('make_call', { to: 'flat', from: 'door', offer: {} });
      await ringing;
      const ended = first(flat, 'call_ended');
      door.emit('end_call', { to: 'flat', from: 'door' });
      await ended;
    }
    const failed = first(door, 'call_failed');
    door.emit('make_call', { to: 'flat', from: 'door', offer: {} });
    assert.deepEqual(await failed, { error: 'too many calls: try again later', targetUser: 'flat' });
    // The other user's budget is their own.
    const ringing = first(door, 'incoming_call');
    flat.emit('make_call', { to: 'door', from: 'flat', offer: {} });
    await ringing;
    for (const s of [door, flat]) s.close();
  } finally {
    await server.stop();
  }
});
