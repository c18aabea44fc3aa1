// Shared helpers for the signalbox end-to-end tests: starting/stopping a server
// binary, waiting for events with timeouts, reading process memory, and a small
// buffered wrapper around a raw `ws` WebSocket.
//
// Environment:
//   SIGNALBOX_BIN_DIR  directory of the cargo build output (default <repo>/target/debug)
//   E2E_SERVER_CMD     run this command instead of the built binary, e.g.
//                      E2E_SERVER_CMD='node /tmp/e2e-ref/server.mjs'
//                      (`{name}` in it is replaced by the requested server name)
//   E2E_SERVER_LOG=1   stream every server's stderr/stdout to this process's stderr

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

export const REPO_ROOT = resolvePath(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN_DIR = process.env.SIGNALBOX_BIN_DIR ?? resolvePath(REPO_ROOT, 'target', 'debug');

/** Resolver for cargo examples: `<BIN_DIR>/examples/<name>`. */
export const exampleBin = (name) => resolvePath(BIN_DIR, 'examples', name);
/** Resolver for the main binary: `<BIN_DIR>/signalbox` (the name is ignored). */
export const signalboxBin = () => resolvePath(BIN_DIR, 'signalbox');

const LISTENING_RE = /listening on (https?):\/\/(\S+)/;
const MAX_LOG_LINES = 5000;

/**
 * Start a server process and wait until it reports its listening address.
 *
 * @param {string} name      server name, passed to the resolver (e.g. 'echo')
 * @param {string[]} args    extra CLI arguments (after `--listen 127.0.0.1:0`)
 * @param {object} [opts]
 * @param {(name: string) => string} [opts.resolve]  name -> executable path (default exampleBin)
 * @param {number} [opts.startTimeoutMs]  default 10000
 * @param {object} [opts.env]  extra environment variables
 * @returns {Promise<{url: string, pid: number, proc: import('node:child_process').ChildProcess,
 *   logs: string[], stop: () => Promise<void>}>}
 */
function withoutPort(env) {
  const { PORT: _port, ...rest } = env;
  return rest;
}

export function startServer(name, args = [], opts = {}) {
  const { resolve: resolver = exampleBin, startTimeoutMs = 10_000, env = {} } = opts;
  let command;
  let commandArgs;
  if (process.env.E2E_SERVER_CMD) {
    const parts = process.env.E2E_SERVER_CMD.replaceAll('{name}', name).split(/\s+/).filter(Boolean);
    [command, ...commandArgs] = parts;
  } else {
    command = resolver(name);
    commandArgs = [];
  }
  commandArgs = [...commandArgs, '--listen', '127.0.0.1:0', ...args];

  const proc = spawn(command, commandArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
    // PORT would override --listen (signalbox honours it, as the seed does).
    env: { ...withoutPort(process.env), ...env },
  });
  const logs = [];
  const label = `[${name}]`;
  const record = (line) => {
    logs.push(line);
    if (logs.length > MAX_LOG_LINES) logs.splice(0, logs.length - MAX_LOG_LINES);
    if (process.env.E2E_SERVER_LOG) process.stderr.write(`${label} ${line}\n`);
  };
  // Keep draining both pipes for the whole life of the process so the server never blocks on them.
  const stderrLines = createInterface({ input: proc.stderr });
  createInterface({ input: proc.stdout }).on('line', (l) => record(`(stdout) ${l}`));

  let exited = false;
  const exitPromise = new Promise((res) => {
    proc.once('exit', (code, signal) => {
      exited = true;
      res({ code, signal });
    });
    // A failed spawn (e.g. ENOENT) emits 'error' and never 'exit'.
    proc.once('error', (error) => {
      if (proc.pid === undefined) {
        exited = true;
        res({ code: null, signal: null, error });
      }
    });
  });

  const stop = async () => {
    if (exited) return;
    proc.kill('SIGTERM');
    const killTimer = setTimeout(() => {
      if (!exited) proc.kill('SIGKILL');
    }, 2000);
    await exitPromise;
    clearTimeout(killTimer);
  };

  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stop().finally(() => reject(err));
    };
    const timer = setTimeout(
      () => fail(new Error(`${label} no "listening on" line within ${startTimeoutMs} ms\n${logs.join('\n')}`)),
      startTimeoutMs,
    );
    proc.once('error', (err) => fail(new Error(`${label} failed to spawn ${command}: ${err.message}`)));
    exitPromise.then(({ code, signal }) => {
      if (!settled) fail(new Error(`${label} exited early (code ${code}, signal ${signal})\n${logs.join('\n')}`));
    });
    stderrLines.on('line', (line) => {
      record(line);
      if (settled) return;
      const m = LISTENING_RE.exec(line);
      if (m) {
        settled = true;
        clearTimeout(timer);
        resolve({ url: `${m[1]}://${m[2]}`, pid: proc.pid, proc, logs, stop, exited: () => exited });
      }
    });
  });
}

/**
 * Wrap a test body so that, when it fails, the server's log lines written during the
 * test (or the last 50 lines) are printed to the test output.
 * @param {() => {logs: string[]} | undefined} getServer
 * @param {(t: import('node:test').TestContext) => Promise<unknown>} fn
 */
export function withServerLogs(getServer, fn) {
  return async (t) => {
    const srv = getServer();
    const mark = srv ? srv.logs.length : 0;
    try {
      return await fn(t);
    } catch (err) {
      if (srv) {
        let lines = srv.logs.slice(mark);
        if (lines.length === 0) lines = srv.logs.slice(-50);
        console.error(`---- server log (${lines.length} lines) ----\n${lines.slice(-200).join('\n')}\n---- end of server log ----`);
      }
      throw err;
    }
  };
}

/** Reject `promise` with a descriptive error after `ms`. */
export function withTimeout(promise, ms, what = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Resolve with the argument list of the next `event` on `emitter` (socket.io-client
 * Socket/Manager/engine, or a Node EventEmitter); reject after `timeoutMs`.
 */
export function once(emitter, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const off = () => (emitter.off ?? emitter.removeListener).call(emitter, event, handler);
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    function handler(...args) {
      clearTimeout(timer);
      off();
      resolve(args);
    }
    emitter.on(event, handler);
  });
}

/** Wait `ms` milliseconds (only for short, bounded pauses). */
export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `predicate` every `intervalMs` until it returns truthy; reject after `timeoutMs`.
 */
export async function waitUntil(predicate, timeoutMs = 5000, what = 'condition', intervalMs = 10) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(intervalMs);
  }
}

/** Parse VmRSS and VmHWM (in kB) from /proc/PID/status. */
export function readRss(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    return m ? Number(m[1]) : undefined;
  };
  return { vmRss: field('VmRSS'), vmHwm: field('VmHWM') };
}

/** Normalise Buffer / ArrayBuffer / typed array to a Buffer for comparisons. */
export function toBuffer(x) {
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new TypeError(`not binary: ${Object.prototype.toString.call(x)}`);
}

/**
 * A raw WebSocket with a message queue, for protocol-level tests.
 * Messages are `{ data: string | Buffer, binary: boolean }`.
 */
export class RawWs {
  /** Open a WebSocket and wait for it to be open (or reject on error / timeout). */
  static async open(url, { timeoutMs = 5000, headers, autoPong = false } = {}) {
    const ws = new WebSocket(url, { headers });
    const raw = new RawWs(ws, { autoPong });
    await withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected HTTP ${res.statusCode}`)));
      }),
      timeoutMs,
      `websocket open ${url}`,
    );
    return raw;
  }

  /**
   * @param {WebSocket} ws
   * @param {{autoPong?: boolean}} [opts] autoPong: answer every Engine.IO ping `2` with `3`
   *   as soon as it arrives and do not queue it (keeps a session alive while a test waits elsewhere).
   */
  constructor(ws, { autoPong = false } = {}) {
    this.ws = ws;
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.closeInfo = null;
    ws.on('error', () => {}); // surfaced via close
    ws.on('message', (data, isBinary) => {
      const msg = { data: isBinary ? Buffer.from(data) : data.toString('utf8'), binary: isBinary };
      if (this.autoPong && !isBinary && msg.data === '2') {
        if (this.isOpen) ws.send('3');
        return;
      }
      this.queue.push(msg);
      this._wake();
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        this._wake();
        resolve(this.closeInfo);
      });
    });
  }

  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    this.ws.send(data);
  }

  /**
   * Next message. Options:
   *  - skip: array of text messages to drop (e.g. ['2', '6']); a dropped '2' is answered with '3'
   *    when `pong` is true (default true).
   * Rejects on timeout or if the socket closes first.
   */
  async next({ timeoutMs = 3000, skip = ['2'], pong = true } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.queue.length) {
        const msg = this.queue.shift();
        if (!msg.binary && skip.includes(msg.data)) {
          if (msg.data === '2' && pong && this.isOpen) this.ws.send('3');
          continue;
        }
        return msg;
      }
      if (this.closeInfo) throw new Error(`websocket closed (code ${this.closeInfo.code}) while waiting for a message`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for a websocket message`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Next text message (fails on a binary one). */
  async nextText(opts) {
    const msg = await this.next(opts);
    if (msg.binary) throw new Error(`expected a text frame, got binary ${msg.data.toString('hex')}`);
    return msg.data;
  }

  /** Next binary message (fails on a text one). */
  async nextBinary(opts) {
    const msg = await this.next(opts);
    if (!msg.binary) throw new Error(`expected a binary frame, got text ${JSON.stringify(msg.data)}`);
    return msg.data;
  }

  /**
   * Wait for the server to close the connection, answering pings meanwhile and
   * discarding any other message. Resolves with `{code, reason}`.
   */
  async waitClosed(timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closeInfo) return this.closeInfo;
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        await this.next({ timeoutMs: left, skip: ['2'], pong: true });
      } catch {
        if (this.closeInfo) return this.closeInfo;
        break;
      }
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for the server to close the websocket`);
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}
