// Processes the cluster tests run beside signalbox: a redis-server of their
// own on a free loopback port (Debian's package; tests/run installs it).

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { withTimeout } from './helpers.mjs';

/** A free TCP port on loopback. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts redis-server on `port`, without persistence; resolves once it accepts connections. */
export function startRedis(port) {
  const proc = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  return withTimeout(new Promise((resolve, reject) => {
    proc.once('error', (error) => reject(new Error(`cannot start redis-server (tests/run installs it): ${error.message}`)));
    proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}):\n${logs.join('\n')}`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      logs.push(line);
      if (line.includes('Ready to accept connections')) {
        resolve({
          port,
          url: `redis://127.0.0.1:${port}`,
          proc,
          stop: () => new Promise((done) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return done();
            proc.once('exit', () => done());
            proc.kill('SIGKILL');
          }),
        });
      }
    });
  }), 10_000, 'redis-server to start');
}
