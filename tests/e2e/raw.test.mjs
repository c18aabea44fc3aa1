// Protocol-level tests of the `echo` example with plain `fetch` and `ws`
// (started with --ping-interval 300ms --ping-timeout 200ms --connect-timeout 1s):
//  - Engine.IO v4 at /engine.io/ (a raw Engine.IO echo): handshakes, payload
//    encoding, session errors and their JSON bodies, CORS, upgrade from polling
//    to websocket, heartbeat timeouts;
//  - Socket.IO v5 packets at /socket.io/ over a raw websocket: namespace
//    connect/errors, auth, events, acks, binary attachments, malformed packets,
//    the connect timeout.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RawWs, delay, startServer, waitUntil, withServerLogs } from './helpers.mjs';

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const RS = '\x1e'; // polling payload record separator

let server;
const logs = (fn) => withServerLogs(() => server, fn);

before(async () => {
  server = await startServer('echo', [
    '--ping-interval', `${PING_INTERVAL}ms`,
    '--ping-timeout', `${PING_TIMEOUT}ms`,
    '--connect-timeout', '1s',
  ]);
});
after(async () => {
  await server?.stop();
});

// ---------------------------------------------------------------------------
// HTTP helpers

const wsUrl = (path) => server.url.replace(/^http/, 'ws') + path;
const eioPolling = (extra = '') => `${server.url}/engine.io/?EIO=4&transport=polling${extra}`;
const eioWs = (extra = '') => wsUrl(`/engine.io/?EIO=4&transport=websocket${extra}`);

async function request(url, { method = 'GET', body, headers, timeoutMs = 3000 } = {}) {
  const res = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text };
}

const get = (sid, opts) => request(eioPolling(`&sid=${sid}`), opts);
const post = (sid, body, opts) => request(eioPolling(`&sid=${sid}`), { method: 'POST', body, ...opts });

/** Open a polling session on /engine.io/, return { sid, handshake }. */
async function pollingHandshake() {
  const res = await request(eioPolling());
  assert.equal(res.status, 200, `handshake failed: ${res.status} ${res.text}`);
  assert.ok(res.text.startsWith('0'), `handshake must be an open packet, got ${JSON.stringify(res.text)}`);
  const handshake = JSON.parse(res.text.slice(1));
  return { sid: handshake.sid, handshake };
}

/**
 * GET until `count` non-ping packets were received (pings are answered with a POSTed pong).
 * Returns the packets in order.
 */
async function pollPackets(sid, count, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  const packets = [];
  while (packets.length < count) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${count} packets, got ${JSON.stringify(packets)}`);
    const res = await get(sid, { timeoutMs: left });
    assert.equal(res.status, 200, `GET failed: ${res.status} ${res.text}`);
    for (const p of res.text.split(RS)) {
      if (p === '2') {
        const pong = await post(sid, '3');
        assert.equal(pong.status, 200);
      } else {
        packets.push(p);
      }
    }
  }
  return packets;
}

function assertJsonError(res, status, body) {
  assert.equal(res.status, status, `expected HTTP ${status}, got ${res.status} ${res.text}`);
  assert.deepEqual(JSON.parse(res.text), body);
}

/** Open a websocket and read the Engine.IO open packet. */
async function wsHandshake(url, opts = {}) {
  const ws = await RawWs.open(url, opts);
  const open = await ws.nextText();
  assert.ok(open.startsWith('0'), `expected open packet, got ${JSON.stringify(open)}`);
  return { ws, handshake: JSON.parse(open.slice(1)) };
}

/** Try to open a websocket; resolves to { ws } or { refused: error }. */
async function tryWs(url, opts) {
  try {
    return { ws: await RawWs.open(url, opts) };
  } catch (refused) {
    return { refused };
  }
}

/** Wait until the server closes `ws` without ever answering its pings. */
async function waitClosedNoPong(ws, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (ws.closeInfo) return ws.closeInfo;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`websocket still open after ${timeoutMs} ms`);
    try {
      await ws.next({ timeoutMs: left, skip: ['2'], pong: false });
    } catch {
      // closed or timed out; re-checked above
    }
  }
}

// ---------------------------------------------------------------------------
// Engine.IO

describe('Engine.IO at /engine.io/ (raw echo)', () => {
  test('polling handshake returns an open packet with the configured values', logs(async () => {
    const { handshake } = await pollingHandshake();
    assert.deepEqual(Object.keys(handshake).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
    assert.equal(typeof handshake.sid, 'string');
    assert.ok(handshake.sid.length > 0);
    assert.deepEqual(handshake.upgrades, ['websocket']);
    assert.equal(handshake.pingInterval, PING_INTERVAL);
    assert.equal(handshake.pingTimeout, PING_TIMEOUT);
    assert.equal(handshake.maxPayload, 1000000);
  }));

  test('two polling handshakes get different sids', logs(async () => {
    const a = await pollingHandshake();
    const b = await pollingHandshake();
    assert.notEqual(a.sid, b.sid);
  }));

  test('polling echo of text and base64 binary packets in one payload', logs(async () => {
    const { sid } = await pollingHandshake();
    const res = await post(sid, `4hello${RS}4world${RS}bAQIDBA==`);
    assert.equal(res.status, 200);
    assert.equal(res.text, 'ok');
    assert.deepEqual(await pollPackets(sid, 3), ['4hello', '4world', 'bAQIDBA==']);
  }));

  test('websocket handshake has no upgrades and echoes text', logs(async () => {
    const { ws, handshake } = await wsHandshake(eioWs());
    try {
      assert.deepEqual(Object.keys(handshake).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
      assert.deepEqual(handshake.upgrades, []);
      assert.equal(handshake.pingInterval, PING_INTERVAL);
      assert.equal(handshake.pingTimeout, PING_TIMEOUT);
      assert.equal(handshake.maxPayload, 1000000);
      ws.send('4hello');
      assert.equal(await ws.nextText(), '4hello');
    } finally {
      ws.close();
    }
  }));

  test('websocket echoes a binary frame as a binary frame', logs(async () => {
    const { ws } = await wsHandshake(eioWs());
    try {
      ws.send(Buffer.from([1, 2, 3, 4]));
      assert.deepEqual(await ws.nextBinary(), Buffer.from([1, 2, 3, 4]));
      ws.send('4after binary');
      assert.equal(await ws.nextText(), '4after binary');
    } finally {
      ws.close();
    }
  }));

  test('an invalid polling packet closes the session', logs(async () => {
    const { sid } = await pollingHandshake();
    try {
      await post(sid, 'abc'); // the answer to this POST itself is not specified (200 or 400)
    } catch {
      // the server may also drop the request
    }
    const res = await get(sid);
    assert.equal(res.status, 400);
  }));

  test('an invalid websocket packet closes the connection', logs(async () => {
    const { ws } = await wsHandshake(eioWs());
    ws.send('abc');
    await ws.waitClosed(2000);
  }));

  test('duplicate concurrent GET closes the session', logs(async () => {
    const { sid } = await pollingHandshake();
    const first = get(sid);
    await delay(50); // let the first GET reach the server and wait there
    const second = await get(sid);
    // Engine.IO spec test suite: 400 (Node's engine.io answers 500)
    assert.ok([400, 500].includes(second.status), `second GET: expected 400 (or 500), got ${second.status}`);
    const firstRes = await first;
    assert.equal(firstRes.status, 200);
    assert.equal(firstRes.text, '1');
    const third = await get(sid);
    assert.equal(third.status, 400);
  }));

  test('POSTing a close packet answers the waiting GET with a noop and ends the session', logs(async () => {
    const { sid } = await pollingHandshake();
    const waiting = get(sid);
    await delay(50);
    const res = await post(sid, '1');
    assert.equal(res.status, 200);
    const waited = await waiting;
    assert.equal(waited.status, 200);
    assert.equal(waited.text, '6');
    assert.equal((await get(sid)).status, 400);
  }));

  test('upgrade from polling to websocket', logs(async () => {
    const { sid } = await pollingHandshake();
    const ws = await RawWs.open(eioWs(`&sid=${sid}`), { autoPong: true });
    try {
      ws.send('2probe');
      assert.equal(await ws.nextText(), '3probe');
      // the pending/next GET is released with a noop so the client can pause polling
      const [noop] = await pollPackets(sid, 1);
      assert.equal(noop, '6');
      ws.send('5');
      ws.send('4hello');
      assert.equal(await ws.nextText({ skip: ['2', '6'] }), '4hello');
      const res = await get(sid);
      assert.equal(res.status, 400);
      ws.send('4still here');
      assert.equal(await ws.nextText({ skip: ['2', '6'] }), '4still here');
    } finally {
      ws.close();
    }
  }));

  test('a second websocket for an already upgraded sid is refused; the first keeps working', logs(async () => {
    const { sid } = await pollingHandshake();
    const ws = await RawWs.open(eioWs(`&sid=${sid}`), { autoPong: true });
    try {
      ws.send('2probe');
      assert.equal(await ws.nextText(), '3probe');
      ws.send('5');
      ws.send('4upgraded');
      assert.equal(await ws.nextText({ skip: ['2', '6'] }), '4upgraded');

      const second = await tryWs(eioWs(`&sid=${sid}`));
      if (second.ws) {
        second.ws.send('4intruder');
        await second.ws.waitClosed(2000);
      }
      ws.send('4hello');
      assert.equal(await ws.nextText({ skip: ['2', '6'] }), '4hello');
      assert.ok(ws.isOpen);
    } finally {
      ws.close();
    }
  }));

  test('unknown sid -> 400 "Session ID unknown"', logs(async () => {
    assertJsonError(await get('doesnotexist'), 400, { code: 1, message: 'Session ID unknown' });
    assertJsonError(await post('doesnotexist', '4x'), 400, { code: 1, message: 'Session ID unknown' });
  }));

  test('unknown transport -> 400 "Transport unknown"', logs(async () => {
    assertJsonError(await request(`${server.url}/engine.io/?EIO=4&transport=carrier-pigeon`), 400, {
      code: 0,
      message: 'Transport unknown',
    });
    assertJsonError(await request(`${server.url}/engine.io/?EIO=4`), 400, { code: 0, message: 'Transport unknown' });
  }));

  test('missing or unsupported EIO -> 400 "Unsupported protocol version"', logs(async () => {
    const body = { code: 5, message: 'Unsupported protocol version' };
    assertJsonError(await request(`${server.url}/engine.io/?EIO=3&transport=polling`), 400, body);
    assertJsonError(await request(`${server.url}/engine.io/?transport=polling`), 400, body);
    assertJsonError(await request(`${server.url}/socket.io/?EIO=3&transport=polling`), 400, body);
  }));

  test('POST handshake -> 400 "Bad handshake method"', logs(async () => {
    assertJsonError(await request(eioPolling(), { method: 'POST', body: '4x' }), 400, {
      code: 2,
      message: 'Bad handshake method',
    });
  }));

  test('error responses carry Access-Control-Allow-Origin when the request has an Origin', logs(async () => {
    const origin = 'http://intercom.example';
    for (const url of [
      eioPolling('&sid=doesnotexist'),
      `${server.url}/engine.io/?EIO=3&transport=polling`,
      `${server.url}/socket.io/?EIO=4&transport=polling&sid=doesnotexist`,
    ]) {
      const res = await request(url, { headers: { Origin: origin } });
      assert.equal(res.status, 400);
      const allow = res.headers.get('access-control-allow-origin');
      assert.ok(allow === origin || allow === '*', `${url}: access-control-allow-origin = ${allow}`);
    }
  }));

  test('OPTIONS preflight -> 204 with CORS headers', logs(async () => {
    const origin = 'http://intercom.example';
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'POST' },
    });
    assert.equal(res.status, 204);
    const allow = res.headers.get('access-control-allow-origin');
    assert.ok(allow === origin || allow === '*', `access-control-allow-origin = ${allow}`);
    const methods = (res.headers.get('access-control-allow-methods') ?? '').toUpperCase();
    assert.ok(methods.split(/\s*,\s*/).includes('POST'), `access-control-allow-methods = ${methods}`);
  }));

  test('a polling session that never answers pings is closed after ping interval + timeout', logs(async () => {
    const { sid } = await pollingHandshake();
    const start = Date.now();
    const seen = [];
    // Keep polling (never pong) until the session is gone.
    const status = await waitUntil(async () => {
      let res;
      try {
        res = await get(sid, { timeoutMs: 2000 });
      } catch {
        return null; // a dropped long-poll: ask again
      }
      if (res.status !== 200) return res.status;
      seen.push(res.text);
      return null;
    }, 3000, 'the session to time out', 0);
    const elapsed = Date.now() - start;
    assert.equal(status, 400);
    assert.ok(seen.some((t) => t.split(RS).includes('2')), `a ping should have been sent, got ${JSON.stringify(seen)}`);
    assert.ok(elapsed >= PING_INTERVAL + PING_TIMEOUT - 100, `closed too early (${elapsed} ms)`);
  }));

  test('a websocket that never answers pings is closed by the server', logs(async () => {
    const { ws } = await wsHandshake(eioWs());
    const start = Date.now();
    const first = await ws.nextText({ skip: [], timeoutMs: 2000 });
    assert.equal(first, '2');
    await waitClosedNoPong(ws, 2000);
    assert.ok(Date.now() - start >= PING_TIMEOUT - 100);
  }));
});

// ---------------------------------------------------------------------------
// Socket.IO over a raw websocket

const sioWs = () => wsUrl('/socket.io/?EIO=4&transport=websocket');

/** Open a raw websocket to /socket.io/ and consume the Engine.IO open packet. */
async function sioOpen() {
  const { ws } = await wsHandshake(sioWs(), { autoPong: true });
  return ws;
}

/** Open and connect the main namespace; consumes the CONNECT answer and the auth event. */
async function sioConnected(connectPacket = '40') {
  const ws = await sioOpen();
  ws.send(connectPacket);
  const connect = await ws.nextText();
  assert.match(connect, /^40\{/);
  await ws.nextText(); // auth event
  return ws;
}

function assertConnectOk(packet, nsp = '') {
  const prefix = nsp ? `40${nsp},` : '40';
  assert.ok(packet.startsWith(`${prefix}{`), `expected ${prefix}{"sid":...}, got ${JSON.stringify(packet)}`);
  const body = JSON.parse(packet.slice(prefix.length));
  assert.equal(typeof body.sid, 'string');
  assert.ok(body.sid.length > 0);
}

const placeholders = [{ _placeholder: true, num: 0 }, { _placeholder: true, num: 1 }];
const PH = JSON.stringify(placeholders).slice(1, -1);

describe('Socket.IO packets at /socket.io/ over a raw websocket', () => {
  test('40 -> 40{"sid"} then the auth event with an empty object', logs(async () => {
    const ws = await sioOpen();
    try {
      ws.send('40');
      assertConnectOk(await ws.nextText());
      assert.equal(await ws.nextText(), '42["auth",{}]');
    } finally {
      ws.close();
    }
  }));

  test('40{"token":"123"} -> auth event with that payload', logs(async () => {
    const ws = await sioOpen();
    try {
      ws.send('40{"token":"123"}');
      assertConnectOk(await ws.nextText());
      assert.equal(await ws.nextText(), '42["auth",{"token":"123"}]');
    } finally {
      ws.close();
    }
  }));

  test('40/custom, -> 40/custom,{"sid"} then 42/custom,["auth",{}]', logs(async () => {
    const ws = await sioOpen();
    try {
      ws.send('40/custom,');
      assertConnectOk(await ws.nextText(), '/custom');
      assert.equal(await ws.nextText(), '42/custom,["auth",{}]');
      ws.send('42/custom,["message","in custom"]');
      assert.equal(await ws.nextText(), '42/custom,["message-back","in custom"]');
    } finally {
      ws.close();
    }
  }));

  test('40/random -> 44/random,{"message":"Invalid namespace"}', logs(async () => {
    const ws = await sioOpen();
    try {
      ws.send('40/random');
      assert.equal(await ws.nextText(), '44/random,{"message":"Invalid namespace"}');
    } finally {
      ws.close();
    }
  }));

  test('41 after connecting keeps the Engine.IO session open', logs(async () => {
    const { ws } = await wsHandshake(sioWs()); // no autoPong: we want to see the ping
    try {
      ws.send('40');
      assertConnectOk(await ws.nextText({ pong: true }));
      assert.equal(await ws.nextText({ pong: true }), '42["auth",{}]');
      ws.send('41');
      const next = await ws.nextText({ skip: [], timeoutMs: 2 * PING_INTERVAL + 500 });
      assert.equal(next, '2', 'the next packet after 41 should be a ping');
      ws.send('3');
      assert.ok(ws.isOpen);
    } finally {
      ws.close();
    }
  }));

  test('event 42["message",…] -> exactly 42["message-back",…]', logs(async () => {
    const ws = await sioConnected();
    try {
      ws.send('42["message",1,"2",{"3":[true]}]');
      assert.equal(await ws.nextText(), '42["message-back",1,"2",{"3":[true]}]');
    } finally {
      ws.close();
    }
  }));

  test('binary event with two attachments comes back as 452-["message-back",…] + two frames', logs(async () => {
    const ws = await sioConnected();
    try {
      ws.send(`452-["message",${PH}]`);
      ws.send(Buffer.from([1, 2, 3]));
      ws.send(Buffer.from([4, 5, 6, 7]));
      const head = await ws.nextText();
      assert.ok(head.startsWith('452-['), `expected 452-[...], got ${JSON.stringify(head)}`);
      assert.deepEqual(JSON.parse(head.slice(4)), ['message-back', ...placeholders]);
      assert.deepEqual(await ws.nextBinary(), Buffer.from([1, 2, 3]));
      assert.deepEqual(await ws.nextBinary(), Buffer.from([4, 5, 6, 7]));
    } finally {
      ws.close();
    }
  }));

  test('event with ack id 456 -> 43456[…]', logs(async () => {
    const ws = await sioConnected();
    try {
      ws.send('42456["message-with-ack",1,"2",{"3":[false]}]');
      assert.equal(await ws.nextText(), '43456[1,"2",{"3":[false]}]');
    } finally {
      ws.close();
    }
  }));

  test('binary event with ack id 789 -> 462-789[…] + two frames', logs(async () => {
    const ws = await sioConnected();
    try {
      ws.send(`452-789["message-with-ack",${PH}]`);
      ws.send(Buffer.from([9, 8]));
      ws.send(Buffer.from([7]));
      const head = await ws.nextText();
      assert.ok(head.startsWith('462-789['), `expected 462-789[...], got ${JSON.stringify(head)}`);
      assert.deepEqual(JSON.parse(head.slice(7)), placeholders);
      assert.deepEqual(await ws.nextBinary(), Buffer.from([9, 8]));
      assert.deepEqual(await ws.nextBinary(), Buffer.from([7]));
    } finally {
      ws.close();
    }
  }));

  for (const bad of ['4abc', '42{}', '42abc["message"]']) {
    test(`malformed packet ${bad} closes the connection`, logs(async () => {
      const ws = await sioConnected();
      try {
        ws.send(bad);
        await ws.waitClosed(2000);
      } finally {
        ws.close();
      }
    }));
  }

  test('a session that connects no namespace is closed after the connect timeout', logs(async () => {
    const ws = await sioOpen();
    const start = Date.now();
    await ws.waitClosed(3000);
    const elapsed = Date.now() - start;
    assert.ok(elapsed >= 800, `closed too early (${elapsed} ms)`);
  }));
});
