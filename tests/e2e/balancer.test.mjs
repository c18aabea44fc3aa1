// Three signalbox nodes on one Redis behind the load balancer configurations
// the README documents (docs/nginx.conf, docs/haproxy.cfg), run by Debian's
// nginx and HAProxy (tests/run installs them): socket.io-client with its
// defaults (long-polling, then WebSocket) through the sticky configurations,
// and WebSocket-only clients through a balancer with no stickiness at all.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { REPO_ROOT, delay, once, signalboxBin, startServer, waitUntil } from './helpers.mjs';
import { freePort, startRedis } from './redis.mjs';

const EVENT_MS = 5000;
const dir = mkdtempSync(join(tmpdir(), 'signalbox-balancer-'));
let redis;
const nodes = [];
const sockets = [];
const balancers = [];

/** The first of `paths` that exists: sbin is not on every PATH. */
function binary(...paths) {
  const found = paths.find((path) => existsSync(path));
  if (!found) throw new Error(`none of ${paths.join(', ')} is installed (tests/run installs them)`);
  return found;
}

/** Resolves once something accepts connections on `port`. */
function listening(port) {
  return waitUntil(() => new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  }), 10_000, `a listener on port ${port}`, 50);
}

/** Starts `command`, then waits for its port. */
async function startBalancer(name, command, args, port) {
  const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (chunk) => { output += chunk; });
  proc.stderr.on('data', (chunk) => { output += chunk; });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const balancer = {
    name,
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        await exited;
      }
    },
  };
  balancers.push(balancer);
  await Promise.race([
    listening(port),
    exited.then((code) => { throw new Error(`${name} exited (${code}): ${output}`); }),
  ]);
  return balancer;
}

/** docs/nginx.conf with our nodes and port; `sticky: false` drops ip_hash. */
async function nginx({ sticky }) {
  const port = await freePort();
  const servers = nodes.map((node) => `    server ${new URL(node.url).host};`).join('\n');
  let site = readFileSync(join(REPO_ROOT, 'docs', 'nginx.conf'), 'utf8')
    .replace(/(?:^ {4}server 10\.0\.0\.\d+:3000;\n)+/m, `${servers}\n`)
    .replace(/listen 80;/, `listen 127.0.0.1:${port};`);
  assert.ok(site.includes(servers), 'the nodes went into the upstream');
  if (!sticky) site = site.replace(/^ {4}ip_hash;\n/m, '');
  const prefix = mkdtempSync(join(dir, 'nginx-'));
  writeFileSync(join(prefix, 'site.conf'), site);
  writeFileSync(join(prefix, 'nginx.conf'), `daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log;
events {}
http {
    access_log off;
    client_body_temp_path ${prefix};
    proxy_temp_path ${prefix};
    include ${prefix}/site.conf;
}
`);
  const command = binary('/usr/sbin/nginx', '/usr/bin/nginx');
  return startBalancer(sticky ? 'nginx' : 'nginx-round-robin', command, ['-c', join(prefix, 'nginx.conf'), '-p', prefix], port);
}

/** docs/haproxy.cfg with our nodes and port. */
async function haproxy() {
  const port = await freePort();
  let n = 0;
  const config = readFileSync(join(REPO_ROOT, 'docs', 'haproxy.cfg'), 'utf8')
    .replace(/^ {4}server node\d 10\.0\.0\.\d+:3000 (.*)\n/gm, (_, options) => {
      const node = nodes[n];
      n += 1;
      return `    server node${n} ${new URL(node.url).host} ${options}\n`;
    })
    .replace(/bind :80/, `bind 127.0.0.1:${port}`);
  assert.equal(n, nodes.length, 'every node went into the backend');
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const command = binary('/usr/sbin/haproxy', '/usr/bin/haproxy');
  return startBalancer('haproxy', command, ['-db', '-f', file], port);
}

before(async () => {
  redis = await startRedis(await freePort());
  for (let i = 0; i < 3; i += 1) {
    nodes.push(await startServer('signalbox', ['--redis', redis.url, '--presence-ttl', '3s'], { resolve: signalboxBin }));
  }
});

after(async () => {
  for (const socket of sockets) socket.disconnect();
  await Promise.all(balancers.map((balancer) => balancer.stop()));
  await Promise.all(nodes.map((node) => node.stop()));
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function user(url, userId, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, ...opts });
  sockets.push(socket);
  const registered = once(socket, 'user_registered', EVENT_MS);
  socket.emit('register_user', { userId });
  assert.deepEqual((await registered)[0], { success: true, userId });
  return socket;
}

/** A whole call from `caller` to `callee`, with a candidate each way. */
async function call(caller, callerId, callee, calleeId) {
  const offer = { type: 'offer', sdp: `v=0 ${callerId}` };
  const answer = { type: 'answer', sdp: `v=0 ${calleeId}` };
  const incoming = once(callee, 'incoming_call', EVENT_MS);
  caller.emit('make_call', { to: calleeId, offer });
  assert.deepEqual((await incoming)[0], { from: callerId, offer });
  const answered = once(caller, 'call_answered', EVENT_MS);
  callee.emit('answer_call', { to: callerId, answer });
  assert.deepEqual((await answered)[0], { from: calleeId, answer });
  const there = once(callee, 'ice_candidate', EVENT_MS);
  caller.emit('ice_candidate', { to: calleeId, candidate: { candidate: 'c1' } });
  assert.deepEqual((await there)[0], { from: callerId, candidate: { candidate: 'c1' } });
  const back = once(caller, 'ice_candidate', EVENT_MS);
  callee.emit('ice_candidate', { to: callerId, candidate: { candidate: 'c2' } });
  assert.deepEqual((await back)[0], { from: calleeId, candidate: { candidate: 'c2' } });
  const ended = once(callee, 'call_ended', EVENT_MS);
  caller.emit('end_call', { to: calleeId });
  await ended;
}

/** How many users each node has itself (its own metrics, not the cluster's). */
async function usersPerNode() {
  return Promise.all(nodes.map(async (node) => {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    return Number(/^signalbox_connected_users (\d+)$/m.exec(text)?.[1] ?? NaN);
  }));
}

test('WebSocket-only clients need no stickiness: round-robin nginx', async () => {
  const balancer = await nginx({ sticky: false });
  const before = await usersPerNode();
  const names = ['rr-a', 'rr-b', 'rr-c', 'rr-d', 'rr-e', 'rr-f'];
  const clients = [];
  for (const name of names) clients.push(await user(balancer.url, name, { transports: ['websocket'] }));
  const added = (await usersPerNode()).map((count, i) => count - before[i]);
  assert.ok(added.every((count) => count >= 1), `spread over every node: ${added}`);
  for (let i = 0; i < names.length; i += 2) await call(clients[i], names[i], clients[i + 1], names[i + 1]);
  // A pair on different nodes, for sure: the first and the last client.
  await call(clients[names.length - 1], names.at(-1), clients[0], names[0]);
  const users = await (await fetch(`${balancer.url}/users`)).json();
  for (const name of names) assert.ok(users.connectedUsers.includes(name), name);
  for (const client of clients) client.disconnect();
});

test('the documented nginx snippet: default clients (polling, then WebSocket)', async () => {
  const balancer = await nginx({ sticky: true });
  const door = await user(balancer.url, 'ngx-door');
  const flat = await user(balancer.url, 'ngx-flat', { transports: ['polling'] });
  await waitUntil(() => door.io.engine.transport.name === 'websocket', EVENT_MS, 'the upgrade through nginx');
  await call(door, 'ngx-door', flat, 'ngx-flat');
  await call(flat, 'ngx-flat', door, 'ngx-door');
  const health = await (await fetch(`${balancer.url}/`)).json();
  assert.ok(health.connectedUsers >= 2, JSON.stringify(health));
  door.disconnect();
  flat.disconnect();
});

test('the documented HAProxy configuration: default clients and WebSocket-only ones', async () => {
  const balancer = await haproxy();
  // Health checks must have found the nodes before traffic flows.
  await delay(300);
  const door = await user(balancer.url, 'hap-door');
  const flat = await user(balancer.url, 'hap-flat', { transports: ['polling'] });
  const phone = await user(balancer.url, 'hap-phone', { transports: ['websocket'] });
  await waitUntil(() => door.io.engine.transport.name === 'websocket', EVENT_MS, 'the upgrade through HAProxy');
  await call(door, 'hap-door', flat, 'hap-flat');
  await call(phone, 'hap-phone', door, 'hap-door');
  for (const client of [door, flat, phone]) client.disconnect();
});
