// Clients that cannot be updated (--allow-eio3): unmodified socket.io-client
// 2.x (Engine.IO 3 / Socket.IO 2), polling first and WebSocket only,
// registers, calls a socket.io-client 4 user and is called by one, with ICE
// both ways; a raw EIO=3 WebSocket client that pings as arduinoWebSockets
// does stays connected for several intervals and is dropped when it stops;
// without the flag a v3 client gets the error it always got.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import ioV2 from 'socket.io-client-v2';
import { Device } from './device.mjs';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawWs, delay, once, signalboxBin, startServer, withServerLogs, withTimeout } from './helpers.mjs';

const WAIT_MS = 5000;
// Short, so that "several intervals" and "stopped pinging" take seconds.
const INTERVAL_MS = 400;
const TIMEOUT_MS = 300;

let server;
const withLogs = (fn) => withServerLogs(() => server, fn);

before(async () => {
  server = await startServer('signalbox', [
    '--allow-eio3', '--ping-interval', `${INTERVAL_MS}ms`, '--ping-timeout', `${TIMEOUT_MS}ms`,
  ], { resolve: signalboxBin });
});

after(async () => {
  await server?.stop();
});

/** A socket.io-client 2.x socket registered as `name`; records every event. */
async function oldDevice(name, transports, { url = server.url, query } = {}) {
  const socket = ioV2(url, { forceNew: true, reconnection: false, transports, query });
  const events = [];
  const waiters = new Set();
  const onevent = socket.onevent;
  socket.onevent = function record(packet) {
    events.push({ event: packet.data[0], args: packet.data.slice(1) });
    for (const wake of [...waiters]) wake();
    onevent.call(this, packet);
  };
  await withTimeout(once(socket, 'connect', WAIT_MS), WAIT_MS, `${name}: connect`);
  const [reply] = await withTimeout(new Promise((resolve) => {
    socket.emit('register_user', { userId: name }, (...args) => resolve(args));
  }), WAIT_MS, `${name}: register ack`);
  assert.deepEqual(reply, { ok: true }, `${name} registered`);
  const take = (event) => withTimeout(new Promise((resolve) => {
    const check = () => {
      const at = events.findIndex((e) => e.event === event);
      if (at < 0) return;
      waiters.delete(check);
      resolve(events.splice(at, 1)[0].args[0]);
    };
    waiters.add(check);
    check();
  }), WAIT_MS, `${name}: no ${event}; has ${JSON.stringify(events.map((e) => e.event))}`);
  const ask = (event, payload) => withTimeout(new Promise((resolve) => {
    socket.emit(event, payload, resolve);
  }), WAIT_MS, `${name}: ack of ${event}`);
  return { name, socket, take, ask, close: () => socket.close() };
}

async function newDevice(name) {
  return new Device(server.url).register(name);
}

const OFFER = { type: 'offer', sdp: 'v=0 offer' };
const ANSWER = { type: 'answer', sdp: 'v=0 answer' };

/** `caller` calls `callee`, ICE both ways, answer, hang-up by the caller. */
async function call(caller, callee) {
  assert.deepEqual(await caller.ask('make_call', { to: callee.name, offer: OFFER }), { ok: true });
  assert.deepEqual(await callee.take('incoming_call'), { from: caller.name, offer: OFFER });
  const candidate = (n) => ({ candidate: `candidate:${n} 1 udp 1 127.0.0.1 ${5000 + n} typ host`, sdpMid: '0', sdpMLineIndex: 0 });
  assert.deepEqual(await caller.ask('ice_candidate', { to: callee.name, candidate: candidate(1) }), { ok: true });
  assert.deepEqual(await callee.take('ice_candidate'), { from: caller.name, candidate: candidate(1) });
  assert.deepEqual(await callee.ask('answer_call', { to: caller.name, answer: ANSWER }), { ok: true });
  assert.deepEqual(await caller.take('call_answered'), { from: callee.name, answer: ANSWER });
  assert.deepEqual(await callee.ask('ice_candidate', { to: caller.name, candidate: candidate(2) }), { ok: true });
  assert.deepEqual(await caller.take('ice_candidate'), { from: callee.name, candidate: candidate(2) });
  assert.deepEqual(await caller.ask('end_call', { to: callee.name }), { ok: true });
  assert.deepEqual(await callee.take('call_ended'), { from: caller.name });
}

test('socket.io-client 2, polling first, upgrades, and calls a socket.io-client 4 user and is called by one', withLogs(async () => {
  const old = await oldDevice('old-panel', ['polling', 'websocket']);
  const app = await newDevice('app');
  try {
    // It started on polling and moved to WebSocket.
    const engine = old.socket.io.engine;
    if (engine.transport.name !== 'websocket') {
      await withTimeout(once(engine, 'upgrade', WAIT_MS), WAIT_MS, 'socket.io-client 2 upgrading');
    }
    assert.equal(engine.transport.name, 'websocket');
    await call(old, app);
    await call(app, old);
  } finally {
    old.close();
    app.close();
  }
}));

test('socket.io-client 2 on polling alone and on WebSocket alone', withLogs(async () => {
  const polling = await oldDevice('old-polling', ['polling']);
  const websocket = await oldDevice('old-websocket', ['websocket']);
  const app = await newDevice('app-2');
  try {
    assert.equal(polling.socket.io.engine.transport.name, 'polling');
    await call(polling, app);
    await call(app, websocket);
    // Two old clients call each other, across transports; and past several
    // of their own ping intervals they are still there.
    await delay(4 * INTERVAL_MS);
    await call(websocket, polling);
    assert.equal(polling.socket.connected, true);
    assert.equal(websocket.socket.connected, true);
  } finally {
    for (const d of [polling, websocket, app]) d.close();
  }
}));

test('a raw EIO=3 WebSocket that pings as arduinoWebSockets does stays, and goes when it stops', withLogs(async () => {
  const ws = await RawWs.open(`${server.url.replace(/^http/, 'ws')}/socket.io/?EIO=3&transport=websocket`);
  try {
    const open = JSON.parse((await ws.nextText()).slice(1));
    assert.deepEqual(Object.keys(open).sort(), ['pingInterval', 'pingTimeout', 'sid', 'upgrades']);
    assert.equal(open.pingInterval, INTERVAL_MS);
    // Socket.IO 2: in the main namespace at once, without a CONNECT.
    assert.equal(await ws.nextText(), '40');
    ws.send('42["register_user",{"userId":"esp32-door"}]');
    assert.equal(await ws.nextText(), '42["user_registered",{"success":true,"userId":"esp32-door"}]');
    // The client pings every interval; the server answers each, and never pings.
    for (let i = 0; i < 5; i += 1) {
      ws.send('2');
      let reply = await ws.nextText({ skip: [] });
      while (reply.startsWith('42')) reply = await ws.nextText({ skip: [] });
      assert.equal(reply, '3');
      await delay(INTERVAL_MS);
    }
    const users = await (await fetch(`${server.url}/users`)).json();
    assert.ok(users.connectedUsers.includes('esp32-door'), JSON.stringify(users));
    // Silent now: closed an interval and a timeout after its last ping.
    await withTimeout(ws.closed, 4 * (INTERVAL_MS + TIMEOUT_MS), 'the server closing a silent v3 client');
  } finally {
    ws.ws.terminate();
  }
}));

test('without --allow-eio3 an Engine.IO 3 client gets "Unsupported protocol version"', withLogs(async () => {
  const strict = await startServer('signalbox', [], { resolve: signalboxBin });
  try {
    for (const query of ['EIO=3&transport=polling', 'transport=polling']) {
      const res = await fetch(`${strict.url}/socket.io/?${query}`);
      assert.equal(res.status, 400, query);
      assert.deepEqual(await res.json(), { code: 5, message: 'Unsupported protocol version' }, query);
    }
  } finally {
    await strict.stop();
  }
}));

test('with tokens on, socket.io-client 2 passes its token in the query, on polling and on WebSocket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-eio3-auth-'));
  const secretFile = join(dir, 'auth-secret');
  writeFileSync(secretFile, 'a secret shared with the token issuer\n');
  const guarded = await startServer('signalbox', ['--allow-eio3', '--auth-secret-file', secretFile], { resolve: signalboxBin });
  const token = (user) => execFileSync(signalboxBin(), ['token', '--user', user, '--ttl', '1h', '--auth-secret-file', secretFile], { encoding: 'utf8' }).trim();
  try {
    for (const transports of [['polling', 'websocket'], ['websocket']]) {
      const panel = await oldDevice('panel-7', transports, { url: guarded.url, query: { token: token('panel-7') } });
      // The token binds the name, as for a socket.io-client 4 with auth {token}.
      assert.deepEqual(await panel.ask('register_user', { userId: 'someone-else' }), { ok: false, error: 'your token is for another user name' });
      panel.close();
    }
    // Without a token, or with a forged one, the connection is refused with the reason.
    for (const query of [undefined, { token: 'forged' }]) {
      const socket = ioV2(guarded.url, { forceNew: true, reconnection: false, transports: ['websocket'], query });
      const [error] = await withTimeout(once(socket, 'error', WAIT_MS), WAIT_MS, 'refusal');
      assert.match(String(error), /^authentication (required|failed)/);
      socket.close();
    }
  } finally {
    await guarded.stop();
  }
});

test('JSONP polling (j=) is refused with Bad request', withLogs(async () => {
  const res = await fetch(`${server.url}/socket.io/?EIO=3&transport=polling&j=0`);
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { code: 3, message: 'Bad request' });
}));
