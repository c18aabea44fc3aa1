// Limits that hold: a socket that floods events, known to the protocol or
// not, gets "rate limit exceeded" and, if it keeps on, is disconnected; a user
// cannot start calls faster than --calls-per-minute; a well-behaved call
// beside it is untouched.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import net from 'node:net';
import { delay, once, signalboxBin, startServer, waitUntil } from './helpers.mjs';

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

test('a connection that pipelines thousands of handshakes leaves a default client able to connect', async () => {
  const server = await startServer('signalbox', ['--max-polling-sessions', '200'], { resolve: signalboxBin });
  try {
    const { hostname, port } = new URL(server.url);
    const statuses = await new Promise((resolve, reject) => {
      const head = `GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`;
      const socket = net.connect(Number(port), hostname, () => socket.end(head.repeat(5000)));
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (chunk) => { text += chunk; });
      socket.on('error', reject);
      socket.on('close', () => resolve([...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))));
    });
    assert.equal(statuses.length, 5000, 'every pipelined handshake was answered');
    const opened = statuses.filter((s) => s === 200).length;
    assert.ok(opened <= 8, `${opened} sessions for one connection`);
    assert.equal(statuses.filter((s) => s === 429).length, 5000 - opened);

    // socket.io-client with its defaults starts on polling.
    const client = io(server.url, { forceNew: true, reconnection: false });
    await once(client, 'connect', 5000);
    const reply = first(client, 'user_registered');
    client.emit('register_user', { userId: 'neighbour' });
    assert.equal((await reply).success, true);
    client.close();
  } finally {
    await server.stop();
  }
});

test('a signaling event with binary attachments is refused, not relayed half-empty', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  try {
    const [alice, bob] = await inCall(server.url);
    let relayed = 0;
    bob.on('ice_candidate', () => { relayed += 1; });
    const reply = await new Promise((resolve) => {
      alice.emit('ice_candidate', { to: 'bob', candidate: Buffer.from([1, 2, 3]) }, resolve);
    });
    assert.deepEqual(reply, { ok: false, error: 'invalid payload: binary attachments are not accepted' });
    const refused = first(alice, 'signaling_error');
    alice.emit('make_call', { to: 'bob', offer: { sdp: Buffer.from('v=0') } });
    assert.deepEqual(await refused, {
      event: 'make_call',
      error: 'invalid payload: binary attachments are not accepted',
    });
    await delay(100);
    assert.equal(relayed, 0);
    for (const s of [alice, bob]) s.close();
  } finally {
    await server.stop();
  }
});
