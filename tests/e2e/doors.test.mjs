// Door stations (--directory with kind = "door"): the door calls a flat, the
// resident opens the door during the call and the door's socket gets
// door_open, the station's command writes a file, and the call hangs up
// after the opening; a stranger and a finished call are refused; a command
// that fails and one that hangs past its timeout (two at once waiting for
// the one run); the audit lines and the counters in /metrics; the maximum
// call length; a door opened while the call still rings; and on two
// cluster nodes, the station's node opening its door for a resident and an
// opener on the other.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { devices } from './device.mjs';
import { freePort, startRedis } from './redis.mjs';
import { signalboxBin, startServer, waitUntil, withServerLogs } from './helpers.mjs';

const dir = mkdtempSync(join(tmpdir(), 'signalbox-doors-'));
const opened = join(dir, 'opened.log');

const DIRECTORY = `
[users.front-door]
kind = "door"
doors = ["main", "garage"]
openers = ["concierge"]
open_command = ["/bin/sh", "-c", "echo \\"$SIGNALBOX_STATION/$SIGNALBOX_DOOR by $SIGNALBOX_OPENED_BY\\" >> ${opened}"]
hang_up_after_open = "1s"

[users.broken-door]
kind = "door"
doors = ["main"]
openers = ["concierge"]
open_command = ["/bin/sh", "-c", "exit 7"]

[users.stuck-door]
kind = "door"
doors = ["main"]
openers = ["concierge"]
open_command = ["/bin/sleep", "30"]
open_timeout = "300ms"

[users.short-door]
kind = "door"
doors = ["main"]
max_call = "2s"

[groups."flat-1"]
members = ["resident"]
`;

let server;
const withLogs = (fn) => withServerLogs(() => server, fn);

before(async () => {
  const path = join(dir, 'directory.toml');
  writeFileSync(path, DIRECTORY);
  server = await startServer('signalbox', ['--directory', path], { resolve: signalboxBin });
});

after(async () => {
  await server?.stop();
});

const OFFER = { type: 'offer', sdp: 'v=0 door' };
const ANSWER = { type: 'answer', sdp: 'v=0 flat' };

/** `door` calls the flat, `resident` answers; resolves once the door hears it. */
async function talking(door, resident) {
  door.emit('make_call', { to: 'flat-1', offer: OFFER });
  await resident.take('incoming_call');
  resident.emit('answer_call', { to: door.name, answer: ANSWER });
  await door.take('call_answered');
}

async function metrics() {
  const response = await fetch(`${server.url}/metrics`);
  return response.text();
}

function counter(page, station, door, result) {
  const line = page.split('\n').find((l) => l.startsWith(
    `signalbox_door_opens_total{station="${station}",door="${door}",result="${result}"}`,
  ));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

test('directory: every station\'s doors, and whom this user may call', withLogs(async () => {
  const [door, resident] = await devices(server.url, ['front-door', 'resident']);
  try {
    const stations = {
      'broken-door': ['main'],
      'front-door': ['main', 'garage'],
      'short-door': ['main'],
      'stuck-door': ['main'],
    };
    await waitUntil(() => door.events.some((e) => e.event === 'directory'));
    const order = door.events.map((e) => e.event);
    assert.ok(order.indexOf('ice_servers') < order.indexOf('directory'), `directory after ice_servers: ${order}`);
    // A door panel's buttons: no station, not itself.
    assert.deepEqual(await door.take('directory'), { doors: stations, groups: ['flat-1'], users: ['resident'] });
    assert.deepEqual(await resident.take('directory'), { doors: stations, groups: ['flat-1'], users: [] });
  } finally {
    for (const d of [door, resident]) d.close();
  }
}));

test('the resident opens the door from the call: door_open, the command, the hang-up, the audit line', withLogs(async () => {
  const [door, resident, eve] = await devices(server.url, ['front-door', 'resident', 'eve']);
  try {
    await talking(door, resident);
    // A stranger is refused, and the door hears nothing.
    assert.deepEqual(
      await eve.ask('open_door', { to: 'front-door', door: 'main' }),
      { ok: false, error: 'not allowed to open this door' },
    );
    assert.deepEqual(
      await resident.ask('open_door', { to: 'front-door', door: 'main' }),
      { ok: true, exitStatus: 0 },
    );
    assert.deepEqual(await door.take('door_open'), { from: 'resident', door: 'main' });
    assert.ok(await door.none('door_open', 0), 'one door_open per opening');
    assert.equal(readFileSync(opened, 'utf8'), 'front-door/main by resident\n');
    // hang_up_after_open: the call ends for both a second later.
    assert.deepEqual(await door.take('call_ended', 3000), { from: 'resident', reason: 'door_opened' });
    assert.deepEqual(await resident.take('call_ended', 3000), { from: 'front-door', reason: 'door_opened' });
    // The call is over: the resident may not open any more.
    assert.deepEqual(
      await resident.ask('open_door', { to: 'front-door', door: 'garage' }),
      { ok: false, error: 'not allowed to open this door' },
    );
    const audit = server.logs.filter((l) => l.includes('door front-door/main asked by'));
    assert.ok(
      audit.some((l) => /asked by resident in call c\d+ \(front-door -> flat-1\): opened, command exited 0/.test(l)),
      audit.join('\n'),
    );
    assert.ok(audit.some((l) => /asked by eve without a call: refused \(not allowed to open this door\)/.test(l)), audit.join('\n'));
    assert.ok(server.logs.some((l) => l.includes('door front-door/garage asked by resident without a call: refused')));
    const page = await metrics();
    assert.equal(counter(page, 'front-door', 'main', 'opened'), 1, page);
    assert.equal(counter(page, 'front-door', 'main', 'refused'), 1);
    assert.equal(counter(page, 'front-door', 'garage', 'refused'), 1);
    assert.equal(counter(page, 'front-door', 'garage', 'opened'), 0);
  } finally {
    for (const d of [door, resident, eve]) d.close();
  }
}));

test('commands that fail or hang are reported in the ack; one run per door at a time', withLogs(async () => {
  const [concierge, broken, stuck] = await devices(server.url, ['concierge', 'broken-door', 'stuck-door']);
  try {
    assert.deepEqual(
      await concierge.ask('open_door', { to: 'broken-door', door: 'main' }),
      { ok: false, error: "the door's command failed: command exited 7", exitStatus: 7 },
    );
    // door_open reaches the station anyway: its app may drive the relay.
    assert.deepEqual(await broken.take('door_open'), { from: 'concierge', door: 'main' });
    const started = Date.now();
    const [first, second] = await Promise.all([
      concierge.ask('open_door', { to: 'stuck-door', door: 'main' }),
      concierge.ask('open_door', { to: 'stuck-door', door: 'main' }),
    ]);
    const expected = { ok: false, error: "the door's command did not finish within 300ms" };
    assert.deepEqual(first, expected);
    assert.deepEqual(second, expected, 'the second waited for the run under way');
    assert.ok(Date.now() - started < 3000, 'killed at its timeout, not after 30 s');
    await waitUntil(
      () => server.logs.filter((l) => l.includes('door stuck-door/main asked by concierge without a call: timeout')).length === 2,
      3000,
      'two audit lines',
    );
    const page = await metrics();
    assert.equal(counter(page, 'broken-door', 'main', 'failed'), 1, page);
    assert.equal(counter(page, 'stuck-door', 'main', 'timeout'), 2, page);
  } finally {
    for (const d of [concierge, broken, stuck]) d.close();
  }
}));

test('no such door, and a station that is offline', withLogs(async () => {
  const [concierge] = await devices(server.url, ['concierge']);
  try {
    for (const [to, door] of [['front-door', 'cellar'], ['resident', 'main'], ['nobody', 'main']]) {
      assert.deepEqual(await concierge.ask('open_door', { to, door }), { ok: false, error: 'no such door' }, `${to}/${door}`);
    }
    assert.deepEqual(
      await concierge.ask('open_door', { to: 'front-door', door: 'main' }),
      { ok: false, error: 'the door station is offline' },
    );
    assert.deepEqual(await concierge.ask('open_door', { to: 'front-door' }), {
      ok: false,
      error: 'invalid payload: open_door: missing field `door`',
    });
    const page = await metrics();
    assert.ok(counter(page, '', '', 'refused') >= 3, page);
  } finally {
    concierge.close();
  }
}));

test("a door station's max_call: call_ending, then call_ended max_duration", withLogs(async () => {
  const [door, resident] = await devices(server.url, ['short-door', 'resident']);
  try {
    await talking(door, resident);
    // 2 s, shorter than the warning's 10: it comes at once, with the
    // seconds there are.
    assert.deepEqual(await door.take('call_ending', 1000), { seconds: 2 });
    assert.deepEqual(await resident.take('call_ending', 1000), { seconds: 2 });
    assert.deepEqual(await door.take('call_ended', 4000), { from: 'resident', reason: 'max_duration' });
    assert.deepEqual(await resident.take('call_ended', 1000), { from: 'short-door', reason: 'max_duration' });
  } finally {
    door.close();
    resident.close();
  }
}));

test('a door opened while the call still rings ends it for everyone after hang_up_after_open', withLogs(async () => {
  const [door, resident] = await devices(server.url, ['front-door', 'resident']);
  try {
    door.emit('make_call', { to: 'flat-1', offer: OFFER });
    await resident.take('incoming_call');
    assert.deepEqual(await resident.ask('open_door', { to: 'front-door', door: 'main' }), { ok: true, exitStatus: 0 });
    await door.take('door_open');
    assert.deepEqual(await door.take('call_ended', 3000), { from: 'flat-1', reason: 'door_opened' });
    assert.deepEqual(await resident.take('call_ended', 3000), { from: 'front-door', reason: 'door_opened' });
  } finally {
    door.close();
    resident.close();
  }
}));

test('on two cluster nodes, the station\'s node opens its door for whoever may, on either node', async () => {
  const redis = await startRedis(await freePort());
  const path = join(dir, 'directory.toml');
  const nodes = [];
  try {
    for (let i = 0; i < 2; i += 1) {
      nodes.push(await startServer('signalbox', ['--directory', path, '--redis', redis.url], { resolve: signalboxBin }));
    }
    const [door] = await devices(nodes[1].url, ['front-door']);
    const [resident, concierge, eve] = await devices(nodes[0].url, ['resident', 'concierge', 'eve']);
    try {
      await talking(door, resident);
      const before = readFileSync(opened, 'utf8').split('\n').length;
      assert.deepEqual(await resident.ask('open_door', { to: 'front-door', door: 'main' }), { ok: true, exitStatus: 0 });
      assert.deepEqual(await door.take('door_open'), { from: 'resident', door: 'main' });
      assert.equal(readFileSync(opened, 'utf8').split('\n').length, before + 1);
      const audit = (node) => node.logs.filter((l) => l.includes('door front-door/main asked by resident in call'));
      assert.equal(audit(nodes[1]).length, 1, 'the station\'s node ran it and logged it');
      assert.equal(audit(nodes[0]).length, 0);
      assert.deepEqual(await door.take('call_ended', 3000), { from: 'resident', reason: 'door_opened' });
      assert.deepEqual(await resident.take('call_ended', 3000), { from: 'front-door', reason: 'door_opened' });
      // An opener without a call, and a stranger, on the other node.
      assert.deepEqual(await concierge.ask('open_door', { to: 'front-door', door: 'garage' }), { ok: true, exitStatus: 0 });
      assert.deepEqual(await door.take('door_open'), { from: 'concierge', door: 'garage' });
      assert.deepEqual(await eve.ask('open_door', { to: 'front-door', door: 'main' }), { ok: false, error: 'not allowed to open this door' });
      door.close();
      await waitUntil(async () => {
        const reply = await concierge.ask('open_door', { to: 'front-door', door: 'main' });
        return reply.error === 'the door station is offline';
      }, 5000, 'the station offline once it left');
    } finally {
      for (const d of [door, resident, concierge, eve]) d.close();
    }
  } finally {
    await Promise.all(nodes.map((node) => node.stop()));
    await redis.stop();
  }
});

test('--max-call-duration limits every call: call_ending, then call_ended max_duration', async () => {
  const limited = await startServer('signalbox', ['--max-call-duration', '3s'], { resolve: signalboxBin });
  const [caller, callee] = await devices(limited.url, ['m-caller', 'm-callee']);
  try {
    caller.emit('make_call', { to: 'm-callee', offer: OFFER });
    await callee.take('incoming_call');
    callee.emit('answer_call', { to: 'm-caller', answer: ANSWER });
    await caller.take('call_answered');
    // 3 s, shorter than the warning's 10: it comes at once.
    assert.deepEqual(await caller.take('call_ending', 1000), { seconds: 3 });
    assert.deepEqual(await callee.take('call_ending', 1000), { seconds: 3 });
    assert.deepEqual(await caller.take('call_ended', 5000), { from: 'm-callee', reason: 'max_duration' });
    assert.deepEqual(await callee.take('call_ended', 1000), { from: 'm-caller', reason: 'max_duration' });
  } finally {
    caller.close();
    callee.close();
    await limited.stop();
  }
});
