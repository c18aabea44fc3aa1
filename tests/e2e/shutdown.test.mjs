// Graceful shutdown and operations pages of the signalbox binary: SIGTERM
// ends every call with reason "server_shutdown", closes every session and
// exits 0 in bounded time, and new handshakes, polling or WebSocket, get 503
// meanwhile; /metrics speaks the Prometheus text format; --version prints
// the version.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { io } from 'socket.io-client';
import { once as onceArgs, signalboxBin, startServer, waitUntil, withTimeout } from './helpers.mjs';

/** The first argument of the next `event`. */
const once = async (emitter, event, timeoutMs) => (await onceArgs(emitter, event, timeoutMs))[0];

async function registered(url, name, transports) {
  const socket = io(url, { transports, reconnection: false, forceNew: true });
  const reply = once(socket, 'user_registered');
  socket.emit('register_user', { userId: name });
  assert.equal((await reply).success, true);
  return socket;
}

async function inCall(url, caller, callee, callerTransports, calleeTransports) {
  const a = await registered(url, caller, callerTransports);
  const b = await registered(url, callee, calleeTransports);
  const ringing = once(b, 'incoming_call');
  a.emit('make_call', { to: callee, from: caller, offer: { type: 'offer', sdp: 'v=0' } });
  await ringing;
  const answered = once(a, 'call_answered');
  b.emit('answer_call', { to: caller, from: callee, answer: { type: 'answer', sdp: 'v=0' } });
  await answered;
  return [a, b];
}

test('SIGTERM ends every call with server_shutdown, closes sessions and exits 0', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  try {
    // An active call over websocket and a ringing one with a polling callee.
    const [alice, bob] = await inCall(server.url, 'alice', 'bob', ['websocket'], ['websocket']);
    const carol = await registered(server.url, 'carol', ['websocket']);
    const dave = await registered(server.url, 'dave', ['polling']);
    const ringing = once(dave, 'incoming_call');
    carol.emit('make_call', { to: 'dave', from: 'carol', offer: { sdp: 'x' } });
    await ringing;

    const ended = [alice, bob, carol, dave].map((s) => once(s, 'call_ended', 5000));
    const closed = [alice, bob, carol, dave].map((s) => once(s, 'disconnect', 5000));
    const exited = new Promise((resolve) => server.proc.once('exit', (code, signal) => resolve({ code, signal })));
    const started = Date.now();
    server.proc.kill('SIGTERM');

    const [a, b, c, d] = await Promise.all(ended);
    assert.deepEqual(a, { from: 'bob', reason: 'server_shutdown' });
    assert.deepEqual(b, { from: 'alice', reason: 'server_shutdown' });
    assert.deepEqual(c, { from: 'dave', reason: 'server_shutdown' });
    assert.deepEqual(d, { from: 'carol', reason: 'server_shutdown' });
    const reasons = await Promise.all(closed);
    for (const reason of reasons) assert.equal(reason, "transport close");
    const { code } = await withTimeout(exited, 8000, 'server exit');
    assert.equal(code, 0);
    assert.ok(Date.now() - started < 7000, `shutdown took ${Date.now() - started} ms`);
  } finally {
    await server.stop();
  }
});

/** Opens a raw connection to the server at `url` and writes `head`. */
function rawConnection(url, head) {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  socket.write(head);
  return socket;
}

/**
 * Sends a WebSocket handshake for a new session; resolves with the status
 * and, unless it is 101, the body (the server closes after a refusal).
 */
function websocketHandshake(url) {
  const socket = rawConnection(
    url,
    'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
      'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  let text = '';
  const answer = new Promise((resolve, reject) => {
    const status = () => Number(text.split(' ')[1]);
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      text += chunk;
      if (text.includes('\r\n\r\n') && status() === 101) resolve({ status: 101 });
    });
    socket.on('end', () => resolve({ status: status(), body: text.slice(text.indexOf('\r\n\r\n') + 4) }));
    socket.on('error', reject);
  });
  return withTimeout(answer, 5000, 'the WebSocket handshake answer').finally(() => socket.destroy());
}

test('while shutting down, new polling and WebSocket handshakes get 503', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  let post;
  try {
    // A control: the same WebSocket handshake is accepted while serving.
    assert.equal((await websocketHandshake(server.url)).status, 101);

    // A polling session whose POST body is still on its way: the shutdown
    // waits for that request (up to --shutdown-timeout, 5 s).
    const open = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(open.status, 200);
    const { sid } = JSON.parse((await open.text()).split('\x1e')[0].slice(1));
    post = rawConnection(
      server.url,
      `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
        'Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1\r\n\r\n',
    );
    const posted = new Promise((resolve) => {
      let text = '';
      post.setEncoding('latin1');
      post.on('data', (chunk) => {
        text += chunk;
        if (text.endsWith('ok')) resolve(text.split(' ')[1]);
      });
      post.on('error', () => resolve('error'));
    });

    const exited = new Promise((resolve) => server.proc.once('exit', (code) => resolve(code)));
    server.proc.kill('SIGTERM');
    await waitUntil(() => server.logs.some((l) => l.includes('shutting down')), 3000, 'the shutdown to start');

    const polling = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(polling.status, 503);
    const pollingBody = await polling.text();
    const websocket = await websocketHandshake(server.url);
    assert.equal(websocket.status, 503);
    assert.equal(websocket.body, pollingBody);

    // The last request completes; then the server exits 0.
    post.write('6');
    assert.equal(await withTimeout(posted, 3000, 'the POST answer'), '200');
    assert.equal(await withTimeout(exited, 5000, 'server exit'), 0);
  } finally {
    post?.destroy();
    await server.stop();
  }
});

test('SIGINT with no clients exits 0 at once', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  const exited = new Promise((resolve) => server.proc.once('exit', (code) => resolve(code)));
  const started = Date.now();
  server.proc.kill('SIGINT');
  assert.equal(await withTimeout(exited, 5000, 'server exit'), 0);
  assert.ok(Date.now() - started < 2000);
});

test('/metrics reports users, sessions, calls and outcomes in Prometheus text format', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  try {
    const [alice, bob] = await inCall(server.url, 'alice', 'bob', ['websocket'], ['polling']);
    const carol = await registered(server.url, 'carol', ['websocket']);
    const busy = once(carol, 'call_busy');
    carol.emit('make_call', { to: 'bob', from: 'carol', offer: {} });
    await busy;
    const failed = once(carol, 'call_failed');
    carol.emit('make_call', { to: 'nobody', from: 'carol', offer: {} });
    await failed;

    const response = await fetch(`${server.url}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const value = (sample) => {
      const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
      assert.ok(line, `no sample ${sample} in:\n${text}`);
      return Number(line.split(' ')[1]);
    };
    assert.equal(value('signalbox_connected_users'), 3);
    assert.equal(value('signalbox_sessions{transport="websocket"}'), 2);
    assert.equal(value('signalbox_sessions{transport="polling"}'), 1);
    assert.equal(value('signalbox_calls{state="active"}'), 1);
    assert.equal(value('signalbox_calls{state="ringing"}'), 0);
    assert.equal(value('signalbox_calls_total{outcome="answered"}'), 1);
    assert.equal(value('signalbox_calls_total{outcome="busy"}'), 1);
    assert.equal(value('signalbox_calls_total{outcome="failed"}'), 1);
    assert.equal(value('signalbox_calls_total{outcome="declined"}'), 0);
    assert.equal(value('signalbox_calls_total{outcome="timeout"}'), 0);
    assert.ok(value('signalbox_events_received_total') >= 6);
    assert.ok(value('signalbox_events_sent_total') >= 6);
    assert.ok(value('signalbox_bytes_received_total') > 0);
    assert.ok(value('signalbox_bytes_sent_total') > 0);
    assert.ok(value('process_resident_memory_bytes') > 100_000);
    assert.ok(value('process_open_fds') >= 3);
    assert.match(text, /^# TYPE signalbox_calls_total counter$/m);
    for (const s of [alice, bob, carol]) s.close();
  } finally {
    await server.stop();
  }
});

test('--version prints the version', () => {
  const out = execFileSync(signalboxBin(), ['--version'], { encoding: 'utf8' });
  assert.match(out, /^signalbox \d+\.\d+\.\d+\n$/);
});
