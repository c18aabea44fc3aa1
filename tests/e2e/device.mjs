// A socket.io-client socket that records every event it gets, so that a
// test takes them in the order it expects, and can tell one did not come.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { delay, withTimeout } from './helpers.mjs';

const WAIT_MS = 5000;

/** A socket.io-client socket that records every event. */
export class Device {
  constructor(url, opts = {}) {
    this.socket = io(url, { forceNew: true, transports: ['websocket'], reconnection: false, ...opts });
    this.events = [];
    this.waiters = new Set();
    this.socket.onAny((event, ...args) => this._push(event, args));
    this.socket.on('connect', () => this._push('$connect', []));
  }

  _push(event, args) {
    this.events.push({ event, args });
    for (const w of [...this.waiters]) w();
  }

  take(event, timeoutMs = WAIT_MS) {
    return withTimeout(new Promise((resolve) => {
      const check = () => {
        const i = this.events.findIndex((e) => e.event === event);
        if (i < 0) return;
        this.waiters.delete(check);
        resolve(this.events.splice(i, 1)[0].args[0]);
      };
      this.waiters.add(check);
      check();
    }), timeoutMs, `${this.name}: "${event}"; has ${JSON.stringify(this.events.map((e) => e.event))}`);
  }

  /** Whether `event` came (or comes within `ms`). */
  async none(event, ms = 300) {
    await delay(ms);
    return !this.events.some((e) => e.event === event);
  }

  emit(event, payload) {
    this.socket.emit(event, payload);
  }

  ask(event, payload) {
    return withTimeout(this.socket.emitWithAck(event, payload), WAIT_MS, `${this.name}: ack of ${event}`);
  }

  async register(name) {
    this.name = name;
    await this.take('$connect');
    this.emit('register_user', { userId: name });
    const reply = await this.take('user_registered');
    assert.equal(reply.success, true, JSON.stringify(reply));
    return this;
  }

  close() {
    this.socket.disconnect();
  }
}

export async function devices(url, names, opts = {}) {
  return Promise.all(names.map((name) => new Device(url, opts[name] ?? {}).register(name)));
}
