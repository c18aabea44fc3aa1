// The local push service of push-receiver.mjs, on its own (no signalbox): a
// push made by the book (aes128gcm body from http_ece, an ES256 VAPID JWT
// signed with node's crypto) is taken and decrypted; a push wrong in one way
// is answered 400 and lands in `errors`; `respond` and `count` do what they say.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createECDH, generateKeyPairSync, sign } from 'node:crypto';
import ece from 'http_ece';
import { startPushReceiver } from './push-receiver.mjs';

let receiver;

before(async () => {
  receiver = await startPushReceiver();
});

after(async () => {
  await receiver?.close();
});

/** An application server's VAPID key pair; `publicKey` is the base64url uncompressed point. */
function vapidKeys() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { x, y } = publicKey.export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(x, 'base64url'), Buffer.from(y, 'base64url')]);
  return { privateKey, publicKey: point.toString('base64url') };
}

const SERVER = vapidKeys();
const b64json = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** `vapid t=<JWT>, k=<key>` for `aud`, signed by `signer` (default the key named in k). */
function vapid({ aud = receiver.url, exp = Math.floor(Date.now() / 1000) + 12 * 3600, sub = 'mailto:ops@example.com',
  keys = SERVER, signer = keys.privateKey } = {}) {
  const data = `${b64json({ typ: 'JWT', alg: 'ES256' })}.${b64json({ aud, exp, sub })}`;
  const sig = sign('sha256', Buffer.from(data), { key: signer, dsaEncoding: 'ieee-p1363' });
  return `vapid t=${data}.${sig.toString('base64url')}, k=${keys.publicKey}`;
}

/** The aes128gcm body of `payload` for `subscription`, from a fresh sender key as RFC 8291 says. */
function encryptFor(subscription, payload) {
  const sender = createECDH('prime256v1');
  sender.generateKeys();
  return ece.encrypt(Buffer.from(JSON.stringify(payload)), {
    version: 'aes128gcm',
    privateKey: sender,
    dh: subscription.keys.p256dh,
    authSecret: subscription.keys.auth,
  });
}

/** POST a push; `headers` entries set to undefined are left out. */
async function push(subscription, payload, { headers = {}, body = encryptFor(subscription, payload) } = {}) {
  const all = { 'content-encoding': 'aes128gcm', ttl: '30', authorization: vapid(), ...headers };
  for (const [k, v] of Object.entries(all)) if (v === undefined) delete all[k];
  const res = await fetch(subscription.endpoint, { method: 'POST', headers: all, body });
  return { status: res.status, text: await res.text() };
}

test('subscribe() returns a PushSubscription.toJSON() of its own', () => {
  const a = receiver.subscribe('shape');
  const b = receiver.subscribe('shape');
  assert.match(a.endpoint, new RegExp(`^${receiver.url}/push/shape-[0-9a-f]+$`));
  assert.notEqual(a.endpoint, b.endpoint);
  assert.equal(a.expirationTime, null);
  const p256dh = Buffer.from(a.keys.p256dh, 'base64url');
  assert.equal(p256dh.length, 65);
  assert.equal(p256dh[0], 4);
  assert.equal(Buffer.from(a.keys.auth, 'base64url').length, 16);
  assert.notEqual(a.keys.p256dh, b.keys.p256dh);
});

test('a push made by the book is decrypted, with its headers and VAPID claims', async () => {
  const subscription = receiver.subscribe('anna');
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const sentAt = Date.now();
  const res = await push(subscription, { type: 'incoming_call', from: 'door' }, {
    headers: { urgency: 'high', topic: 'c42', authorization: vapid({ exp, sub: 'https://signalbox.example/contact' }) },
  });
  assert.deepEqual(res, { status: 201, text: '' });
  const msg = await receiver.next('anna');
  assert.deepEqual(receiver.errors, []);
  assert.deepEqual(msg.payload, { type: 'incoming_call', from: 'door' });
  assert.deepEqual(msg.headers, { ttl: '30', urgency: 'high', topic: 'c42', contentEncoding: 'aes128gcm' });
  assert.deepEqual(msg.vapid, { sub: 'https://signalbox.example/contact', aud: receiver.url, exp, publicKey: SERVER.publicKey });
  assert.ok(msg.receivedAt >= sentAt && msg.receivedAt <= Date.now());
  assert.equal(receiver.count('anna'), 1);
});

test('next() waits for a push still to come, and times out with a clear message', async () => {
  const subscription = receiver.subscribe('ben');
  const waiting = receiver.next('ben');
  await push(subscription, { n: 1 });
  assert.deepEqual((await waiting).payload, { n: 1 });
  await assert.rejects(receiver.next('ben', 50), /timed out after 50 ms waiting for a push to "ben" \(1 POSTs arrived/);
  assert.deepEqual(receiver.errors, []);
});

test('a push wrong in one way is answered 400 and recorded in errors', async () => {
  const subscription = receiver.subscribe('carl');
  const other = receiver.subscribe('someone-else');
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    ['a bad signature', { headers: { authorization: vapid({ signer: vapidKeys().privateKey }) } }, /JWT signature does not verify/],
    ['a wrong aud', { headers: { authorization: vapid({ aud: 'http://127.0.0.1:1' }) } }, /aud must be the endpoint's origin/],
    ['no TTL', { headers: { ttl: undefined } }, /TTL header must be a non-negative integer/],
    ['a negative TTL', { headers: { ttl: '-1' } }, /TTL header/],
    ['a body for another key', { body: encryptFor(other, { n: 0 }) }, /body: does not decrypt with this subscription's keys/],
    ['another Content-Encoding', { headers: { 'content-encoding': 'aesgcm' } }, /Content-Encoding must be exactly aes128gcm/],
    ['a bad Urgency', { headers: { urgency: 'urgent' } }, /Urgency must be one of/],
    ['a long Topic', { headers: { topic: 'a'.repeat(33) } }, /Topic must be/],
    ['a Topic outside base64url', { headers: { topic: 'call/1' } }, /Topic must be/],
    ['the WebPush scheme', { headers: { authorization: `WebPush ${vapid().split(/t=|,/)[1]}` } }, /must use the vapid scheme/],
    ['no Authorization', { headers: { authorization: undefined } }, /no Authorization header/],
    ['an expired JWT', { headers: { authorization: vapid({ exp: now - 10 }) } }, /exp must be a time in the future/],
    ['a JWT for more than 24 h', { headers: { authorization: vapid({ exp: now + 25 * 3600 }) } }, /exp must be at most 24 h ahead/],
    ['a sub that is no URL', { headers: { authorization: vapid({ sub: 'ops@example.com' }) } }, /sub must be a mailto: or https: URL/],
  ];
  for (const [what, opts, why] of cases) {
    const before = receiver.errors.length;
    const res = await push(subscription, { n: 0 }, opts);
    assert.equal(res.status, 400, what);
    const added = receiver.errors.slice(before);
    assert.equal(added.length, 1, `${what}: ${JSON.stringify(added)}`);
    assert.match(added[0], why, what);
    assert.match(res.text, why, `${what}: the 400 says why`);
  }
  // None of them was delivered: the next push taken is a good one.
  assert.equal((await push(subscription, { n: 1 })).status, 201);
  assert.deepEqual((await receiver.next('carl')).payload, { n: 1 });
  assert.equal(receiver.count('carl'), cases.length + 1);
  receiver.errors.length = 0;
});

test('respond(name, 410) answers later pushes 410, and count() counts them all', async () => {
  const subscription = receiver.subscribe('dora');
  assert.equal(receiver.count('dora'), 0);
  assert.equal((await push(subscription, { n: 1 })).status, 201);
  receiver.respond('dora', 410);
  assert.deepEqual(await push(subscription, { n: 2 }), { status: 410, text: '' });
  assert.equal((await push(subscription, { n: 3 })).status, 410);
  assert.equal(receiver.count('dora'), 3);
  assert.deepEqual((await receiver.next('dora')).payload, { n: 1 });
  assert.deepEqual(receiver.errors, []);
  // Other subscriptions still answer 201.
  assert.equal((await push(receiver.subscribe('eve'), { n: 1 })).status, 201);
});

test('a POST to no subscription is answered 404 and recorded', async () => {
  const res = await fetch(`${receiver.url}/push/nobody-1`, { method: 'POST', body: 'x' });
  assert.equal(res.status, 404);
  assert.deepEqual(receiver.errors, ['POST /push/nobody-1: no such subscription']);
  receiver.errors.length = 0;
});
