// End-to-end tests of the `echo` example with the official socket.io-client:
// transports and upgrade, events with acknowledgements in both directions,
// binary payloads, namespaces, the `auth` payload, reconnection after a
// transport-level drop, many concurrent clients (with the server's memory use
// printed), and heartbeats with short ping settings.
//
// The echo server contract (namespaces `/` and `/custom`):
//   on connect              -> emit `auth` with the client's auth payload
//   `message` (...args)     -> emit `message-back` (...args)
//   `message-with-ack` (...args, ack) -> ack(...args)
//   `call-me-back` (...args) -> emit `call-back` (...args, ack); when the client acks
//                               with (...values) -> emit `called-back` (...values)
//   `drop`                  -> close the Engine.IO session at the transport level

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { once, readRss, startServer, toBuffer, waitUntil, withServerLogs, withTimeout } from './helpers.mjs';

const clients = new Set();

/** Create a socket.io-client socket (own Manager, no reconnection unless asked), tracked for cleanup. */
function connect(url, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: 5000, ...opts });
  clients.add(socket);
  return socket;
}

/** Wait for `connect`, failing fast on `connect_error`. */
async function connected(socket, timeoutMs = 5000) {
  if (socket.connected) return;
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    timeoutMs,
    'connect',
  );
}

/** Emit `message` with args and assert the `message-back` carries the same args. */
async function assertEcho(socket, ...args) {
  const back = once(socket, 'message-back', 5000);
  socket.emit('message', ...args);
  assert.deepEqual(await back, args);
}

afterEach(() => {
  for (const s of clients) {
    s.io.opts.reconnection = false;
    s.io.reconnection(false);
    s.disconnect();
    s.io.engine?.close();
  }
  clients.clear();
});

describe('echo example (default settings)', () => {
  let server;
  const logs = (fn) => withServerLogs(() => server, fn);

  before(async () => {
    server = await startServer('echo', []);
  });
  after(async () => {
    await server?.stop();
  });

  test('default options start on polling, upgrade to websocket, and still echo', logs(async () => {
    const s = connect(server.url);
    const engine = s.io.engine;
    assert.ok(engine, 'the manager should have opened an engine');
    const upgraded = once(engine, 'upgrade', 5000);
    await connected(s);
    await upgraded;
    assert.equal(s.io.engine.transport.name, 'websocket');
    await assertEcho(s, 'after upgrade', 1, { a: [true, null] });
    await assertEcho(s, 'second');
  }));

  test("transports: ['websocket'] connects and echoes", logs(async () => {
    const s = connect(server.url, { transports: ['websocket'] });
    await connected(s);
    assert.equal(s.io.engine.transport.name, 'websocket');
    await assertEcho(s, 'hello', 42, { nested: { list: [1, 'two', false] } });
  }));

  test("transports: ['polling'] connects, echoes and never upgrades", logs(async () => {
    const s = connect(server.url, { transports: ['polling'] });
    let upgradeEvents = 0;
    s.io.engine.on('upgrading', () => upgradeEvents++);
    s.io.engine.on('upgrade', () => upgradeEvents++);
    await connected(s);
    for (let i = 0; i < 5; i++) await assertEcho(s, `polling ${i}`, i);
    assert.equal(s.io.engine.transport.name, 'polling');
    assert.equal(upgradeEvents, 0);
  }));

  test('emit with ack (client asks server) gets back exactly the same args', logs(async () => {
    const s = connect(server.url, { transports: ['websocket'] });
    await connected(s);
    const args = await withTimeout(
      new Promise((resolve) => s.emit('message-with-ack', 1, '2', { 3: [true] }, (...a) => resolve(a))),
      5000,
      'the ack of message-with-ack',
    );
    assert.deepEqual(args, [1, '2', { 3: [true] }]);
  }));

  test('emit with ack (server asks client): call-me-back -> call-back(ack) -> called-back', logs(async () => {
    const s = connect(server.url, { transports: ['websocket'] });
    await connected(s);
    const sent = ['a', 1, { b: [2, null] }];
    const ackValues = ['x', 2, { y: [false] }];
    const callBack = new Promise((resolve) => {
      s.once('call-back', (...args) => {
        const ack = args.pop();
        assert.equal(typeof ack, 'function', 'call-back must request an acknowledgement');
        ack(...ackValues);
        resolve(args);
      });
    });
    const calledBack = once(s, 'called-back', 5000);
    s.emit('call-me-back', ...sent);
    assert.deepEqual(await withTimeout(callBack, 5000, 'call-back'), sent);
    assert.deepEqual(await calledBack, ackValues);
  }));

  for (const transport of ['websocket', 'polling']) {
    test(`Buffer round trip over ${transport}`, logs(async () => {
      const s = connect(server.url, { transports: [transport] });
      await connected(s);
      const back = once(s, 'message-back', 5000);
      s.emit('message', Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) }, 'text');
      const [a, b, c] = await back;
      assert.deepEqual(toBuffer(a), Buffer.from([1, 2, 3]));
      assert.deepEqual(Object.keys(b), ['nested']);
      assert.deepEqual(toBuffer(b.nested), Buffer.from([4, 5]));
      assert.equal(c, 'text');
    }));
  }

  for (const transport of ['websocket', 'polling']) {
    test(`binary acks both ways over ${transport}`, logs(async () => {
      const s = connect(server.url, { transports: [transport] });
      await connected(s);
      // The server acks with a Buffer (BINARY_ACK to the client)...
      const acked = await withTimeout(
        new Promise((resolve) => s.emit('message-with-ack', Buffer.from([9, 8]), 'x', (...a) => resolve(a))),
        5000,
        'the binary ack of message-with-ack',
      );
      assert.deepEqual(toBuffer(acked[0]), Buffer.from([9, 8]));
      assert.equal(acked[1], 'x');
      // ...and the client acks the server's request with one (BINARY_ACK to the server).
      s.once('call-back', (...args) => args.pop()(Buffer.from([7]), { deep: Buffer.from([6, 5]) }));
      const calledBack = once(s, 'called-back', 5000);
      s.emit('call-me-back', 'go');
      const [first, second] = await calledBack;
      assert.deepEqual(toBuffer(first), Buffer.from([7]));
      assert.deepEqual(toBuffer(second.deep), Buffer.from([6, 5]));
    }));
  }

  test('leaving one namespace keeps the others on the same connection', logs(async () => {
    const root = io(server.url, { reconnection: false, transports: ['websocket'], forceNew: true });
    clients.add(root);
    const custom = root.io.socket('/custom');
    clients.add(custom);
    custom.connect();
    await connected(root);
    await connected(custom);
    const engine = root.io.engine;
    root.disconnect(); // DISCONNECT for `/` only: the Engine.IO connection stays
    await assertEcho(custom, 'still here');
    assert.equal(custom.io.engine, engine);
    assert.equal(engine.readyState, 'open');
  }));

  test('unknown namespace gets connect_error "Invalid namespace"; /custom connects and gets auth', logs(async () => {
    const bad = connect(`${server.url}/nope`);
    const [err] = await once(bad, 'connect_error', 5000);
    assert.equal(err.message, 'Invalid namespace');
    assert.equal(bad.connected, false);

    const custom = connect(`${server.url}/custom`, { auth: { room: 'lobby' } });
    const auth = once(custom, 'auth', 5000);
    await connected(custom);
    assert.deepEqual(await auth, [{ room: 'lobby' }]);
    await assertEcho(custom, 'custom namespace echo');
  }));

  test('auth event carries the client auth payload with key order kept', logs(async () => {
    const s = connect(server.url, { auth: { token: 'abc', z: 1, a: 2 } });
    const authP = once(s, 'auth', 5000);
    await connected(s);
    const [auth] = await authP;
    assert.deepEqual(auth, { token: 'abc', z: 1, a: 2 });
    assert.deepEqual(Object.keys(auth), ['token', 'z', 'a']);
  }));

  test('auth event without auth payload is an empty object', logs(async () => {
    const s = connect(server.url, { transports: ['websocket'] });
    const authP = once(s, 'auth', 5000);
    await connected(s);
    assert.deepEqual(await authP, [{}]);
  }));

  for (const transport of ['websocket', 'polling']) {
    test(`client reconnects after the server drops its session (${transport})`, logs(async () => {
      const s = connect(server.url, {
        transports: [transport],
        reconnection: true,
        reconnectionDelay: 50,
        reconnectionDelayMax: 100,
        randomizationFactor: 0,
      });
      await connected(s);
      const firstId = s.id;
      await assertEcho(s, 'before drop');

      const disconnected = once(s, 'disconnect', 5000);
      s.emit('drop');
      const [reason] = await disconnected;
      assert.equal(reason, 'transport close');

      await once(s, 'connect', 5000);
      assert.ok(s.connected);
      assert.notEqual(s.id, firstId, 'a reconnection gets a new Socket.IO session id');
      await assertEcho(s, 'after reconnect');
    }));
  }

  test('200 websocket clients at once all get their own echoes', logs(async () => {
    const N = 200;
    const before = readRss(server.pid);
    console.log(`RSS before 200 clients: VmRSS=${before.vmRss} kB VmHWM=${before.vmHwm} kB`);

    const sockets = Array.from({ length: N }, () => connect(server.url, { transports: ['websocket'], timeout: 15000 }));
    await Promise.all(sockets.map((s) => connected(s, 15000)));
    await Promise.all(sockets.map((s, i) => assertEcho(s, `client ${i}`, i)));

    const during = readRss(server.pid);
    console.log(`RSS with 200 clients: VmRSS=${during.vmRss} kB VmHWM=${during.vmHwm} kB`);
  }));

  test('50 polling-only clients at once all get their own echoes', logs(async () => {
    const N = 50;
    const sockets = Array.from({ length: N }, () => connect(server.url, { transports: ['polling'], timeout: 15000 }));
    await Promise.all(sockets.map((s) => connected(s, 15000)));
    await Promise.all(sockets.map((s, i) => assertEcho(s, `polling client ${i}`, i)));
    assert.ok(sockets.every((s) => s.io.engine.transport.name === 'polling'));
    const during = readRss(server.pid);
    console.log(`RSS with 50 polling clients: VmRSS=${during.vmRss} kB VmHWM=${during.vmHwm} kB`);
  }));
});

describe('echo example with --ping-interval 300ms --ping-timeout 200ms', () => {
  let server;
  const logs = (fn) => withServerLogs(() => server, fn);

  before(async () => {
    server = await startServer('echo', ['--ping-interval', '300ms', '--ping-timeout', '200ms']);
  });
  after(async () => {
    await server?.stop();
  });

  for (const transport of ['websocket', 'polling']) {
    test(`heartbeat keeps a ${transport} client connected across several ping cycles`, logs(async () => {
      const s = connect(server.url, { transports: [transport] });
      let disconnectReason = null;
      s.on('disconnect', (reason) => {
        disconnectReason = reason;
      });
      let pings = 0;
      s.io.engine.on('ping', () => pings++);
      await connected(s);
      const start = Date.now();
      // 5 pings at a 300 ms interval is ~1.5 s; fail fast if the client gets disconnected.
      await waitUntil(() => pings >= 5 || disconnectReason !== null, 4000, '5 server pings');
      assert.equal(disconnectReason, null, `client was disconnected: ${disconnectReason}`);
      assert.ok(Date.now() - start >= 1000, 'pings should be spaced by the ping interval');
      assert.ok(s.connected);
      await assertEcho(s, 'still alive');
    }));
  }
});
