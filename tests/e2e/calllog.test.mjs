// The durable call log (--state-dir): one JSON line per call, synced as it
// ends: answered (with the door opened from it), declined, rung out and
// given up; `kill -9` during a burst of calls leaves a log whose every
// complete line parses, and a restart on it keeps its VAPID key.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from './device.mjs';
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
