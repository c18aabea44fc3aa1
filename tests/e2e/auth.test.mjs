// Signed tokens (--auth-secret-file): a client connects with auth {token};
// without a valid one it gets connect_error; with one it may register only
// the name inside it. Tokens are made here with Node's own crypto as well
// as with `signalbox token`, so the format is checked independently.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { once, signalboxBin, startServer } from './helpers.mjs';

const SECRET = 'the-building-secret';

/** `<base64url(user)>.<expiry>.<base64url(HMAC-SHA256(secret, first two parts))>` */
function nodeToken(user, expiry, secret = SECRET) {
  const signed = `${Buffer.from(user).toString('base64url')}.${expiry}`;
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

async function withAuthServer(fn) {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-auth-'));
  const secretFile = join(dir, 'auth-secret');
  writeFileSync(secretFile, `${SECRET}\n`);
  const server = await startServer('signalbox', ['--auth-secret-file', secretFile], { resolve: signalboxBin });
  try {
    await fn(server, secretFile);
  } finally {
    await server.stop();
  }
}

function connectWith(url, auth) {
  return io(url, { auth, transports: ['websocket'], forceNew: true, reconnection: false });
}

test('connections without a valid token are refused with a clear message', async () => {
  await withAuthServer(async (server) => {
    const cases = [
      [undefined, /^authentication required/],
      [{}, /^authentication required/],
      [{ token: 42 }, /^authentication required/],
      [{ token: 'garbage' }, /^authentication failed: malformed token$/],
      [{ token: nodeToken('alice', now() + 60, 'another secret') }, /^authentication failed: invalid token signature$/],
      [{ token: nodeToken('alice', now() - 1) }, /^authentication failed: token expired$/],
    ];
    // A valid token with its user swapped for another (same signature).
    const valid = nodeToken('alice', now() + 60);
    const [, expiry, signature] = valid.split('.');
    cases.push([{ token: `${Buffer.from('concierge').toString('base64url')}.${expiry}.${signature}` }, /invalid token signature/]);
    for (const [auth, message] of cases) {
      const socket = connectWith(server.url, auth);
      const [error] = await once(socket, 'connect_error');
      assert.match(error.message, message, JSON.stringify(auth));
      assert.equal(socket.connected, false);
      socket.close();
    }
  });
});

test('a valid token lets its holder register only its own name', async () => {
  await withAuthServer(async (server, secretFile) => {
    const cli = execFileSync(signalboxBin(), ['token', '--user', 'flat-12', '--ttl', '1h', '--auth-secret-file', secretFile], {
      encoding: 'utf8',
    }).trim();
    for (const token of [nodeToken('flat-12', now() + 3600), cli]) {
      const socket = connectWith(server.url, { token });
      await once(socket, 'connect');
      const refused = once(socket, 'user_registered');
      socket.emit('register_user', { userId: 'concierge' });
      assert.deepEqual((await refused)[0], {
        success: false,
        userId: 'concierge',
        error: 'your token is for another user name',
      });
      const accepted = once(socket, 'user_registered');
      socket.emit('register_user', { userId: 'flat-12' });
      assert.deepEqual((await accepted)[0], { success: true, userId: 'flat-12' });
      socket.close();
    }
  });
});
