// TLS: with --tls-cert/--tls-key the same port serves HTTPS and WSS;
// socket.io-client works over https:// on both transports; SIGHUP reloads
// the certificate for new connections while live sessions stay up.
// Certificates are made here with the openssl command line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Socket } from 'node:net';
import { connect } from 'node:tls';
import { io } from 'socket.io-client';
import { once, signalboxBin, startServer, waitUntil } from './helpers.mjs';

const dir = mkdtempSync(join(tmpdir(), 'signalbox-tls-'));

function selfSigned(name) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-subj', `/CN=${name}`, '-days', '1',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  return { key, cert, pem: readFileSync(cert, 'utf8') };
}

/** The SHA-256 fingerprint of the certificate a new TLS connection gets. */
function servedFingerprint(url) {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port), rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

const fingerprintOf = (pem) =>
  execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256'], { input: pem, encoding: 'utf8' })
    .trim()
    .split('=')[1];

async function registered(url, name, transports, ca) {
  const socket = io(url, { transports, ca, forceNew: true, reconnection: false });
  const reply = once(socket, 'user_registered', 10000);
  socket.emit('register_user', { userId: name });
  assert.equal((await reply)[0].success, true);
  return socket;
}

test('HTTPS and WSS on one port; SIGHUP swaps the certificate without dropping sessions', async () => {
  const a = selfSigned('cert-a');
  const b = selfSigned('cert-b');
  const cert = join(dir, 'live.crt');
  const key = join(dir, 'live.key');
  copyFileSync(a.cert, cert);
  copyFileSync(a.key, key);
  const server = await startServer('signalbox', ['--tls-cert', cert, '--tls-key', key], { resolve: signalboxBin });
  try {
    assert.match(server.url, /^https:/);
    const health = await fetch(server.url).catch((e) => e);
    assert.ok(health instanceof Error, 'fetch must refuse a self-signed certificate');
    assert.equal(await servedFingerprint(server.url), fingerprintOf(a.pem));

    const alice = await registered(server.url, 'alice', ['websocket'], a.pem);
    const bob = await registered(server.url, 'bob', ['polling'], a.pem);

    copyFileSync(b.cert, cert);
    copyFileSync(b.key, key);
    server.proc.kill('SIGHUP');
    await waitUntil(async () => (await servedFingerprint(server.url)) === fingerprintOf(b.pem), 5000, 'new certificate');

    // The sessions opened under the old certificate still work, both ways.
    const ringing = once(bob, 'incoming_call', 10000);
    alice.emit('make_call', { to: 'bob', from: 'alice', offer: { sdp: 'o' } });
    assert.deepEqual((await ringing)[0], { from: 'alice', offer: { sdp: 'o' } });
    // New clients trust the new certificate.
    const carol = await registered(server.url, 'carol', ['polling', 'websocket'], b.pem);
    for (const s of [alice, bob, carol]) s.close();

    // A broken certificate on reload leaves the working one in place.
    copyFileSync(join(dir, 'cert-a.key'), cert);
    server.proc.kill('SIGHUP');
    await waitUntil(() => server.logs.some((l) => /certificate not reloaded/.test(l)), 5000, 'reload error logged');
    assert.equal(await servedFingerprint(server.url), fingerprintOf(b.pem));
  } finally {
    await server.stop();
  }
});

test('a TLS handshake that never comes is dropped after --request-timeout', async () => {
  const { cert, key } = selfSigned('cert-quiet');
  const server = await startServer('signalbox', [
    '--tls-cert', cert, '--tls-key', key, '--request-timeout', '500ms',
  ], { resolve: signalboxBin });
  try {
    const { port } = new URL(server.url);
    const quiet = new Socket();
    const closed = new Promise((resolve) => quiet.once('close', resolve));
    const openedAt = Date.now();
    quiet.connect(Number(port), '127.0.0.1'); // and says nothing
    await Promise.race([
      closed,
      new Promise((_, reject) => setTimeout(() => reject(new Error('a silent TLS connection stayed open')), 5000)),
    ]);
    const took = Date.now() - openedAt;
    assert.ok(took >= 400, `closed after ${took} ms, before the timeout`);
    // The server still serves TLS.
    assert.equal(await servedFingerprint(server.url), fingerprintOf(readFileSync(cert, 'utf8')));
  } finally {
    await server.stop();
  }
});
