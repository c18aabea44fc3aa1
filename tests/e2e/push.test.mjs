// Phones that sleep: a user subscribed to Web Push and with no device
// connected still rings. A local push service (push-receiver.mjs) checks
// every POST as a real one would (VAPID signature, aes128gcm body, TTL,
// Urgency, Topic) and decrypts it with the http_ece package; then a socket
// for that user registers and takes the call; the caller giving up is
// pushed as call_cancelled, and is a missed call at the next registration;
// a 410 removes the subscription; --push-allow keeps private addresses out.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Device } from './device.mjs';
import { startPushReceiver } from './push-receiver.mjs';
import { signalboxBin, startServer, waitUntil, withServerLogs } from './helpers.mjs';

const RING_S = 5;
const OFFER = { type: 'offer', sdp: 'v=0 offer' };
const ANSWER = { type: 'answer', sdp: 'v=0 answer' };
const candidate = (n) => ({ candidate: `candidate:${n} 1 udp 1 127.0.0.1 ${5000 + n} typ host`, sdpMid: '0', sdpMLineIndex: 0 });

let server;
let receiver;
const withLogs = (fn) => withServerLogs(() => server, fn);

before(async () => {
  receiver = await startPushReceiver();
  server = await startServer('signalbox', [
    '--push-allow', '127.0.0.1', '--call-timeout', `${RING_S}s`, '--calls-per-minute', '1000',
  ], { resolve: signalboxBin });
});

after(async () => {
  await server?.stop();
  await receiver?.close();
});

async function metric(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/** The next two pushes to `name`, whatever order they came in, as the types `a` then `b`. */
async function bothPushes(name, a, b) {
  const pushes = [await receiver.next(name), await receiver.next(name)];
  const of = (type) => pushes.find((push) => push.payload.type === type);
  assert.ok(of(a) && of(b), `pushes ${pushes.map((p) => p.payload.type)}`);
  return [of(a), of(b)];
}

/** `name` registers, subscribes with a fresh subscription of the receiver's, and goes to sleep. */
async function subscribeAndSleep(name) {
  const phone = await new Device(server.url).register(name);
  const config = await phone.take('push_config');
  const key = await (await fetch(`${server.url}/push/vapid-public-key`)).text();
  assert.equal(config.vapidPublicKey, key);
  assert.equal(Buffer.from(key, 'base64url').length, 65);
  const subscription = receiver.subscribe(name);
  assert.deepEqual(await phone.ask('register_push', { subscription }), { ok: true });
  phone.close();
  return subscription;
}

test('a call to a sleeping user pushes, and the device that registers takes it', withLogs(async () => {
  await subscribeAndSleep('anna');
  const door = await new Device(server.url).register('door');
  const calledAt = Date.now();
  assert.deepEqual(await door.ask('make_call', { to: 'anna', offer: OFFER }), { ok: true });
  door.emit('ice_candidate', { to: 'anna', candidate: candidate(1) });
  const push = await receiver.next('anna');
  assert.deepEqual(receiver.errors, []);
  assert.equal(push.payload.type, 'incoming_call');
  assert.equal(push.payload.from, 'door');
  assert.match(push.payload.call, /^c\d+$/);
  assert.equal(push.headers.ttl, String(RING_S));
  assert.equal(push.headers.urgency, 'high');
  assert.equal(push.headers.topic, push.payload.call);
  assert.equal(push.vapid.aud, receiver.url);
  console.log(`# call to push received: ${push.receivedAt - calledAt} ms`);
  // The phone wakes: the call, then the candidates the caller sent meanwhile.
  const phone = await new Device(server.url).register('anna');
  assert.deepEqual(await phone.take('incoming_call'), { from: 'door', offer: OFFER });
  assert.deepEqual(await phone.take('ice_candidate'), { from: 'door', candidate: candidate(1) });
  phone.emit('answer_call', { to: 'door', answer: ANSWER });
  assert.deepEqual(await door.take('call_answered'), { from: 'anna', answer: ANSWER });
  door.emit('end_call', { to: 'anna' });
  await phone.take('call_ended');
  phone.close();
  door.close();
}));

test('the caller giving up is pushed as call_cancelled', withLogs(async () => {
  await subscribeAndSleep('ben');
  const door = await new Device(server.url).register('door-2');
  assert.deepEqual(await door.ask('make_call', { to: 'ben', offer: OFFER }), { ok: true });
  const first = await receiver.next('ben');
  door.emit('end_call', { to: 'ben' });
  // Its end, and what the phone shows: a missed call, kept a day,
  // replacing nothing (two POSTs, in either order).
  const [second, third] = await bothPushes('ben', 'call_cancelled', 'missed_call');
  assert.deepEqual(second.payload, { type: 'call_cancelled', call: first.payload.call, reason: 'ended' });
  assert.equal(second.headers.topic, first.headers.topic, 'it replaces the ring at the push service');
  assert.deepEqual([third.payload.from, third.payload.reason, third.payload.call], ['door-2', 'cancelled', first.payload.call]);
  assert.ok(Math.abs(Date.parse(third.payload.at) - Date.now()) < 60_000, third.payload.at);
  assert.deepEqual([third.headers.ttl, third.headers.urgency, third.headers.topic], ['86400', 'normal', undefined]);
  assert.deepEqual(receiver.errors, []);
  // When ben's phone next registers, the call is one he missed.
  const phone = await new Device(server.url).register('ben');
  const { calls } = await phone.take('missed_calls');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].from, 'door-2');
  assert.equal(calls[0].reason, 'cancelled');
  assert.ok(Math.abs(Date.parse(calls[0].at) - Date.now()) < 60_000, calls[0].at);
  assert.deepEqual(await phone.ask('missed_calls_seen', {}), { ok: true });
  phone.close();
  const again = await new Device(server.url).register('ben');
  assert.ok(await again.none('missed_calls'), 'seen: not told again');
  again.close();
  door.close();
}));

test('a push service that answers 410 has its subscription removed', withLogs(async () => {
  const before = await metric('signalbox_push_subscriptions');
  await subscribeAndSleep('carl');
  assert.equal(await metric('signalbox_push_subscriptions'), before + 1);
  receiver.respond('carl', 410);
  const door = await new Device(server.url).register('door-3');
  assert.deepEqual(await door.ask('make_call', { to: 'carl', offer: OFFER }), { ok: true });
  await waitUntil(async () => (await metric('signalbox_push_subscriptions')) === before, 5000, 'the subscription removed');
  door.emit('end_call', { to: 'carl' });
  // Now carl is offline, as a user with no subscription.
  const refused = await door.ask('make_call', { to: 'carl', offer: OFFER });
  assert.deepEqual(refused, { ok: false, error: 'user is offline' });
  door.close();
}));

test('subscriptions outside --push-allow, or malformed, are refused with the reason', withLogs(async () => {
  const phone = await new Device(server.url).register('dora');
  const keys = receiver.subscribe('dora').keys;
  for (const [endpoint, why] of [
    ['https://10.1.2.3/push/x', /^push endpoint not allowed: 10\.1\.2\.3 is at 10\.1\.2\.3/],
    ['http://push.example.com/x', /^push endpoint not allowed: push\.example\.com is http/],
    ['https://[::1]/x', /^push endpoint not allowed/],
  ]) {
    const reply = await phone.ask('register_push', { subscription: { endpoint, keys } });
    assert.equal(reply.ok, false);
    assert.match(reply.error, why, endpoint);
  }
  const bad = await phone.ask('register_push', { subscription: { endpoint: 'https://push.example/x', keys: { p256dh: 'AAAA', auth: keys.auth } } });
  assert.match(bad.error, /^invalid payload: register_push: invalid subscription key/);
  phone.close();
}));
