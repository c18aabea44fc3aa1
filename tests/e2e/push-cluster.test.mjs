// The callee who is not there, on two cluster nodes sharing a real Redis:
// one VAPID key for the cluster (each node has a state directory of its
// own, with a key of its own), subscriptions and missed calls kept in
// Redis, a call from one node to a user asleep (registered nowhere)
// pushes, and their phone that wakes on the other node takes the call
// there; the caller giving up is pushed and missed, told on whichever node
// they register next; a 410 seen by one node removes the subscription for
// all; each node logs the calls it owns, and the admin API on one node
// sends away a user on the other.
// Needs Debian's redis-server (tests/run installs it).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from './device.mjs';
import { startPushReceiver } from './push-receiver.mjs';
import { freePort, startRedis } from './redis.mjs';
import { signalboxBin, startServer, waitUntil, withServerLogs } from './helpers.mjs';

const RING_S = 5;
const OFFER = { type: 'offer', sdp: 'v=0 offer' };
const ANSWER = { type: 'answer', sdp: 'v=0 answer' };
const candidate = (n) => ({ candidate: `candidate:${n} 1 udp 1 127.0.0.1 ${5000 + n} typ host`, sdpMid: '0', sdpMLineIndex: 0 });

const directory = join(mkdtempSync(join(tmpdir(), 'signalbox-push-cluster-')), 'directory.toml');
writeFileSync(directory, `
[groups.p-flat]
members = ["p-anna", "p-ben"]
`);

let redis;
let receiver;
const nodes = [];
const withLogs = (fn) => withServerLogs(() => nodes[0], () => withServerLogs(() => nodes[1], fn)());

function startNode() {
  return startServer('signalbox', [
    '--redis', redis.url,
    '--state-dir', mkdtempSync(join(tmpdir(), 'signalbox-node-')),
    '--directory', directory,
    '--push-allow', '127.0.0.1',
    '--call-timeout', `${RING_S}s`,
    '--calls-per-minute', '1000',
  ], { resolve: signalboxBin });
}

before(async () => {
  receiver = await startPushReceiver();
  redis = await startRedis(await freePort());
  nodes.push(await startNode());
  nodes.push(await startNode());
});

after(async () => {
  await Promise.all(nodes.map((node) => node.stop()));
  await redis?.stop();
  await receiver?.close();
});

const vapidKey = async (node) => (await fetch(`${node.url}/push/vapid-public-key`)).text();

/** `name` registers on `node`, subscribes, and goes to sleep. */
async function subscribeAndSleep(node, name) {
  const phone = await new Device(node.url).register(name);
  const config = await phone.take('push_config');
  const subscription = receiver.subscribe(name);
  assert.deepEqual(await phone.ask('register_push', { subscription }), { ok: true });
  phone.close();
  return config.vapidPublicKey;
}

test('every node signs with the one VAPID key the cluster keeps', withLogs(async () => {
  const [a, b] = [await vapidKey(nodes[0]), await vapidKey(nodes[1])];
  assert.equal(Buffer.from(a, 'base64url').length, 65);
  assert.equal(a, b);
}));

test('a call from one node to a user asleep pushes, and the phone that wakes on the other takes it', withLogs(async () => {
  const key = await subscribeAndSleep(nodes[1], 'c-anna');
  const door = await new Device(nodes[0].url).register('c-door');
  assert.deepEqual(await door.ask('make_call', { to: 'c-anna', offer: OFFER }), { ok: true });
  door.emit('ice_candidate', { to: 'c-anna', candidate: candidate(1) });
  const push = await receiver.next('c-anna');
  assert.deepEqual(receiver.errors, []);
  assert.equal(push.payload.type, 'incoming_call');
  assert.equal(push.payload.from, 'c-door');
  assert.equal(push.vapid.publicKey, key, 'signed with the key the phone subscribed with');
  // Busy cluster-wide while it rings for her.
  const other = await new Device(nodes[1].url).register('c-guard');
  assert.deepEqual(await other.ask('make_call', { to: 'c-anna', offer: OFFER }), { ok: false, error: 'user is busy' });
  const phone = await new Device(nodes[1].url).register('c-anna');
  assert.deepEqual(await phone.take('incoming_call'), { from: 'c-door', offer: OFFER });
  assert.deepEqual(await phone.take('ice_candidate'), { from: 'c-door', candidate: candidate(1) });
  phone.emit('answer_call', { to: 'c-door', answer: ANSWER });
  assert.deepEqual(await door.take('call_answered'), { from: 'c-anna', answer: ANSWER });
  phone.emit('ice_candidate', { to: 'c-door', candidate: candidate(2) });
  assert.deepEqual(await door.take('ice_candidate'), { from: 'c-anna', candidate: candidate(2) });
  door.emit('end_call', { to: 'c-anna' });
  await phone.take('call_ended');
  for (const device of [phone, door, other]) device.close();
}));

test('the caller giving up is pushed, and missed on whichever node the user registers next', withLogs(async () => {
  await subscribeAndSleep(nodes[0], 'm-ben');
  const door = await new Device(nodes[1].url).register('m-door');
  assert.deepEqual(await door.ask('make_call', { to: 'm-ben', offer: OFFER }), { ok: true });
  const first = await receiver.next('m-ben');
  door.emit('end_call', { to: 'm-ben' });
  // Two POSTs, in either order.
  const ends = [await receiver.next('m-ben'), await receiver.next('m-ben')].map((push) => push.payload);
  assert.deepEqual(ends.find((p) => p.type === 'call_cancelled'), { type: 'call_cancelled', call: first.payload.call, reason: 'ended' });
  assert.equal(ends.find((p) => p.type === 'missed_call')?.from, 'm-door');
  const phone = await new Device(nodes[1].url).register('m-ben');
  const { calls } = await phone.take('missed_calls');
  assert.deepEqual(calls.map((c) => [c.from, c.reason]), [['m-door', 'cancelled']]);
  assert.ok(await phone.none('incoming_call'), 'no ghost call');
  assert.deepEqual(await phone.ask('missed_calls_seen', {}), { ok: true });
  phone.close();
  const again = await new Device(nodes[0].url).register('m-ben');
  assert.ok(await again.none('missed_calls'), 'seen on one node: seen on all');
  again.close();
  door.close();
}));

test('a member asleep rings on the node where they wake, and stops when another answers', withLogs(async () => {
  await subscribeAndSleep(nodes[0], 'p-ben');
  const anna = await new Device(nodes[1].url).register('p-anna');
  const door = await new Device(nodes[0].url).register('p-door');
  assert.deepEqual(await door.ask('make_call', { to: 'p-flat', offer: OFFER }), { ok: true });
  assert.equal((await anna.take('incoming_call')).group, 'p-flat');
  const push = await receiver.next('p-ben');
  assert.deepEqual([push.payload.type, push.payload.group], ['incoming_call', 'p-flat']);
  const ben = await new Device(nodes[1].url).register('p-ben');
  assert.deepEqual(await ben.take('incoming_call'), { from: 'p-door', offer: OFFER, group: 'p-flat' });
  anna.emit('answer_call', { to: 'p-door', answer: ANSWER });
  assert.deepEqual(await ben.take('call_ended'), { from: 'p-door', reason: 'answered_elsewhere' });
  assert.equal((await door.take('call_answered')).from, 'p-anna');
  door.emit('end_call', { to: 'p-flat' });
  await anna.take('call_ended');
  for (const device of [anna, ben, door]) device.close();
}));

test('a 410 that one node hears removes the subscription for the whole cluster', withLogs(async () => {
  await subscribeAndSleep(nodes[1], 'g-carl');
  receiver.respond('g-carl', 410);
  const door = await new Device(nodes[0].url).register('g-door');
  assert.deepEqual(await door.ask('make_call', { to: 'g-carl', offer: OFFER }), { ok: true });
  await waitUntil(() => receiver.count('g-carl') >= 1, 5000, 'the push that gets 410');
  door.emit('end_call', { to: 'g-carl' });
  const other = await new Device(nodes[1].url).register('g-door-2');
  await waitUntil(async () => {
    const reply = await other.ask('make_call', { to: 'g-carl', offer: OFFER });
    if (reply.ok) other.emit('end_call', { to: 'g-carl' });
    return reply.error === 'user is offline';
  }, 5000, 'g-carl offline once the subscription is gone');
  door.close();
  other.close();
}));

test('each node logs the calls it owns, and the admin API on one node sends away a user on the other', withLogs(async () => {
  const caller = await new Device(nodes[0].url).register('l-door');
  const callee = await new Device(nodes[1].url).register('l-flat');
  assert.deepEqual(await caller.ask('make_call', { to: 'l-flat', offer: OFFER }), { ok: true });
  await callee.take('incoming_call');
  callee.emit('answer_call', { to: 'l-door', answer: ANSWER });
  await caller.take('call_answered');
  const live = await (await fetch(`${nodes[0].url}/api/calls/live`)).json();
  assert.deepEqual(live.calls.filter((c) => c.caller === 'l-door').map((c) => [c.called, c.state]), [['l-flat', 'active']]);
  const response = await fetch(`${nodes[0].url}/api/users/l-flat/disconnect`, {
    method: 'POST', body: JSON.stringify({ reason: 'maintenance tonight' }),
  });
  assert.deepEqual([response.status, await response.json()], [200, { ok: true }]);
  assert.deepEqual(await callee.take('force_disconnect'), { reason: 'maintenance tonight' });
  assert.deepEqual(await caller.take('call_ended'), { from: 'l-flat', reason: 'disconnected' });
  const nobody = await fetch(`${nodes[1].url}/api/users/l-nobody/disconnect`, { method: 'POST' });
  assert.deepEqual([nobody.status, await nobody.json()], [404, { error: 'no such user online' }]);
  const records = async (node) => (await (await fetch(`${node.url}/api/calls?user=l-door`)).json()).calls;
  await waitUntil(async () => (await records(nodes[0])).length === 1, 5000, 'the record on the caller\'s node');
  const [record] = await records(nodes[0]);
  assert.deepEqual([record.caller, record.called, record.outcome, record.answered_by], ['l-door', 'l-flat', 'answered', 'l-flat']);
  assert.deepEqual(await records(nodes[1]), [], 'the callee\'s node does not log it twice');
  caller.close();
}));
