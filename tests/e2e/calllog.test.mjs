// The durable call log (--state-dir): one JSON line per call, synced as it
// ends: answered (with the door opened from it), declined, rung out and
// given up; `kill -9` during a burst of calls leaves a log whose every
// complete line parses, and a restart on it keeps its VAPID key. The admin
// API reads the log, lists live calls and sends a user away, for loopback
// or an admin token. Push subscriptions and missed calls outlive a restart.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from './device.mjs';
import { startPushReceiver } from './push-receiver.mjs';
import { once, signalboxBin, startServer, waitUntil } from './helpers.mjs';

const OFFER = { type: 'offer', sdp: 'v=0 offer' };
const ANSWER = { type: 'answer', sdp: 'v=0 answer' };

const dir = mkdtempSync(join(tmpdir(), 'signalbox-calllog-'));
const stateDir = join(dir, 'state');
const directory = join(dir, 'directory.toml');
writeFileSync(directory, `
[users.front-door]
kind = "door"
doors = ["main"]
`);
const servers = [];

after(async () => {
  for (const server of servers) await server.stop();
});

async function start() {
  const server = await startServer('signalbox', [
    '--state-dir', stateDir, '--directory', directory, '--call-timeout', '1s', '--calls-per-minute', '10000',
  ], { resolve: signalboxBin });
  servers.push(server);
  return server;
}

/** The log's complete lines, parsed; a torn last line is left out. */
function records() {
  let text;
  try {
    text = readFileSync(join(stateDir, 'calls.log'), 'utf8');
  } catch {
    return [];
  }
  const whole = text.slice(0, text.lastIndexOf('\n') + 1);
  return whole.split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

test('answered with a door opened, declined, rung out, given up: a record each', async () => {
  const server = await start();
  const door = await new Device(server.url).register('front-door');
  const flat = await new Device(server.url).register('flat-3');
  // Answered; the flat opens the main door, then hangs up.
  door.emit('make_call', { to: 'flat-3', offer: OFFER });
  await flat.take('incoming_call');
  flat.emit('answer_call', { to: 'front-door', answer: ANSWER });
  await door.take('call_answered');
  assert.deepEqual(await flat.ask('open_door', { to: 'front-door', door: 'main' }), { ok: true });
  flat.emit('end_call', { to: 'front-door' });
  await door.take('call_ended');
  // Declined.
  door.emit('make_call', { to: 'flat-3', offer: OFFER });
  await flat.take('incoming_call');
  flat.emit('decline_call', { to: 'front-door' });
  await door.take('call_declined');
  // Rung out (--call-timeout 1s).
  door.emit('make_call', { to: 'flat-3', offer: OFFER });
  await flat.take('incoming_call');
  await door.take('call_timeout');
  // Given up while ringing.
  door.emit('make_call', { to: 'flat-3', offer: OFFER });
  await flat.take('incoming_call');
  door.emit('end_call', { to: 'flat-3' });
  await flat.take('call_ended');
  await waitUntil(() => records().length >= 4, 5000, 'four records');
  const [answered, declined, timeout, cancelled] = records();
  assert.equal(answered.caller, 'front-door');
  assert.equal(answered.called, 'flat-3');
  assert.deepEqual(answered.rang, ['flat-3']);
  assert.equal(answered.answered_by, 'flat-3');
  assert.equal(answered.outcome, 'answered');
  assert.equal(answered.ended_by, 'flat-3');
  assert.deepEqual(answered.doors.map((d) => [d.station, d.door, d.by]), [['front-door', 'main', 'flat-3']]);
  for (const at of ['started', 'answered', 'ended']) assert.ok(Date.parse(answered[at]) > 0, at);
  assert.ok(Date.parse(answered.started) <= Date.parse(answered.answered));
  assert.equal(declined.outcome, 'declined');
  assert.equal(declined.ended_by, 'flat-3');
  assert.equal(timeout.outcome, 'timeout');
  assert.equal(timeout.answered, undefined);
  assert.equal(cancelled.outcome, 'cancelled');
  assert.equal(cancelled.ended_by, 'front-door');
  door.close();
  flat.close();
});

test('kill -9 during a burst of calls leaves a log whose every complete line parses; a restart keeps the VAPID key', async () => {
  const server = servers[0];
  const key = await (await fetch(`${server.url}/push/vapid-public-key`)).text();
  const before = records().length;
  const pairs = [];
  for (let i = 0; i < 10; i += 1) {
    pairs.push([await new Device(server.url).register(`door-${i}`), await new Device(server.url).register(`flat-${i}`)]);
  }
  // Each pair calls and hangs up over and over; the server dies midway.
  let stop = false;
  const bursts = pairs.map(async ([door, flat]) => {
    while (!stop) {
      door.emit('make_call', { to: flat.name, offer: OFFER });
      try {
        await flat.take('incoming_call', 2000);
      } catch {
        return;
      }
      door.emit('end_call', { to: flat.name });
      await flat.take('call_ended', 2000).catch(() => {});
    }
  });
  await waitUntil(() => records().length >= before + 30, 10000, 'calls logged during the burst');
  const exited = once(server.proc, 'exit', 5000);
  server.proc.kill('SIGKILL');
  await exited;
  stop = true;
  await Promise.all(bursts);
  for (const [door, flat] of pairs) {
    door.close();
    flat.close();
  }
  const logged = records(); // parses every complete line, or throws
  assert.ok(logged.length >= before + 30, `${logged.length} records`);
  for (const record of logged) assert.ok(['answered', 'declined', 'timeout', 'cancelled'].includes(record.outcome));
  // A torn last line (as a power cut mid-write leaves) is cut off at start.
  writeFileSync(join(stateDir, 'calls.log'), readFileSync(join(stateDir, 'calls.log'), 'utf8') + '{"call":"c9","cal');
  const again = await start();
  assert.ok(again.logs.some((line) => line.includes('the last line was torn')), 'the torn line was reported');
  assert.equal(await (await fetch(`${again.url}/push/vapid-public-key`)).text(), key, 'the same VAPID key');
  assert.equal(records().length, logged.length);
});

test('the admin API: the log newest first and filtered, live calls, sending a user away; loopback or an admin token', async () => {
  const server = servers[servers.length - 1];
  const api = (path, init) => fetch(`${server.url}${path}`, init).then(async (r) => [r.status, await r.json()]);
  const [status, page] = await api('/api/calls?user=flat-3&limit=2');
  assert.equal(status, 200);
  assert.equal(page.limit, 2);
  assert.equal(page.calls.length, 2);
  assert.ok(page.total >= 4);
  assert.ok(page.calls[0].started >= page.calls[1].started, 'newest first');
  assert.deepEqual((await api('/api/calls?since=yesterday'))[0], 400);
  // A call ringing now, then its callee sent away.
  const door = await new Device(server.url).register('front-door');
  const flat = await new Device(server.url).register('flat-3');
  door.emit('make_call', { to: 'flat-3', offer: OFFER });
  await flat.take('incoming_call');
  const [, live] = await api('/api/calls/live');
  assert.equal(live.calls.length, 1);
  assert.deepEqual([live.calls[0].caller, live.calls[0].called, live.calls[0].state, live.calls[0].ringing], ['front-door', 'flat-3', 'ringing', ['flat-3']]);
  const [kicked, reply] = await api('/api/users/flat-3/disconnect', { method: 'POST', body: JSON.stringify({ reason: 'maintenance' }) });
  assert.deepEqual([kicked, reply], [200, { ok: true, devices: 1 }]);
  assert.deepEqual(await flat.take('force_disconnect'), { reason: 'maintenance' });
  assert.deepEqual(await door.take('call_ended'), { from: 'flat-3', reason: 'disconnected' });
  assert.deepEqual((await api('/api/users/flat-3/disconnect', { method: 'POST' }))[0], 404);
  assert.equal((await fetch(`${server.url}/api/users/flat-3/disconnect`)).status, 405);
  door.close();
  flat.close();
  // Not from loopback (as a trusted proxy forwards it), and with tokens on.
  const secretFile = join(dir, 'auth-secret');
  writeFileSync(secretFile, 'an admin secret\n');
  const guarded = await startServer('signalbox', ['--auth-secret-file', secretFile, '--trusted-proxy', '127.0.0.1'], { resolve: signalboxBin });
  const proxied = await startServer('signalbox', ['--trusted-proxy', '127.0.0.1'], { resolve: signalboxBin });
  servers.push(guarded, proxied);
  const far = await fetch(`${proxied.url}/api/calls/live`, { headers: { 'X-Forwarded-For': '203.0.113.5' } });
  assert.equal(far.status, 403);
  assert.match((await far.json()).error, /only on loopback/);
  assert.equal((await fetch(`${guarded.url}/api/calls/live`)).status, 401);
  const { execFileSync } = await import('node:child_process');
  const token = execFileSync(signalboxBin(), ['token', '--admin', '--ttl', '1h', '--auth-secret-file', secretFile], { encoding: 'utf8' }).trim();
  const authorized = await fetch(`${guarded.url}/api/calls/live`, { headers: { Authorization: `Bearer ${token}`, 'X-Forwarded-For': '203.0.113.5' } });
  assert.deepEqual([authorized.status, await authorized.json()], [200, { calls: [] }]);
});

test('push subscriptions and missed calls outlive a restart with --state-dir', async () => {
  const receiver = await startPushReceiver();
  try {
    await restartKeeps(receiver);
  } finally {
    await receiver.close();
  }
});

async function restartKeeps(receiver) {
  const kept = join(dir, 'kept');
  const args = ['--state-dir', kept, '--push-allow', '127.0.0.1', '--call-timeout', '1s'];
  const first = await startServer('signalbox', args, { resolve: signalboxBin });
  servers.push(first);
  const phone = await new Device(first.url).register('gina');
  assert.deepEqual(await phone.ask('register_push', { subscription: receiver.subscribe('gina') }), { ok: true });
  phone.close();
  const door = await new Device(first.url).register('door-9');
  door.emit('make_call', { to: 'gina', offer: OFFER });
  await receiver.next('gina');
  await door.take('call_timeout');
  const ends = [await receiver.next('gina'), await receiver.next('gina')].map((push) => push.payload.type);
  assert.deepEqual(ends.sort(), ['call_cancelled', 'missed_call'], 'two POSTs, in either order');
  door.close();
  await first.stop();
  const second = await startServer('signalbox', args, { resolve: signalboxBin });
  servers.push(second);
  // The subscription is still there: a call pushes; the missed call is told.
  const again = await new Device(second.url).register('door-9');
  again.emit('make_call', { to: 'gina', offer: OFFER });
  assert.equal((await receiver.next('gina')).payload.type, 'incoming_call');
  const woken = await new Device(second.url).register('gina');
  const { calls } = await woken.take('missed_calls');
  assert.deepEqual(calls.map((c) => [c.from, c.reason]), [['door-9', 'timeout']]);
  await woken.take('incoming_call');
  woken.close();
  again.close();
}
