// Several signalbox nodes as one intercom on a real Redis: three nodes on
// different ports, socket.io-client users spread across them, the seed's
// scenarios across nodes, a ring group whose members are on every node,
// then a node killed with SIGKILL mid-call, Redis restarted under live
// calls, and Redis missing at start.
//
// Needs Debian's redis-server (tests/run installs it); each test run starts
// its own on a free loopback port and stops it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { delay, once, signalboxBin, startServer, waitUntil, withTimeout } from './helpers.mjs';
import { freePort, startRedis } from './redis.mjs';

const TTL_S = 3; // --presence-ttl
const RING_S = 3; // --call-timeout
const EVENT_MS = 5000;

let redis;
const nodes = [];
const sockets = [];

// Every node reads the same directory, as a cluster's nodes must.
const directory = join(mkdtempSync(join(tmpdir(), 'signalbox-cluster-')), 'directory.toml');
writeFileSync(directory, `
[groups.g-flat]
members = ["g-anna", "g-ben", "g-panel"]

[users.m-anna]
devices = 3

[groups.m-flat]
members = ["m-anna", "m-ben"]
`);

function startNode(extra = []) {
  return startServer('signalbox', [
    '--redis', redis.url,
    '--directory', directory,
    '--presence-ttl', `${TTL_S}s`,
    '--call-timeout', `${RING_S}s`,
    '--calls-per-minute', '1000',
    ...extra,
  ], { resolve: signalboxBin });
}

before(async () => {
  redis = await startRedis(await freePort());
  for (let i = 0; i < 3; i += 1) nodes.push(await startNode());
});

after(async () => {
  for (const socket of sockets) socket.disconnect();
  await Promise.all(nodes.map((node) => node.stop()));
  await redis?.stop();
});

/** A socket.io-client on `node`, registered as `userId`. WebSocket-only unless `polling`. */
async function user(node, userId, { polling = false } = {}) {
  const socket = io(node.url, {
    forceNew: true,
    reconnection: false,
    transports: polling ? ['polling', 'websocket'] : ['websocket'],
  });
  socket.errors = [];
  socket.on('signaling_error', (error) => socket.errors.push(error));
  sockets.push(socket);
  const registered = once(socket, 'user_registered', EVENT_MS);
  socket.emit('register_user', { userId });
  const [reply] = await registered;
  assert.deepEqual(reply, { success: true, userId });
  return socket;
}

/** Collects every `event` the socket receives, from now on. */
function collect(socket, event) {
  const seen = [];
  socket.on(event, (payload) => seen.push(payload));
  return seen;
}

async function getJson(node, path) {
  const response = await fetch(node.url + path, { signal: AbortSignal.timeout(EVENT_MS) });
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
}

const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' };
const answer = { type: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' };
const candidate = (n) => ({ candidate: `candidate:${n} 1 udp 2122260223 192.0.2.${n} 5440${n} typ host`, sdpMid: '0', sdpMLineIndex: 0 });

/** `caller` calls `callee`; resolves with what the callee got. */
async function ring(caller, callee, to) {
  const incoming = once(callee, 'incoming_call', EVENT_MS);
  caller.emit('make_call', { to, offer });
  const [call] = await incoming;
  return call;
}

/** `caller` (`from`) calls `callee` (`to`), who answers; resolves once the caller hears it. */
async function answered(caller, callee, to, from) {
  await ring(caller, callee, to);
  callee.emit('answer_call', { to: from, answer });
  await once(caller, 'call_answered', EVENT_MS);
}

test('presence and GET / are cluster-wide', async () => {
  const [a, b, c] = nodes;
  await user(a, 'p-one');
  await user(b, 'p-two', { polling: true });
  await user(c, 'p-three');
  for (const node of nodes) {
    const users = await getJson(node, '/users');
    for (const name of ['p-one', 'p-two', 'p-three']) {
      assert.ok(users.connectedUsers.includes(name), `${name} listed by ${node.url}: ${JSON.stringify(users)}`);
    }
    assert.equal(users.totalUsers, users.connectedUsers.length);
    const health = await getJson(node, '/');
    assert.equal(health.status, 'WebRTC Signaling Server Running');
    assert.ok(health.connectedUsers >= 3);
  }
});

test('a call across nodes: offer, ICE both ways in order, answer, hang-up', async () => {
  const [a, b] = nodes;
  const door = await user(a, 'door-1');
  const flat = await user(b, 'flat-1', { polling: true });
  const atFlat = collect(flat, 'ice_candidate');
  const atDoor = collect(door, 'ice_candidate');

  // Candidates right behind the offer, as trickle ICE sends them: they must
  // arrive after incoming_call and in order.
  const incoming = once(flat, 'incoming_call', EVENT_MS);
  door.emit('make_call', { to: 'flat-1', offer });
  for (let n = 1; n <= 5; n += 1) door.emit('ice_candidate', { to: 'flat-1', candidate: candidate(n) });
  const [call] = await incoming;
  assert.deepEqual(call, { from: 'door-1', offer });
  await waitUntil(() => atFlat.length === 5, EVENT_MS, 'five candidates at flat-1');
  assert.deepEqual(atFlat.map((c) => c.candidate.candidate), [1, 2, 3, 4, 5].map((n) => candidate(n).candidate));
  assert.ok(atFlat.every((c) => c.from === 'door-1'));

  const answered = once(door, 'call_answered', EVENT_MS);
  const ack = await flat.timeout(EVENT_MS).emitWithAck('answer_call', { to: 'door-1', answer });
  assert.deepEqual(ack, { ok: true });
  assert.deepEqual((await answered)[0], { from: 'flat-1', answer });
  flat.emit('ice_candidate', { to: 'door-1', candidate: candidate(9) });
  await waitUntil(() => atDoor.length === 1, EVENT_MS, 'a candidate at door-1');
  assert.deepEqual(atDoor[0], { from: 'flat-1', candidate: candidate(9) });

  const health = await getJson(a, '/');
  assert.ok(health.activeCalls >= 1, JSON.stringify(health));

  const ended = once(flat, 'call_ended', EVENT_MS);
  door.emit('end_call', { to: 'flat-1' });
  assert.deepEqual((await ended)[0], { from: 'door-1' });
  assert.deepEqual(door.errors, []);
  assert.deepEqual(flat.errors, []);
  // Both are free again: flat can call door.
  assert.deepEqual(await ring(flat, door, 'door-1'), { from: 'flat-1', offer });
  flat.emit('end_call', { to: 'door-1' });
});

test('decline across nodes', async () => {
  const [, b, c] = nodes;
  const door = await user(b, 'door-2');
  const flat = await user(c, 'flat-2');
  await ring(door, flat, 'flat-2');
  const declined = once(door, 'call_declined', EVENT_MS);
  flat.emit('decline_call', { to: 'door-2' });
  assert.deepEqual((await declined)[0], { from: 'flat-2' });
  // Declined means free: a new call goes through.
  await ring(door, flat, 'flat-2');
  flat.emit('decline_call', { to: 'door-2' });
});

test('busy holds across nodes, and calls to nobody fail', async () => {
  const [a, b, c] = nodes;
  const door = await user(a, 'door-3');
  const flat = await user(b, 'flat-3');
  const guard = await user(c, 'guard-3');
  await ring(door, flat, 'flat-3');

  for (const target of ['flat-3', 'door-3']) {
    const busy = once(guard, 'call_busy', EVENT_MS);
    guard.emit('make_call', { to: target, offer });
    assert.deepEqual((await busy)[0], { targetUser: target });
  }
  const failed = once(guard, 'call_failed', EVENT_MS);
  guard.emit('make_call', { to: 'nobody-3', offer });
  const [failure] = await failed;
  assert.equal(failure.targetUser, 'nobody-3');
  assert.match(failure.error, /offline/);
  door.emit('end_call', { to: 'flat-3' });
  await once(flat, 'call_ended', EVENT_MS);
});

test('two nodes ringing the same user at once: one rings, the other hears busy', async () => {
  const [a, b, c] = nodes;
  const flat = await user(b, 'flat-10');
  const left = await user(a, 'left-10');
  const right = await user(c, 'right-10');
  for (let round = 0; round < 5; round += 1) {
    const incoming = collect(flat, 'incoming_call');
    const outcomes = [left, right].map((caller) => new Promise((resolve) => {
      caller.once('call_busy', (payload) => resolve(['busy', payload]));
      caller.once('call_failed', (payload) => resolve(['failed', payload]));
      flat.once('incoming_call', (payload) => {
        if (payload.from === caller.userId) resolve(['rang', payload]);
      });
    }));
    left.userId = 'left-10';
    right.userId = 'right-10';
    left.emit('make_call', { to: 'flat-10', offer });
    right.emit('make_call', { to: 'flat-10', offer });
    const results = await Promise.race([
      Promise.all(outcomes),
      delay(EVENT_MS).then(() => { throw new Error(`round ${round}: no outcome for both callers`); }),
    ]);
    const kinds = results.map(([kind]) => kind).sort();
    assert.deepEqual(kinds, ['busy', 'rang'], `round ${round}: ${JSON.stringify(results)}`);
    await delay(200); // nothing else arrives late
    assert.equal(incoming.length, 1, `round ${round}: ${JSON.stringify(incoming)}`);
    const winner = results[0][0] === 'rang' ? left : right;
    const ended = once(flat, 'call_ended', EVENT_MS);
    winner.emit('end_call', { to: 'flat-10' });
    await ended;
    for (const socket of [left, right, flat]) {
      socket.removeAllListeners('call_busy');
      socket.removeAllListeners('call_failed');
      socket.removeAllListeners('incoming_call');
    }
  }
});

test('a group whose members are on every node: all ring, the first answer wins, ICE to the winner only', async () => {
  const [a, b, c] = nodes;
  const door = await user(a, 'g-door');
  const members = {
    'g-anna': await user(b, 'g-anna'),
    'g-ben': await user(c, 'g-ben', { polling: true }),
    'g-panel': await user(a, 'g-panel'),
  };
  const everyone = Object.values(members);
  const ringAll = async () => {
    const rings = everyone.map((member) => once(member, 'incoming_call', EVENT_MS));
    door.emit('make_call', { to: 'g-flat', offer });
    for (const [call] of await Promise.all(rings)) {
      assert.deepEqual(call, { from: 'g-door', offer, group: 'g-flat' });
    }
  };
  for (let round = 0; round < 3; round += 1) {
    await ringAll();
    // The caller's candidates reach every member while it rings.
    const early = everyone.map((member) => once(member, 'ice_candidate', EVENT_MS));
    door.emit('ice_candidate', { to: 'g-flat', candidate: candidate(1) });
    for (const [got] of await Promise.all(early)) assert.deepEqual(got, { from: 'g-door', candidate: candidate(1) });

    // Two members on different nodes answer at once: one wins, and the
    // other (and the one who did not answer) hear answered_elsewhere.
    const [first, second] = round === 1 ? ['g-ben', 'g-anna'] : ['g-anna', 'g-ben'];
    const answeredBy = once(door, 'call_answered', EVENT_MS);
    const endings = new Map(everyone.map((member) => [member, new Promise((resolve) => {
      member.once('call_ended', (payload) => resolve(payload));
    })]));
    members[first].emit('answer_call', { to: 'g-door', answer });
    members[second].emit('answer_call', { to: 'g-door', answer });
    const [{ from: winnerName }] = await answeredBy;
    assert.ok([first, second].includes(winnerName), winnerName);
    const winner = members[winnerName];
    for (const [name, member] of Object.entries(members)) {
      if (member === winner) continue;
      const ended = await withTimeout(endings.get(member), EVENT_MS, `${name}: call_ended`);
      assert.deepEqual(ended, { from: 'g-door', reason: 'answered_elsewhere' });
    }
    const late = collect(door, 'call_answered');
    const afterAnswer = new Map(everyone.map((member) => [member, collect(member, 'ice_candidate')]));
    const toWinner = once(winner, 'ice_candidate', EVENT_MS);
    door.emit('ice_candidate', { to: 'g-flat', candidate: candidate(2) });
    assert.deepEqual((await toWinner)[0], { from: 'g-door', candidate: candidate(2) });
    const toDoor = once(door, 'ice_candidate', EVENT_MS);
    winner.emit('ice_candidate', { to: 'g-door', candidate: candidate(3) });
    assert.deepEqual((await toDoor)[0], { from: winnerName, candidate: candidate(3) });
    await delay(200); // nothing else arrives late
    for (const member of everyone) {
      if (member !== winner) assert.deepEqual(afterAnswer.get(member), []);
    }
    assert.deepEqual(late, []);

    const ended = endings.get(winner);
    door.emit('end_call', { to: winnerName });
    assert.deepEqual(await withTimeout(ended, EVENT_MS, 'the winner\'s call_ended'), { from: 'g-door' });
  }
  // Everyone is free again cluster-wide: a new call rings them all, and the
  // caller hanging up stops every one of them.
  await ringAll();
  const stops = everyone.map((member) => once(member, 'call_ended', EVENT_MS));
  door.emit('end_call', { to: 'g-flat' });
  for (const [stop] of await Promise.all(stops)) assert.deepEqual(stop, { from: 'g-door' });
});

test('a user with a device on every node: all ring, one answers for the user, the fourth replaces the oldest', async () => {
  const [a, b, c] = nodes;
  const phones = [await user(a, 'm-anna'), await user(b, 'm-anna', { polling: true }), await user(c, 'm-anna')];
  const door = await user(c, 'm-door');
  const users = await getJson(a, '/users');
  assert.equal(users.connectedUsers.filter((u) => u === 'm-anna').length, 1);

  const rings = phones.map((phone) => once(phone, 'incoming_call', EVENT_MS));
  door.emit('make_call', { to: 'm-anna', offer });
  for (const [call] of await Promise.all(rings)) assert.deepEqual(call, { from: 'm-door', offer });
  const early = phones.map((phone) => once(phone, 'ice_candidate', EVENT_MS));
  door.emit('ice_candidate', { to: 'm-anna', candidate: candidate(1) });
  await Promise.all(early);

  // The device on b answers: the call is the user's, and that device's.
  const others = [phones[0], phones[2]].map((phone) => once(phone, 'call_ended', EVENT_MS));
  const answeredBy = once(door, 'call_answered', EVENT_MS);
  const ack = await phones[1].timeout(EVENT_MS).emitWithAck('answer_call', { to: 'm-door', answer });
  assert.deepEqual(ack, { ok: true });
  assert.deepEqual((await answeredBy)[0], { from: 'm-anna', answer });
  for (const [ended] of await Promise.all(others)) {
    assert.deepEqual(ended, { from: 'm-door', reason: 'answered_elsewhere' });
  }
  const stray = [phones[0], phones[2]].map((phone) => collect(phone, 'ice_candidate'));
  const toPhone = once(phones[1], 'ice_candidate', EVENT_MS);
  door.emit('ice_candidate', { to: 'm-anna', candidate: candidate(2) });
  assert.deepEqual((await toPhone)[0], { from: 'm-door', candidate: candidate(2) });
  const toDoor = once(door, 'ice_candidate', EVENT_MS);
  phones[1].emit('ice_candidate', { to: 'm-door', candidate: candidate(3) });
  assert.deepEqual((await toDoor)[0], { from: 'm-anna', candidate: candidate(3) });
  // Busy cluster-wide while one device talks; the others cannot speak for the call.
  const other = await user(a, 'm-other');
  const busy = once(other, 'call_busy', EVENT_MS);
  other.emit('make_call', { to: 'm-anna', offer });
  assert.deepEqual((await busy)[0], { targetUser: 'm-anna' });
  const refused = await phones[2].timeout(EVENT_MS).emitWithAck('end_call', { to: 'm-door' });
  assert.equal(refused.ok, false);
  await delay(200);
  assert.deepEqual(stray, [[], []]);
  const hungUp = once(phones[1], 'call_ended', EVENT_MS);
  door.emit('end_call', { to: 'm-anna' });
  assert.deepEqual((await hungUp)[0], { from: 'm-door' });

  // A fourth device (on b) replaces the oldest (on a).
  const kicked = once(phones[0], 'force_disconnect', EVENT_MS);
  const fourth = await user(b, 'm-anna');
  assert.deepEqual((await kicked)[0], { reason: 'new_login' });
  const devices = [phones[1], phones[2], fourth];

  // In a group, every device of the member rings; the first answer wins.
  const ben = await user(a, 'm-ben');
  const ringing = [...devices, ben].map((phone) => once(phone, 'incoming_call', EVENT_MS));
  door.emit('make_call', { to: 'm-flat', offer });
  for (const [call] of await Promise.all(ringing)) assert.deepEqual(call, { from: 'm-door', offer, group: 'm-flat' });
  const losers = [phones[1], fourth, ben].map((phone) => once(phone, 'call_ended', EVENT_MS));
  const won = once(door, 'call_answered', EVENT_MS);
  phones[2].emit('answer_call', { to: 'm-door', answer });
  assert.equal((await won)[0].from, 'm-anna');
  for (const [ended] of await Promise.all(losers)) {
    assert.deepEqual(ended, { from: 'm-door', reason: 'answered_elsewhere' });
  }
  const last = once(door, 'call_ended', EVENT_MS);
  phones[2].emit('end_call', { to: 'm-door' });
  assert.deepEqual((await last)[0], { from: 'm-anna' });
  // Logging out each device frees the name.
  for (const phone of devices) phone.emit('logout_user', { userId: 'm-anna' });
  await waitUntil(async () => !(await getJson(c, '/users')).connectedUsers.includes('m-anna'), EVENT_MS);
});

test('logout mid-call across nodes ends it for the peer and frees both', async () => {
  const [a, b] = nodes;
  const door = await user(a, 'door-11');
  const flat = await user(b, 'flat-11');
  await answered(door, flat, 'flat-11', 'door-11');
  const ended = once(door, 'call_ended', EVENT_MS);
  flat.emit('logout_user', { userId: 'flat-11' });
  assert.deepEqual((await ended)[0], { from: 'flat-11', reason: 'logged_out' });
  // flat-11 is gone from the cluster; door is free for someone else.
  const failed = once(door, 'call_failed', EVENT_MS);
  door.emit('make_call', { to: 'flat-11', offer });
  assert.match((await failed)[0].error, /offline/);
  const other = await user(b, 'other-11');
  assert.deepEqual(await ring(door, other, 'other-11'), { from: 'door-11', offer });
  door.emit('end_call', { to: 'other-11' });
});

test('a node stopped with SIGTERM mid-call: the peer hears server_shutdown', async () => {
  const leaving = await startNode();
  const [a] = nodes;
  const door = await user(a, 'door-12');
  const flat = await user(leaving, 'flat-12');
  await answered(door, flat, 'flat-12', 'door-12');
  const ended = once(door, 'call_ended', EVENT_MS);
  await leaving.stop();
  assert.deepEqual((await ended)[0], { from: 'flat-12', reason: 'server_shutdown' });
  // Its user left the cluster at once, and door is free.
  const users = await getJson(a, '/users');
  assert.ok(!users.connectedUsers.includes('flat-12'), JSON.stringify(users));
  const other = await user(a, 'other-12');
  assert.deepEqual(await ring(other, door, 'door-12'), { from: 'other-12', offer });
  other.emit('end_call', { to: 'door-12' });
});

test('the home of a user with devices stops: their devices elsewhere find a new home at once', async () => {
  const home = await startNode();
  const [a, b] = nodes;
  const first = await user(home, 'm-anna');
  const second = await user(a, 'm-anna');
  const door = await user(b, 'm-door-2');
  const rang = once(second, 'incoming_call', EVENT_MS);
  const ended = once(second, 'call_ended', EVENT_MS);
  const gone = once(second, 'disconnect', EVENT_MS);
  door.emit('make_call', { to: 'm-anna', offer });
  await rang;
  const stopped = Date.now();
  await home.stop();
  assert.deepEqual((await ended)[0], { from: 'm-door-2', reason: 'server_shutdown' });
  await gone;
  assert.ok(Date.now() - stopped < TTL_S * 1000, 'before the presence TTL');
  // Registered again, the device's node is the new home, and calls reach it.
  const again = await user(a, 'm-anna');
  assert.deepEqual(await ring(door, again, 'm-anna'), { from: 'm-door-2', offer });
  door.emit('end_call', { to: 'm-anna' });
  again.emit('logout_user', {});
  first.disconnect();
});

test('the caller\'s node dies while the call rings: the callee stops ringing', async () => {
  const doomed = await startNode();
  const [, b] = nodes;
  const door = await user(doomed, 'door-13');
  const flat = await user(b, 'flat-13');
  const timeouts = collect(flat, 'call_timeout');
  const ended = collect(flat, 'call_ended');
  await ring(door, flat, 'flat-13');
  doomed.proc.kill('SIGKILL');
  await waitUntil(() => timeouts.length + ended.length > 0, (TTL_S + RING_S) * 1000 + 6000, 'the ring to end', 100);
  // flat is free again.
  const other = await user(b, 'other-13');
  assert.deepEqual(await ring(other, flat, 'flat-13'), { from: 'other-13', offer });
  other.emit('end_call', { to: 'flat-13' });
});

test('a call that rings out times out once for each party', async () => {
  const [a, , c] = nodes;
  const door = await user(a, 'door-4');
  const flat = await user(c, 'flat-4');
  const atDoor = collect(door, 'call_timeout');
  const atFlat = collect(flat, 'call_timeout');
  await ring(door, flat, 'flat-4');
  await waitUntil(() => atDoor.length && atFlat.length, RING_S * 1000 + EVENT_MS, 'call_timeout on both sides');
  // Past the callee node's own fallback deadline too: still exactly once.
  await delay(RING_S * 1000 + 6000 - RING_S * 1000);
  assert.deepEqual(atDoor, [{ user: 'flat-4' }]);
  assert.deepEqual(atFlat, [{ user: 'door-4' }]);
  // And the claims are gone: they can call again.
  await ring(flat, door, 'door-4');
  flat.emit('end_call', { to: 'door-4' });
});

test('one device per user across nodes', async () => {
  const [a, b, c] = nodes;
  const peer = await user(c, 'peer-5');
  const first = await user(a, 'multi-5');
  await answered(peer, first, 'multi-5', 'peer-5');

  const kicked = once(first, 'force_disconnect', EVENT_MS);
  const gone = once(first, 'disconnect', EVENT_MS);
  const ended = once(peer, 'call_ended', EVENT_MS);
  const second = await user(b, 'multi-5');
  assert.deepEqual((await kicked)[0], { reason: 'new_login' });
  await gone;
  assert.deepEqual((await ended)[0], { from: 'multi-5', reason: 'new_login' });

  const users = await getJson(a, '/users');
  assert.equal(users.connectedUsers.filter((u) => u === 'multi-5').length, 1);
  // Calls now reach the new device.
  assert.deepEqual(await ring(peer, second, 'multi-5'), { from: 'peer-5', offer });
  peer.emit('end_call', { to: 'multi-5' });
});

test('A, then B, then A again at once: a stale kick does not drop the newest device', async () => {
  const [a, b] = nodes;
  for (let round = 0; round < 5; round += 1) {
    const name = `flip-${round}`;
    const first = await user(a, name);
    const firstKicked = once(first, 'force_disconnect', EVENT_MS);
    // B's registration and A's new one race: B's kick for `first` reaches A
    // after `third` took its place there.
    const second = io(b.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
    const third = io(a.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
    sockets.push(second, third);
    await Promise.all([once(second, 'connect', EVENT_MS), once(third, 'connect', EVENT_MS)]);
    const kicked = [];
    second.on('force_disconnect', () => kicked.push('second'));
    third.on('force_disconnect', () => kicked.push('third'));
    // Each hears it is registered, or is replaced before that answer is sent.
    const settled = (socket) => Promise.race([once(socket, 'user_registered', EVENT_MS), once(socket, 'force_disconnect', EVENT_MS)]);
    const replies = Promise.all([settled(second), settled(third)]);
    second.emit('register_user', { userId: name });
    third.emit('register_user', { userId: name });
    await replies;
    await firstKicked;
    await delay(300);
    // Exactly one of the two newer devices is left, and it is reachable.
    assert.equal(kicked.length, 1, `round ${round}: kicked ${JSON.stringify(kicked)}`);
    const survivor = kicked[0] === 'second' ? third : second;
    const caller = await user(nodes[2], `caller-${name}`);
    assert.deepEqual(await ring(caller, survivor, name), { from: `caller-${name}`, offer });
    caller.emit('end_call', { to: name });
    const users = await getJson(a, '/users');
    assert.equal(users.connectedUsers.filter((u) => u === name).length, 1);
  }
});

test('a disconnect mid-call ends it for the peer on another node', async () => {
  const [a, b, c] = nodes;
  const door = await user(a, 'door-6');
  const flat = await user(b, 'flat-6', { polling: true });
  await answered(door, flat, 'flat-6', 'door-6');
  const ended = once(door, 'call_ended', EVENT_MS);
  flat.disconnect();
  assert.deepEqual((await ended)[0], { from: 'flat-6', reason: 'disconnected' });
  const other = await user(c, 'other-6');
  assert.deepEqual(await ring(door, other, 'other-6'), { from: 'door-6', offer });
  door.emit('end_call', { to: 'other-6' });
});

test('a user held on one node stays busy cluster-wide and resumes the call by registering on another', async () => {
  const [a, b, c] = nodes;
  const door = await user(a, 'door-h');
  const flat = await user(b, 'flat-h');
  await answered(door, flat, 'flat-h', 'door-h');
  const reconnecting = once(door, 'peer_reconnecting', EVENT_MS);
  flat.io.engine.transport.ws._socket.destroy(); // lost, not left
  assert.deepEqual((await reconnecting)[0], { from: 'flat-h' });
  // Held on b: registered and busy for the whole cluster.
  for (const node of nodes) {
    assert.ok((await getJson(node, '/users')).connectedUsers.includes('flat-h'), node.url);
  }
  const other = await user(c, 'other-h');
  const busy = once(other, 'call_busy', EVENT_MS);
  other.emit('make_call', { to: 'flat-h', offer });
  await busy;
  door.emit('ice_candidate', { to: 'flat-h', candidate: candidate(1) });
  await waitUntil(async () => {
    const text = await (await fetch(`${b.url}/metrics`)).text();
    return /^signalbox_held_events 1$/m.test(text);
  }, EVENT_MS, 'the candidate kept on b', 20);
  // The phone comes back through another node (another network).
  const back = io(c.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  sockets.push(back);
  const kept = collect(back, 'ice_candidate');
  const reconnected = once(door, 'peer_reconnected', EVENT_MS);
  const registered = once(back, 'user_registered', EVENT_MS);
  back.emit('register_user', { userId: 'flat-h' });
  assert.equal((await registered)[0].success, true);
  await reconnected;
  await waitUntil(() => kept.length === 1, EVENT_MS, 'the kept candidate on c');
  assert.deepEqual(kept[0], { from: 'door-h', candidate: candidate(1) });
  // The call goes on between a and c, both ways, with a renegotiation.
  const toDoor = once(door, 'ice_candidate', EVENT_MS);
  back.emit('ice_candidate', { to: 'door-h', candidate: candidate(2) });
  assert.deepEqual((await toDoor)[0], { from: 'flat-h', candidate: candidate(2) });
  const update = once(back, 'call_update', EVENT_MS);
  door.emit('call_update', { to: 'flat-h', description: offer });
  assert.deepEqual((await update)[0], { from: 'door-h', description: offer });
  const ended = once(back, 'call_ended', EVENT_MS);
  door.emit('end_call', { to: 'flat-h' });
  assert.deepEqual((await ended)[0], { from: 'door-h' });
});

test('a node killed with SIGKILL mid-call: the peer hears within the presence TTL', async () => {
  const doomed = await startNode();
  const [a] = nodes;
  const door = await user(a, 'door-7');
  const flat = await user(doomed, 'flat-7');
  await user(doomed, 'gone-7');
  await answered(door, flat, 'flat-7', 'door-7');

  const ended = once(door, 'call_ended', (TTL_S + 2) * 1000);
  const killedAt = Date.now();
  doomed.proc.kill('SIGKILL');
  // Its other user does not come back; flat-7 does at once, on another node,
  // as socket.io-client reconnects: neither must keep door in the call.
  const back = await user(nodes[1], 'flat-7');
  const [event] = await ended;
  const took = Date.now() - killedAt;
  assert.deepEqual(event, { from: 'flat-7', reason: 'disconnected' });
  console.log(`call_ended ${took} ms after SIGKILL (presence TTL ${TTL_S} s)`);
  assert.ok(took <= TTL_S * 1000, `call_ended after ${took} ms`);
  await waitUntil(async () => {
    const users = await getJson(a, '/users');
    return !users.connectedUsers.includes('gone-7');
  }, (TTL_S + 2) * 1000, 'gone-7 to leave the cluster', 200);
  // door is free again, and reaches flat-7 where it came back.
  assert.deepEqual(await ring(door, back, 'flat-7'), { from: 'door-7', offer });
  door.emit('end_call', { to: 'flat-7' });
});

test('Redis restarted: nodes reconnect, publish again, and live calls keep relaying', async () => {
  const [a, b, c] = nodes;
  const door = await user(a, 'door-8');
  const flat = await user(b, 'flat-8');
  await answered(door, flat, 'flat-8', 'door-8');

  await redis.stop();
  await delay(500);
  redis = await startRedis(redis.port);

  // The call was not ended by the outage...
  const atFlat = collect(flat, 'ice_candidate');
  const endedAtDoor = collect(door, 'call_ended');
  const endedAtFlat = collect(flat, 'call_ended');
  // ...and relays again once the nodes are back.
  await waitUntil(async () => {
    door.emit('ice_candidate', { to: 'flat-8', candidate: candidate(8) });
    await delay(200);
    return atFlat.length > 0;
  }, (TTL_S + 5) * 1000, 'a candidate relayed after the restart', 0);
  await waitUntil(async () => {
    const response = await fetch(`${c.url}/users`, { signal: AbortSignal.timeout(EVENT_MS) });
    if (response.status !== 200) return false; // 503 while Redis is unreachable
    const users = await response.json();
    return users.connectedUsers.includes('door-8') && users.connectedUsers.includes('flat-8');
  }, TTL_S * 1000 + EVENT_MS, 'presence published again', 100);
  // Past the grace period, nobody was declared lost.
  await delay(TTL_S * 1000 + 1500);
  assert.deepEqual(endedAtDoor, []);
  assert.deepEqual(endedAtFlat, []);
  const busy = once(await user(c, 'guard-8'), 'call_busy', EVENT_MS);
  sockets.at(-1).emit('make_call', { to: 'flat-8', offer });
  assert.deepEqual((await busy)[0], { targetUser: 'flat-8' });
  door.emit('end_call', { to: 'flat-8' });
  await once(flat, 'call_ended', EVENT_MS);
});

test('one device per user survives a registration made while Redis was down', async () => {
  const [a, b] = nodes;
  const first = await user(a, 'split-9');
  const caller = await user(nodes[2], 'caller-9');
  await redis.stop();
  // A call now cannot be claimed: a clear failure, not a hang.
  const unavailable = once(caller, 'call_failed', 15_000);
  caller.emit('make_call', { to: 'split-9', offer });
  const [failure] = await unavailable;
  assert.equal(failure.targetUser, 'split-9');
  assert.match(failure.error, /unavailable/);
  // Registered on B while nobody can tell A: both devices think they are it.
  const second = io(b.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  sockets.push(second);
  const registered = once(second, 'user_registered', 15_000);
  second.emit('register_user', { userId: 'split-9' });
  assert.deepEqual((await registered)[0], { success: true, userId: 'split-9' });
  const kicked = [];
  first.on('force_disconnect', () => kicked.push('first'));
  second.on('force_disconnect', () => kicked.push('second'));
  redis = await startRedis(redis.port);
  // Once both nodes refreshed their users, the one Redis does not name lets go.
  await waitUntil(() => kicked.length > 0, (TTL_S * 2 + 5) * 1000, 'a force_disconnect', 100);
  await delay(TTL_S * 1000);
  assert.equal(kicked.length, 1, `kicked: ${kicked}`);
  const survivor = kicked[0] === 'first' ? second : first;
  assert.deepEqual(await ring(caller, survivor, 'split-9'), { from: 'caller-9', offer });
  caller.emit('end_call', { to: 'split-9' });
});

test('Redis unreachable at start: a clear error, and no server', async () => {
  const port = await freePort();
  const proc = spawn(signalboxBin(), ['--listen', '127.0.0.1:0', '--redis', `redis://127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (chunk) => { stderr += chunk; });
  const [code] = await once(proc, 'exit', 15_000);
  assert.notEqual(code, 0);
  assert.match(stderr, /cannot reach Redis at redis:\/\/127\.0\.0\.1/);
  assert.doesNotMatch(stderr, /listening on/);
});
