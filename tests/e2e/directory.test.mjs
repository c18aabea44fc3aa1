// The directory (--directory): a door calling a ring group whose members
// are spread over websocket and polling clients, the first answer winning,
// several devices under one name, forwarding when nobody answers,
// do-not-disturb, who may call whom, SIGHUP reloading the file, GET
// /directory behind an admin token, and a broken file refused at start.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device, devices } from './device.mjs';
import { delay, signalboxBin, startServer, withServerLogs, withTimeout } from './helpers.mjs';

const WAIT_MS = 5000;
const dir = mkdtempSync(join(tmpdir(), 'signalbox-directory-'));

const DIRECTORY = `
[users.anna]
devices = 3

[users.door]
may_call = ["flat-*", "concierge"]

[groups."flat-12"]
members = ["anna", "ben", "panel"]
no_answer = "concierge"
no_answer_after = "1500ms"

[groups."flat-13"]
members = ["carl"]

[groups.concierge]
members = ["guard-desk", "guard-phone"]
`;

function writeDirectory(name, text) {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const OFFER = { type: 'offer', sdp: 'v=0 door' };

let server;
const withLogs = (fn) => withServerLogs(() => server, fn);

test('a door calls a group of three, one on polling: the second answers, the others stop', withLogs(async () => {
  server = await startServer('signalbox', ['--directory', writeDirectory('a.toml', DIRECTORY)], { resolve: signalboxBin });
  try {
    const [door, anna, ben, panel] = await devices(server.url, ['door', 'anna', 'ben', 'panel'], {
      panel: { transports: ['polling'] },
    });
    door.emit('make_call', { to: 'flat-12', offer: OFFER });
    for (const member of [anna, ben, panel]) {
      const call = await member.take('incoming_call');
      assert.deepEqual(call, { from: 'door', offer: OFFER, group: 'flat-12' });
    }
    // While it rings, the door's candidates reach every member.
    door.emit('ice_candidate', { to: 'flat-12', candidate: { candidate: 'c1' } });
    for (const member of [anna, ben, panel]) {
      assert.deepEqual(await member.take('ice_candidate'), { from: 'door', candidate: { candidate: 'c1' } });
    }
    ben.emit('answer_call', { to: 'door', answer: { type: 'answer', sdp: 'ben' } });
    assert.deepEqual(await door.take('call_answered'), { from: 'ben', answer: { type: 'answer', sdp: 'ben' } });
    for (const loser of [anna, panel]) {
      assert.deepEqual(await loser.take('call_ended'), { from: 'door', reason: 'answered_elsewhere' });
    }
    // After the answer, ICE goes to the winner only, both ways.
    door.emit('ice_candidate', { to: 'flat-12', candidate: { candidate: 'c2' } });
    assert.deepEqual(await ben.take('ice_candidate'), { from: 'door', candidate: { candidate: 'c2' } });
    ben.emit('ice_candidate', { to: 'door', candidate: { candidate: 'b1' } });
    assert.deepEqual(await door.take('ice_candidate'), { from: 'ben', candidate: { candidate: 'b1' } });
    assert.ok(await anna.none('ice_candidate'));
    assert.ok(await panel.none('ice_candidate', 0));
    // The forward timer is gone with the answer.
    await delay(1700);
    assert.ok(await door.none('call_forwarded', 0));
    door.emit('end_call', { to: 'flat-12' });
    assert.deepEqual(await ben.take('call_ended'), { from: 'door' });
    for (const d of [door, anna, ben, panel]) d.close();
  } finally {
    await server.stop();
  }
}));

test('several devices under one name ring together; the call stays on the one that answered', withLogs(async () => {
  server = await startServer('signalbox', ['--directory', writeDirectory('b.toml', DIRECTORY)], { resolve: signalboxBin });
  try {
    // One after the other, so that the phone is the oldest device.
    const phone = await new Device(server.url).register('anna');
    const tablet = await new Device(server.url).register('anna');
    const guard = await new Device(server.url).register('guard-desk');
    phone.name = 'anna-phone';
    tablet.name = 'anna-tablet';
    guard.emit('make_call', { to: 'anna', offer: OFFER });
    await phone.take('incoming_call');
    await tablet.take('incoming_call');
    tablet.emit('answer_call', { to: 'guard-desk', answer: { sdp: 'tablet' } });
    assert.deepEqual(await guard.take('call_answered'), { from: 'anna', answer: { sdp: 'tablet' } });
    assert.deepEqual(await phone.take('call_ended'), { from: 'guard-desk', reason: 'answered_elsewhere' });
    guard.emit('ice_candidate', { to: 'anna', candidate: { c: 1 } });
    assert.deepEqual(await tablet.take('ice_candidate'), { from: 'guard-desk', candidate: { c: 1 } });
    assert.ok(await phone.none('ice_candidate'));
    // Busy while a device is in a call.
    const ben = await new Device(server.url).register('ben');
    ben.emit('make_call', { to: 'anna', offer: OFFER });
    assert.deepEqual(await ben.take('call_busy'), { targetUser: 'anna' });
    // GET /users lists the name once.
    const users = await (await fetch(`${server.url}/users`)).json();
    assert.deepEqual(users.connectedUsers.filter((u) => u === 'anna'), ['anna']);
    // A fourth device past devices = 3 replaces the oldest.
    const third = await new Device(server.url).register('anna');
    assert.ok(await phone.none('force_disconnect', 100));
    const fourth = await new Device(server.url).register('anna');
    assert.deepEqual(await phone.take('force_disconnect'), { reason: 'new_login' });
    for (const d of [tablet, guard, ben, third, fourth]) d.close();
  } finally {
    await server.stop();
  }
}));

test('nobody answers: forwarded to the concierge after no_answer_after', withLogs(async () => {
  server = await startServer('signalbox', ['--directory', writeDirectory('c.toml', DIRECTORY)], { resolve: signalboxBin });
  try {
    const [door, anna, desk] = await devices(server.url, ['door', 'anna', 'guard-desk']);
    door.emit('make_call', { to: 'flat-12', offer: OFFER });
    await anna.take('incoming_call');
    door.emit('ice_candidate', { to: 'flat-12', candidate: { c: 1 } });
    const started = Date.now();
    assert.deepEqual(await door.take('call_forwarded'), { from: 'flat-12', to: 'concierge' });
    assert.ok(Date.now() - started > 1000, 'forwarded after about 1.5 s');
    assert.deepEqual(await anna.take('call_ended'), { from: 'door', reason: 'forwarded' });
    assert.deepEqual(await desk.take('incoming_call'), { from: 'door', offer: OFFER, group: 'concierge' });
    // The candidates gathered so far follow the call.
    assert.deepEqual(await desk.take('ice_candidate'), { from: 'door', candidate: { c: 1 } });
    desk.emit('answer_call', { to: 'door', answer: { sdp: 'desk' } });
    assert.deepEqual(await door.take('call_answered'), { from: 'guard-desk', answer: { sdp: 'desk' } });
    for (const d of [door, anna, desk]) d.close();
  } finally {
    await server.stop();
  }
}));

test('do-not-disturb and may_call', withLogs(async () => {
  server = await startServer('signalbox', ['--directory', writeDirectory('d.toml', DIRECTORY)], { resolve: signalboxBin });
  try {
    const [door, anna, anna2, ben, desk] = await devices(server.url, ['door', 'anna', 'anna', 'ben', 'guard-desk']);
    assert.deepEqual(await anna.ask('set_dnd', { on: true }), { ok: true });
    assert.deepEqual(await anna.take('dnd'), { on: true });
    assert.deepEqual(await anna2.take('dnd'), { on: true });
    // Skipped as a member: only ben rings.
    door.emit('make_call', { to: 'flat-12', offer: OFFER });
    await ben.take('incoming_call');
    assert.ok(await anna.none('incoming_call'));
    door.emit('end_call', { to: 'flat-12' });
    await ben.take('call_ended');
    // A direct call to her is refused in words.
    desk.emit('make_call', { to: 'anna', offer: OFFER });
    assert.deepEqual(await desk.take('call_failed'), { error: 'user does not want to be disturbed', targetUser: 'anna' });
    assert.deepEqual(await anna.ask('set_dnd', { on: false }), { ok: true });
    desk.emit('make_call', { to: 'anna', offer: OFFER });
    await anna.take('incoming_call');
    desk.emit('end_call', { to: 'anna' });
    // The door may call flats and the concierge, nobody else.
    door.emit('make_call', { to: 'ben', offer: OFFER });
    assert.deepEqual(await door.take('call_failed'), { error: 'not allowed to call this user', targetUser: 'ben' });
    assert.deepEqual(await door.ask('make_call', { to: 'ben', offer: OFFER }), { ok: false, error: 'not allowed to call this user' });
    await door.take('call_failed');
    // Nobody of a group there: offline, in the seed's words.
    door.emit('make_call', { to: 'flat-13', offer: OFFER });
    assert.deepEqual(await door.take('call_failed'), { error: 'user is offline', targetUser: 'flat-13' });
    // A group's name cannot be registered.
    const squatter = new Device(server.url);
    await squatter.take('$connect');
    squatter.emit('register_user', { userId: 'flat-12' });
    assert.equal((await squatter.take('user_registered')).success, false);
    for (const d of [door, anna, anna2, ben, desk, squatter]) d.close();
  } finally {
    await server.stop();
  }
}));

test('SIGHUP reloads the directory: a new member rings; a broken file keeps the old one', withLogs(async () => {
  const path = writeDirectory('e.toml', DIRECTORY);
  server = await startServer('signalbox', ['--directory', path], { resolve: signalboxBin });
  try {
    const [door, carl, dora] = await devices(server.url, ['door', 'carl', 'dora']);
    writeFileSync(path, DIRECTORY.replace('members = ["carl"]', 'members = ["carl", "dora"]'));
    process.kill(server.pid, 'SIGHUP');
    await withTimeout((async () => {
      while (!server.logs.some((l) => l.includes('SIGHUP: directory reloaded'))) await delay(20);
    })(), WAIT_MS, 'the reload');
    door.emit('make_call', { to: 'flat-13', offer: OFFER });
    await carl.take('incoming_call');
    assert.equal((await dora.take('incoming_call')).group, 'flat-13');
    // A broken file: logged with its line, the directory stays.
    writeFileSync(path, '[groups."flat-13"]\nmembers = ["carl"]\nring = "sometimes"\n');
    process.kill(server.pid, 'SIGHUP');
    await withTimeout((async () => {
      while (!server.logs.some((l) => l.includes('directory not reloaded'))) await delay(20);
    })(), WAIT_MS, 'the refusal');
    const line = server.logs.find((l) => l.includes('directory not reloaded'));
    assert.match(line, /e\.toml:3: ring must be "all" or "in-order"/);
    // The ringing call was not touched by either reload.
    dora.emit('answer_call', { to: 'door', answer: { sdp: 'dora' } });
    assert.equal((await door.take('call_answered')).from, 'dora');
    assert.deepEqual(await carl.take('call_ended'), { from: 'door', reason: 'answered_elsewhere' });
    for (const d of [door, carl, dora]) d.close();
  } finally {
    await server.stop();
  }
}));

test('GET /directory lists groups, members and who is online, behind an admin token', withLogs(async () => {
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'a secret that is long enough for tokens\n');
  server = await startServer('signalbox', ['--directory', writeDirectory('f.toml', DIRECTORY), '--auth-secret-file', secret], {
    resolve: signalboxBin,
  });
  const token = (args) => new Promise((resolve, reject) => {
    const p = spawn(signalboxBin(), ['token', ...args, '--auth-secret-file', secret]);
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`token exited ${code}`))));
  });
  try {
    const annaToken = await token(['--user', 'anna']);
    const anna = await new Device(server.url, { auth: { token: annaToken } }).register('anna');
    assert.equal((await fetch(`${server.url}/directory`)).status, 401);
    const asAnna = await fetch(`${server.url}/directory`, { headers: { Authorization: `Bearer ${annaToken}` } });
    assert.equal(asAnna.status, 401);
    const admin = await token(['--admin']);
    const res = await fetch(`${server.url}/directory`, { headers: { Authorization: `Bearer ${admin}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.totalGroups, 3);
    const flat = body.groups.find((g) => g.name === 'flat-12');
    assert.deepEqual(flat.members.map((m) => [m.name, m.online]), [['anna', true], ['ben', false], ['panel', false]]);
    assert.equal(flat.members[0].devices, 1);
    assert.equal(flat.noAnswer, 'concierge');
    assert.equal(flat.online, 1);
    // An admin token registers no name.
    const sneaky = new Device(server.url, { auth: { token: admin } });
    await sneaky.take('$connect');
    sneaky.emit('register_user', { userId: 'anna' });
    assert.equal((await sneaky.take('user_registered')).success, false);
    anna.close();
    sneaky.close();
  } finally {
    await server.stop();
  }
}));

test('a broken directory file is refused at start with its line and reason', async () => {
  const path = writeDirectory('bad.toml', '[groups.a]\nmembers = ["b"]\n\n[groups.b]\nmembers = ["a"]\n');
  const p = spawn(signalboxBin(), ['--listen', '127.0.0.1:0', '--directory', path]);
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const code = await new Promise((resolve) => p.on('exit', resolve));
  assert.notEqual(code, 0);
  assert.match(err, /bad\.toml:1: group "a" contains itself through "b"/);
});
