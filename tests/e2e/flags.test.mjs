// The signalbox binary's own settings, as an operator gives them: flags,
// their SIGNALBOX_* variables, and PORT. Each is checked by what a client
// sees (the Engine.IO open packet, a connect timeout, CORS headers).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { delay, once, signalboxBin, startServer } from './helpers.mjs';
import { freePort } from './redis.mjs';

/** The open packet of a new polling session. */
async function handshake(url, path = '/socket.io/') {
  const response = await fetch(`${url}${path}?EIO=4&transport=polling`, { signal: AbortSignal.timeout(5000) });
  assert.equal(response.status, 200);
  const body = await response.text();
  assert.equal(body[0], '0', body);
  return JSON.parse(body.slice(1));
}

test('ping, payload and path flags reach the open packet', async () => {
  const server = await startServer('signalbox', [
    '--ping-interval', '300ms', '--ping-timeout', '200ms', '--max-payload', '5000', '--path', '/intercom/',
  ], { resolve: signalboxBin });
  try {
    const open = await handshake(server.url, '/intercom/');
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 200);
    assert.equal(open.maxPayload, 5000);
    // A body over --max-payload is refused.
    const post = await fetch(`${server.url}/intercom/?EIO=4&transport=polling&sid=${open.sid}`, {
      method: 'POST', body: `4${'x'.repeat(6000)}`, signal: AbortSignal.timeout(5000),
    });
    assert.equal(post.status, 413);
  } finally {
    await server.stop();
  }
});

test('the same settings from SIGNALBOX_* variables; a flag wins over its variable', async () => {
  const server = await startServer('signalbox', ['--ping-timeout', '250ms'], {
    resolve: signalboxBin,
    env: { SIGNALBOX_PING_INTERVAL: '400ms', SIGNALBOX_PING_TIMEOUT: '9s', SIGNALBOX_MAX_PAYLOAD: '7000' },
  });
  try {
    const open = await handshake(server.url);
    assert.equal(open.pingInterval, 400);
    assert.equal(open.pingTimeout, 250);
    assert.equal(open.maxPayload, 7000);
  } finally {
    await server.stop();
  }
});

test('--connect-timeout closes a session that never joins a namespace', async () => {
  const server = await startServer('signalbox', ['--connect-timeout', '500ms'], { resolve: signalboxBin });
  try {
    const { sid } = await handshake(server.url);
    await delay(1200);
    const poll = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { signal: AbortSignal.timeout(5000) });
    // Closed: either the close packet, or the sid is already unknown.
    const body = await poll.text();
    assert.ok(poll.status === 400 || body === '1', `${poll.status} ${body}`);
  } finally {
    await server.stop();
  }
});

test('--cors-origin allows only the origins given', async () => {
  const server = await startServer('signalbox', [
    '--cors-origin', 'https://door.example', '--cors-origin', 'https://desk.example',
  ], { resolve: signalboxBin });
  try {
    for (const origin of ['https://door.example', 'https://desk.example']) {
      const response = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, {
        headers: { Origin: origin }, signal: AbortSignal.timeout(5000),
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('access-control-allow-origin'), origin);
      await response.text();
    }
    const other = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      headers: { Origin: 'https://evil.example' }, signal: AbortSignal.timeout(5000),
    });
    assert.notEqual(other.headers.get('access-control-allow-origin'), 'https://evil.example');
    await other.text();
  } finally {
    await server.stop();
  }
});

test('PORT overrides the port to listen on', async () => {
  const port = await freePort();
  const server = await startServer('signalbox', [], { resolve: signalboxBin, env: { PORT: String(port) } });
  try {
    assert.equal(new URL(server.url).port, String(port));
    await handshake(server.url);
  } finally {
    await server.stop();
  }
});

test('a bad setting is a clear error at start, not a running server', async () => {
  for (const [args, env, expected] of [
    [['--ping-interval', 'soon'], {}, /ping-interval|duration/i],
    [[], { SIGNALBOX_MAX_PAYLOAD: 'lots' }, /SIGNALBOX_MAX_PAYLOAD/],
    [[], { PORT: 'eighty' }, /PORT/],
    [['--log-level', 'chatty'], {}, /log/i],
    // Past 2^31-1 ms a browser's timer fires at once: every client would drop.
    [['--ping-interval', '30d'], {}, /2147483647 ms a JavaScript timer can wait/],
    [['--tls-cert', '/nonexistent.pem'], {}, /--tls-cert and --tls-key go together/],
  ]) {
    const proc = spawn(signalboxBin(), ['--listen', '127.0.0.1:0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stderr = '';
    proc.stderr.on('data', (chunk) => { stderr += chunk; });
    const [code] = await once(proc, 'exit', 5000);
    assert.notEqual(code, 0, `${args} ${JSON.stringify(env)}`);
    assert.match(stderr, expected);
  }
});

test('the open files limit is raised to the hard limit at start', async () => {
  // Started with a soft limit of 256 under a hard one of 4096, as a shell
  // often gives 1024 under a higher hard limit. prlimit execs the server.
  const proc = spawn('prlimit', ['--nofile=256:4096', signalboxBin(), '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    await new Promise((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error(`not listening: ${seen}`)), 10_000);
      proc.stderr.on('data', (chunk) => {
        seen += chunk;
        if (seen.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const limits = readFileSync(`/proc/${proc.pid}/limits`, 'utf8');
    const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
    assert.match(line, /^Max open files\s+4096\s+4096\s/, line);
  } finally {
    proc.kill('SIGTERM');
    await once(proc, 'exit', 5000).catch(() => proc.kill('SIGKILL'));
  }
});
