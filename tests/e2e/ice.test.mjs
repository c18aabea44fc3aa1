// ICE configuration handed to clients: after register_user, an
// `ice_servers {iceServers}` event with STUN URLs as given and TURN URLs
// carrying coturn REST API credentials (username "<expiry>:<user>",
// credential base64(HMAC-SHA1(secret, username))), checked here against
// Node's own crypto. Also: the built-in page is served at /app/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { once, signalboxBin, startServer } from './helpers.mjs';

test('a registered client gets its ICE servers with minted TURN credentials', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-ice-'));
  const secretFile = join(dir, 'turn-secret');
  writeFileSync(secretFile, 'north-gate-secret\n');
  const server = await startServer(
    'signalbox',
    [
      '--ice-server', 'stun:stun.example.org:3478',
      '--ice-server', 'turn:turn.example.org:3478?transport=udp',
      '--turn-secret-file', secretFile,
      '--turn-ttl', '1h',
    ],
    { resolve: signalboxBin },
  );
  const socket = io(server.url, { transports: ['websocket'], forceNew: true, reconnection: false });
  try {
    const ice = once(socket, 'ice_servers');
    socket.emit('register_user', { userId: 'door-1' });
    const [{ iceServers }] = await ice;
    const now = Math.floor(Date.now() / 1000);
    assert.deepEqual(iceServers[0], { urls: 'stun:stun.example.org:3478' });
    const turn = iceServers[1];
    assert.equal(turn.urls, 'turn:turn.example.org:3478?transport=udp');
    const [expiry, user] = turn.username.split(':');
    assert.equal(user, 'door-1');
    assert.ok(Math.abs(Number(expiry) - (now + 3600)) <= 5, `expiry ${expiry}`);
    const expected = createHmac('sha1', 'north-gate-secret').update(turn.username).digest('base64');
    assert.equal(turn.credential, expected);
  } finally {
    socket.close();
    await server.stop();
  }
});

test('without ICE servers configured the event carries an empty list', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  const socket = io(server.url, { transports: ['websocket'], forceNew: true, reconnection: false });
  try {
    const ice = once(socket, 'ice_servers');
    socket.emit('register_user', { userId: 'desk-2' });
    assert.deepEqual((await ice)[0], { iceServers: [] });
  } finally {
    socket.close();
    await server.stop();
  }
});

test('the intercom page is served at /app/', async () => {
  const server = await startServer('signalbox', [], { resolve: signalboxBin });
  try {
    const redirect = await fetch(`${server.url}/app`, { redirect: 'manual' });
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get('location'), '/app/');
    const page = await fetch(`${server.url}/app/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    assert.match(await page.text(), /<script src="app\.js">/);
    for (const [file, type] of [['app.js', /^text\/javascript/], ['app.css', /^text\/css/]]) {
      const response = await fetch(`${server.url}/app/${file}`);
      assert.equal(response.status, 200, file);
      assert.match(response.headers.get('content-type'), type);
    }
    assert.equal((await fetch(`${server.url}/app/missing.js`)).status, 404);
  } finally {
    await server.stop();
  }
});

test('the page is told a custom --path, and clients connect there', async () => {
  const server = await startServer('signalbox', ['--path', '/intercom/io'], { resolve: signalboxBin });
  try {
    const html = await (await fetch(`${server.url}/app/`)).text();
    assert.match(html, /<meta name="signalbox-path" content="\/intercom\/io\/">/);
    const socket = io(server.url, { path: '/intercom/io/', transports: ['websocket'], forceNew: true, reconnection: false });
    const registered = once(socket, 'user_registered');
    socket.emit('register_user', { userId: 'lobby' });
    assert.equal((await registered)[0].success, true);
    socket.close();
    assert.equal((await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`)).status, 404);
  } finally {
    await server.stop();
  }
});
