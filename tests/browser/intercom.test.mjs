// Real-browser end-to-end tests of the intercom page served at /app/.
//
// Debian's Chromium (driven by playwright-core, no browser download) opens one
// page per person; every step goes through the UI (typing, clicking buttons),
// and the WebRTC calls carry real (fake-device) audio over loopback. Run it
// through tests/browser/run, which puts it in a network namespace with only
// loopback, so ICE uses loopback host candidates.
//
// Environment:
//   SIGNALBOX_BIN   the server binary (default <repo>/target/debug/signalbox)
//   CHROMIUM_BIN    the browser (default /usr/bin/chromium)
//   BROWSER_LOG=1   echo the server's log and the pages' console to stderr

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const SERVER_BIN = process.env.SIGNALBOX_BIN || join(ROOT, 'target', 'debug', 'signalbox');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const OUTPUT = join(HERE, 'output');
const VERBOSE = Boolean(process.env.BROWSER_LOG);

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

// Every wait is bounded.
const STEP_MS = 10_000; // one UI step (a click, a status change)
const MEDIA_MS = 15_000; // ICE + DTLS + first audio packets
const PHONE = { width: 390, height: 844 };

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

const servers = new Set();

/** Starts the server on 127.0.0.1 with an ephemeral port. */
function startServer(args = [], { listen = '127.0.0.1:0' } = {}) {
  const proc = spawn(SERVER_BIN, ['--listen', listen, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = [];
  let exited = false;
  const exit = new Promise((res) => {
    proc.once('exit', (code, signal) => { exited = true; res({ code, signal }); });
    proc.once('error', (error) => { exited = true; res({ error }); });
  });
  const server = {
    proc,
    logs,
    url: null,
    async stop() {
      servers.delete(server);
      if (exited) return;
      proc.kill('SIGTERM');
      const kill = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, 3000);
      await exit;
      clearTimeout(kill);
    },
  };
  servers.add(server);
  createInterface({ input: proc.stdout }).on('line', (line) => logs.push(`(stdout) ${line}`));
  const lines = createInterface({ input: proc.stderr });
  return new Promise((resolveStart, rejectStart) => {
    const fail = (why) => {
      clearTimeout(timer);
      server.stop().finally(() => rejectStart(new Error(`${why}\n${logs.join('\n')}`)));
    };
    const timer = setTimeout(() => fail(`server: no "listening on" line within ${STEP_MS} ms`), STEP_MS);
    exit.then(({ code, signal, error }) => {
      if (!server.url) fail(`server ${SERVER_BIN} ended early: ${error ? error.message : `code ${code}, signal ${signal}`}`);
    });
    lines.on('line', (line) => {
      logs.push(line);
      if (VERBOSE) process.stderr.write(`[server] ${line}\n`);
      const m = /listening on (https?):\/\/(\S+)/.exec(line);
      if (m && !server.url) {
        server.url = `${m[1]}://${m[2]}`;
        clearTimeout(timer);
        resolveStart(server);
      }
    });
  });
}

// ---------------------------------------------------------------------------
// The browser and its pages
// ---------------------------------------------------------------------------

let browser;
let server;
const openContexts = new Set();

function killEverything() {
  for (const s of servers) s.proc.kill('SIGKILL');
  if (browser) browser.close().catch(() => {});
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killEverything();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}
process.once('exit', () => { for (const s of servers) s.proc.kill('SIGKILL'); });

before(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM_BIN,
    args: CHROMIUM_ARGS,
    timeout: STEP_MS,
  });
});

after(async () => {
  for (const context of openContexts) await context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  for (const s of [...servers]) await s.stop();
});

/**
 * Opens the intercom page for one person, in a context of its own (own
 * storage), at a phone's size, and registers `name` through the UI.
 * `path` is what follows the server's address; `init` runs in the page
 * before its own script; `online: false` does not wait for the connection.
 */
async function openPerson(name, { on = server, register = true, path = '/app/', init, online = true } = {}) {
  // A test certificate is self-signed; the browser is told to take it.
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, ignoreHTTPSErrors: true });
  openContexts.add(context);
  context.setDefaultTimeout(STEP_MS);
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const person = {
    name,
    page,
    errors: [],
    async close() {
      openContexts.delete(context);
      await context.close().catch(() => {});
    },
  };
  page.on('pageerror', (err) => person.errors.push(`${name}: uncaught ${err.message}`));
  page.on('console', (msg) => {
    if (VERBOSE) process.stderr.write(`[${name} console.${msg.type()}] ${msg.text()}\n`);
  });
  await page.goto(`${on.url}${path}`, { timeout: STEP_MS });
  if (!online) return person;
  await page.waitForFunction(() => window.signalbox && window.signalbox.connection === 'online', null, { timeout: STEP_MS });
  if (register) {
    await page.fill('#name', name);
    await page.click('#register');
    await page.waitForFunction((n) => window.signalbox.me === n, name, { timeout: STEP_MS });
    assert.equal(await page.textContent('#my-name'), name);
  }
  return person;
}

async function statusOf(page) {
  return (await page.textContent('#status-line').catch(() => '<page gone>')).trim();
}

/** Waits until the state line contains `text` (a string or a RegExp). */
async function waitForStatus(person, text, timeout = STEP_MS) {
  const isRegExp = text instanceof RegExp;
  try {
    await person.page.waitForFunction(
      ([source, flags, plain]) => {
        const line = document.getElementById('status-line').textContent;
        return plain !== null ? line.includes(plain) : new RegExp(source, flags).test(line);
      },
      isRegExp ? [text.source, text.flags, null] : [null, null, text],
      { timeout },
    );
  } catch (err) {
    throw new Error(`${person.name}'s page never showed ${isRegExp ? text : JSON.stringify(text)}; it shows ${JSON.stringify(await statusOf(person.page))} (state ${await stateOf(person)})`, { cause: err });
  }
}

async function stateOf(person) {
  return person.page.evaluate(() => window.signalbox.state).catch(() => '<page gone>');
}

async function waitForState(person, state, timeout = STEP_MS) {
  try {
    await person.page.waitForFunction((s) => window.signalbox.state === s, state, { timeout });
  } catch (err) {
    throw new Error(`${person.name}'s page never reached state ${state}; it is ${await stateOf(person)}: ${JSON.stringify(await statusOf(person.page))}`, { cause: err });
  }
}

async function waitForConnected(person) {
  try {
    await person.page.waitForFunction(() => window.signalbox.pc && window.signalbox.pc.connectionState === 'connected', null, { timeout: MEDIA_MS });
  } catch (err) {
    const pcState = await person.page.evaluate(() => {
      const pc = window.signalbox.pc;
      return pc ? `${pc.connectionState}/${pc.iceConnectionState}/${pc.signalingState}` : 'no RTCPeerConnection';
    }).catch(() => '<page gone>');
    throw new Error(`${person.name}'s RTCPeerConnection never connected: ${pcState}`, { cause: err });
  }
}

/** Clicks the Call button next to `peer` in the list of online users. */
async function callFromList(caller, peer) {
  const button = caller.page.locator(`[data-testid="call-${peer}"]`);
  // The list is polled every 2 s; the button is enabled once we are idle.
  await button.waitFor({ state: 'visible', timeout: STEP_MS });
  await caller.page.waitForFunction((p) => {
    const b = document.querySelector(`[data-testid="call-${p}"]`);
    return b && !b.disabled;
  }, peer, { timeout: STEP_MS });
  await button.click();
}

/**
 * Starts watching getStats() in the page: the time of the first inbound
 * audio packet (window.__firstAudioAt), or of the first decoded video frame
 * (window.__firstVideoAt, with `kind` "video").
 */
async function watchInbound(person, kind = 'audio') {
  await person.page.evaluate(([limitMs, video]) => {
    const key = video ? '__firstVideoAt' : '__firstAudioAt';
    window[key] = 0;
    const until = Date.now() + limitMs;
    const tick = async () => {
      const pc = window.signalbox.pc;
      if (pc) {
        try {
          for (const report of (await pc.getStats()).values()) {
            if (report.type !== 'inbound-rtp' || report.kind !== (video ? 'video' : 'audio')) continue;
            if ((video ? report.framesDecoded : report.packetsReceived) > 0) {
              window[key] = Date.now();
              return;
            }
          }
        } catch (_) { /* closed meanwhile */ }
      }
      if (Date.now() < until) setTimeout(tick, 10);
    };
    tick();
  }, [2 * MEDIA_MS, kind === 'video']);
}

async function inboundAudioPackets(person) {
  return person.page.evaluate(async () => {
    const pc = window.signalbox.pc;
    if (!pc) return -1;
    let packets = 0;
    for (const report of (await pc.getStats()).values()) {
      if (report.type === 'inbound-rtp' && report.kind === 'audio') packets += report.packetsReceived || 0;
    }
    return packets;
  });
}

/** Polls until `person` has received audio packets (bounded). */
async function waitForInboundAudio(person) {
  const until = Date.now() + MEDIA_MS;
  let packets = 0;
  while (Date.now() < until) {
    packets = await inboundAudioPackets(person);
    if (packets > 0) return packets;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${person.name} received no audio packets within ${MEDIA_MS} ms`);
}

/** Presses Tab until `selector` has the focus (at most `max` times). */
async function tabTo(person, selector, max = 25) {
  for (let i = 0; i < max; i += 1) {
    if (await person.page.evaluate((sel) => document.activeElement && document.activeElement.matches(sel), selector)) return;
    await person.page.keyboard.press('Tab');
  }
  const focused = await person.page.evaluate(() => document.activeElement && document.activeElement.outerHTML.slice(0, 80));
  throw new Error(`${person.name}: ${max} presses of Tab never reached ${selector}; the focus is on ${focused}`);
}

async function focusedId(person) {
  return person.page.evaluate(() => document.activeElement && document.activeElement.id);
}

function noPageErrors(...people) {
  assert.deepEqual(people.flatMap((p) => p.errors), [], 'uncaught errors in the pages');
}

async function closeAll(...people) {
  await Promise.all(people.filter(Boolean).map((p) => p.close()));
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

test('alice calls bob, bob answers, audio flows both ways, alice hangs up', { timeout: 45_000 }, async () => {
  const alice = await openPerson('alice');
  const bob = await openPerson('bob');
  try {
    // Straight to the server, both pages moved from long-polling to WebSocket.
    for (const person of [alice, bob]) {
      await person.page.waitForFunction(() => window.signalbox.transport === 'websocket', null, { timeout: STEP_MS });
    }
    // Neither lists themselves.
    await alice.page.locator('[data-testid="call-bob"]').waitFor({ timeout: STEP_MS });
    assert.equal(await alice.page.locator('[data-testid="call-alice"]').count(), 0);

    // Time alice's click on Call, in the page.
    await alice.page.evaluate(() => {
      document.addEventListener('click', (e) => {
        if (e.target.closest('[data-testid="call-bob"]')) window.__callClickAt = Date.now();
      }, { capture: true });
    });
    await callFromList(alice, 'bob');
    await waitForStatus(alice, 'Calling bob…');
    await waitForStatus(bob, 'alice is calling you');
    assert.equal(await bob.page.isVisible('#answer'), true);
    assert.equal(await bob.page.isVisible('#decline'), true);
    await bob.page.screenshot({ path: join(OUTPUT, 'bob-ringing.png') });

    await watchInbound(bob);
    await bob.page.evaluate(() => {
      document.getElementById('answer').addEventListener('click', () => { window.__answerClickAt = Date.now(); }, { capture: true });
    });
    await bob.page.click('#answer');

    await Promise.all([waitForConnected(alice), waitForConnected(bob)]);
    await bob.page.waitForFunction(() => window.__firstAudioAt > 0, null, { timeout: MEDIA_MS })
      .catch(() => { throw new Error(`bob received no audio within ${MEDIA_MS} ms`); });
    const [callAt, answerAt, audioAt] = [
      await alice.page.evaluate(() => window.__callClickAt),
      await bob.page.evaluate(() => window.__answerClickAt),
      await bob.page.evaluate(() => window.__firstAudioAt),
    ];
    assert.ok(callAt > 0 && answerAt >= callAt && audioAt >= answerAt, `timestamps ${callAt} ${answerAt} ${audioAt}`);
    console.log(`call to audio: ${audioAt - callAt} ms (ringing until the test clicked Answer: ${answerAt - callAt} ms; answer to audio: ${audioAt - answerAt} ms)`);

    assert.ok(await waitForInboundAudio(bob) > 0);
    assert.ok(await waitForInboundAudio(alice) > 0, 'alice hears bob too');
    // The remote audio goes to the <audio autoplay> element.
    for (const person of [alice, bob]) {
      const audio = await person.page.evaluate(() => {
        const el = document.getElementById('remote-audio');
        return { tracks: el.srcObject ? el.srcObject.getAudioTracks().length : 0, autoplay: el.autoplay, paused: el.paused };
      });
      assert.deepEqual(audio, { tracks: 1, autoplay: true, paused: false }, `${person.name}'s audio element`);
    }

    await waitForState(alice, 'in-call');
    await waitForState(bob, 'in-call');
    await waitForStatus(alice, /^In call with bob — 00:0[1-9]$/);
    await waitForStatus(bob, /^In call with alice — 00:0[1-9]$/);
    await alice.page.screenshot({ path: join(OUTPUT, 'alice-in-call.png') });
    await bob.page.screenshot({ path: join(OUTPUT, 'bob-in-call.png') });

    await alice.page.click('#hangup');
    await waitForStatus(alice, 'Call ended');
    await waitForStatus(bob, 'alice hung up');
    for (const person of [alice, bob]) {
      await waitForState(person, 'idle');
      assert.equal(await person.page.evaluate(() => window.signalbox.pc), null);
      assert.equal(await person.page.evaluate(() => document.getElementById('remote-audio').srcObject), null);
      assert.equal(await person.page.isVisible('#hangup'), false);
    }
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
  }
});

test('bob declines: alice is told bob declined', { timeout: 30_000 }, async () => {
  const alice = await openPerson('alice');
  const bob = await openPerson('bob');
  try {
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#decline');
    await waitForStatus(alice, 'bob declined');
    await waitForState(alice, 'idle');
    await waitForState(bob, 'idle');
    assert.equal(await alice.page.evaluate(() => window.signalbox.pc), null);
    assert.equal(await bob.page.evaluate(() => window.signalbox.pc), null);
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
  }
});

test('carol calls bob while bob is in a call with alice: bob is busy', { timeout: 30_000 }, async () => {
  const alice = await openPerson('alice');
  const bob = await openPerson('bob');
  const carol = await openPerson('carol');
  try {
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#answer');
    await waitForState(alice, 'in-call');
    await waitForState(bob, 'in-call');

    await callFromList(carol, 'bob');
    await waitForStatus(carol, 'bob is busy');
    await waitForState(carol, 'idle');
    assert.equal(await carol.page.evaluate(() => window.signalbox.pc), null);
    // The call between alice and bob goes on.
    assert.equal(await alice.page.evaluate(() => window.signalbox.state), 'in-call');
    assert.equal(await bob.page.evaluate(() => window.signalbox.state), 'in-call');

    await bob.page.click('#hangup');
    await waitForStatus(alice, 'bob hung up');
    await waitForStatus(bob, 'Call ended');
    noPageErrors(alice, bob, carol);
  } finally {
    await closeAll(alice, bob, carol);
  }
});

test('calling a name that is not online: "not online"', { timeout: 30_000 }, async () => {
  const carol = await openPerson('carol');
  const dave = await openPerson('dave');
  try {
    await carol.page.fill('#dial-name', 'nobody-here');
    await carol.page.click('#dial');
    await waitForStatus(carol, 'nobody-here is not online');
    await waitForState(carol, 'idle');
    assert.equal(await carol.page.evaluate(() => window.signalbox.pc), null);

    // A user who just left, still in carol's list for up to 2 s.
    await carol.page.locator('[data-testid="call-dave"]').waitFor({ timeout: STEP_MS });
    await dave.close();
    await carol.page.fill('#dial-name', 'dave');
    await carol.page.click('#dial');
    await waitForStatus(carol, 'dave is not online');

    // A name the server's rule refuses is explained before anything is sent.
    await carol.page.fill('#dial-name', 'Dave Smith');
    await carol.page.click('#dial');
    await carol.page.waitForSelector('#dial-error:not([hidden])', { timeout: STEP_MS });
    assert.match(await carol.page.textContent('#dial-error'), /letters/);
    assert.equal(await carol.page.evaluate(() => window.signalbox.state), 'idle');
    noPageErrors(carol);
  } finally {
    await closeAll(carol, dave);
  }
});

test('the other side leaving or not answering is told in words', { timeout: 30_000 }, async () => {
  // A crashed page's connection is lost, not left: the call waits for the
  // reconnect grace (short here), then ends.
  const short = await startServer(['--call-timeout', '1500ms', '--reconnect-grace', '1s']);
  const alice = await openPerson('alice', { on: short });
  const bob = await openPerson('bob', { on: short });
  try {
    // Nobody answers.
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await waitForStatus(alice, 'No answer from bob');
    await waitForStatus(bob, 'Missed call from alice');

    // bob's page dies during a call (a crash: no chance to hang up).
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#answer');
    await waitForState(alice, 'in-call');
    const cdp = await bob.page.context().newCDPSession(bob.page);
    // No answer comes back from a crashed page: do not wait for one.
    cdp.send('Page.crash').catch(() => {});
    await waitForStatus(alice, 'bob’s connection dropped. Waiting for them to come back…');
    await waitForStatus(alice, 'bob’s connection was lost');
    await waitForState(alice, 'idle');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
    await short.stop();
  }
});

test('a call to a group of two pages: the first to answer talks, the other is told in words', { timeout: 45_000 }, async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'signalbox-browser-')), 'directory.toml');
  writeFileSync(file, '[groups.family]\nmembers = ["bob", "carol"]\n');
  const grouped = await startServer(['--directory', file]);
  const alice = await openPerson('alice', { on: grouped });
  const bob = await openPerson('bob', { on: grouped });
  const carol = await openPerson('carol', { on: grouped });
  try {
    await alice.page.fill('#dial-name', 'family');
    await alice.page.click('#dial');
    await waitForStatus(alice, 'Calling family…');
    await waitForStatus(bob, 'alice is calling family');
    await waitForStatus(carol, 'alice is calling family');
    await watchInbound(carol);
    await carol.page.click('#answer');
    await waitForStatus(bob, 'alice’s call to family was answered on another device');
    await waitForState(bob, 'idle');
    await Promise.all([waitForConnected(alice), waitForConnected(carol)]);
    await waitForStatus(alice, /^In call with carol \(family\)/);
    assert.ok(await waitForInboundAudio(carol) > 0, 'carol hears alice');
    assert.ok(await waitForInboundAudio(alice) > 0, 'alice hears carol');
    await alice.page.click('#hangup');
    await waitForStatus(carol, 'alice hung up');
    noPageErrors(alice, bob, carol);
  } finally {
    await closeAll(alice, bob, carol);
    await grouped.stop();
  }
});

test('names: the rule is explained, and a name opened elsewhere disconnects the old page', { timeout: 30_000 }, async () => {
  const first = await openPerson('erin', { register: false });
  let second;
  try {
    await first.page.fill('#name', 'Erin Smith');
    await first.page.click('#register');
    await first.page.waitForSelector('#name-error:not([hidden])', { timeout: STEP_MS });
    assert.match(await first.page.textContent('#name-error'), /letters/);
    assert.equal(await first.page.evaluate(() => window.signalbox.me), null);

    await first.page.fill('#name', 'erin');
    await first.page.click('#register');
    await first.page.waitForFunction(() => window.signalbox.me === 'erin', null, { timeout: STEP_MS });

    second = await openPerson('erin');
    await first.page.waitForSelector('#kicked:not([hidden])', { timeout: STEP_MS });
    assert.match(await first.page.textContent('#kicked-text'), /opened in another window or on another device/);
    await waitForState(first, 'kicked');
    // It does not reconnect by itself.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await first.page.evaluate(() => window.signalbox.connection), 'kicked');
    assert.equal(await second.page.evaluate(() => window.signalbox.me), 'erin');
    noPageErrors(first, second);
  } finally {
    await closeAll(first, second);
  }
});

test('the server restarts: the call ends, and the pages reconnect and register again', { timeout: 40_000 }, async () => {
  let first = await startServer();
  let second;
  const alice = await openPerson('alice', { on: first });
  const bob = await openPerson('bob', { on: first });
  try {
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#answer');
    await waitForState(alice, 'in-call');
    await waitForState(bob, 'in-call');

    const address = new URL(first.url).host;
    await first.stop();
    for (const person of [alice, bob]) {
      await person.page.waitForFunction(() => window.signalbox.connection !== 'online', null, { timeout: STEP_MS });
      assert.equal(await person.page.evaluate(() => window.signalbox.pc), null, `${person.name}'s call is over`);
      assert.notEqual(await stateOf(person), 'in-call');
    }

    // A new server on the same address: the pages come back by themselves.
    second = await startServer([], { listen: address });
    for (const person of [alice, bob]) {
      await person.page.waitForFunction(() => window.signalbox.connection === 'online', null, { timeout: 20_000 });
      await waitForState(person, 'idle');
    }
    const users = await (await fetch(`${second.url}/users`)).json();
    assert.deepEqual(users.connectedUsers, ['alice', 'bob']);
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#decline');
    await waitForStatus(alice, 'bob declined');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
    await first.stop();
    if (second) await second.stop();
  }
});

/** alice calls bob from the list, bob answers, and audio flows both ways. */
async function connectedCall(alice, bob) {
  await callFromList(alice, 'bob');
  await waitForStatus(bob, 'alice is calling you');
  await bob.page.click('#answer');
  await Promise.all([waitForConnected(alice), waitForConnected(bob)]);
  await waitForInboundAudio(alice);
  await waitForInboundAudio(bob);
}

test('over HTTPS and WSS: the page loads, registers and a call carries audio both ways', { timeout: 45_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-browser-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const secure = await startServer(['--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')]);
  assert.match(secure.url, /^https:/);
  let alice;
  let bob;
  try {
    // Notes every WebSocket the page opens.
    const init = () => {
      window.__webSockets = [];
      window.WebSocket = new Proxy(window.WebSocket, {
        construct(target, args) {
          const ws = new target(...args);
          window.__webSockets.push(ws);
          return ws;
        },
      });
    };
    alice = await openPerson('alice', { on: secure, init });
    bob = await openPerson('bob', { on: secure, init });
    await connectedCall(alice, bob);
    // The pages went over to WebSocket, which is WSS here.
    for (const person of [alice, bob]) {
      const sockets = await person.page.evaluate(() => window.__webSockets.map((ws) => [ws.url.split(':')[0], ws.readyState]));
      assert.deepEqual(sockets.at(-1), ['wss', 1], `${person.name}'s WebSockets: ${JSON.stringify(sockets)}`);
    }
    await alice.page.click('#hangup');
    await waitForStatus(bob, 'alice hung up');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(...[alice, bob].filter(Boolean));
    await secure.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a Wi-Fi blip: bob is offline for 5 s, the call stays up, and audio flows after an ICE restart', { timeout: 60_000 }, async () => {
  const alice = await openPerson('alice');
  const bob = await openPerson('bob');
  try {
    await connectedCall(alice, bob);
    await bob.page.context().setOffline(true);
    await waitForStatus(bob, /Connection to the server lost\. Reconnecting…/);
    assert.match(await bob.page.textContent('#connection-text'), /reconnecting/i);
    await waitForStatus(alice, 'bob’s connection dropped. Waiting for them to come back…');
    assert.equal(await alice.page.evaluate(() => window.signalbox.peerAway), true);
    await bob.page.screenshot({ path: join(OUTPUT, 'bob-reconnecting.png') });
    // Offline is the point of the test: it lasts as long as a blip does.
    await new Promise((r) => setTimeout(r, 5000));
    await bob.page.context().setOffline(false);
    await bob.page.waitForFunction(() => window.signalbox.connection === 'online' && window.signalbox.iceRestarts > 0, null, { timeout: STEP_MS });
    await waitForStatus(alice, /bob is back|In call with bob/);
    for (const person of [alice, bob]) {
      await waitForState(person, 'in-call');
      assert.equal(await person.page.isVisible('#hangup'), true);
    }
    await Promise.all([waitForConnected(alice), waitForConnected(bob)]);
    // Audio keeps coming after the restart.
    const before = [await inboundAudioPackets(alice), await inboundAudioPackets(bob)];
    const until = Date.now() + MEDIA_MS;
    let after = before;
    while (Date.now() < until && !(after[0] > before[0] && after[1] > before[1])) {
      await new Promise((r) => setTimeout(r, 100));
      after = [await inboundAudioPackets(alice), await inboundAudioPackets(bob)];
    }
    assert.ok(after[0] > before[0] && after[1] > before[1], `audio after the blip: ${before} -> ${after}`);
    const users = await (await fetch(`${server.url}/users`)).json();
    assert.deepEqual(users.connectedUsers, ['alice', 'bob']);
    await alice.page.click('#hangup');
    await waitForStatus(bob, 'alice hung up');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
  }
});

test('offline past the reconnect grace: both pages show the call ended', { timeout: 45_000 }, async () => {
  const brief = await startServer(['--reconnect-grace', '2s']);
  const alice = await openPerson('alice', { on: brief });
  const bob = await openPerson('bob', { on: brief });
  try {
    await connectedCall(alice, bob);
    await bob.page.context().setOffline(true);
    await waitForStatus(alice, 'bob’s connection dropped. Waiting for them to come back…');
    await waitForStatus(alice, 'bob’s connection was lost');
    await waitForState(alice, 'idle');
    await waitForStatus(bob, 'Lost the connection to the server. Call ended.');
    await waitForState(bob, 'idle');
    assert.equal(await bob.page.evaluate(() => window.signalbox.pc), null);
    await bob.page.context().setOffline(false);
    await bob.page.waitForFunction(() => window.signalbox.connection === 'online' && window.signalbox.me === 'bob', null, { timeout: STEP_MS });
    await waitForState(bob, 'idle');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
    await brief.stop();
  }
});

test('the page hands the ICE servers from the server to its RTCPeerConnection', { timeout: 30_000 }, async () => {
  const stun = 'stun:stun.example.org:3478';
  const iced = await startServer(['--ice-server', stun]);
  const alice = await openPerson('alice', { on: iced });
  const bob = await openPerson('bob', { on: iced });
  try {
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    // The URLs the page's RTCPeerConnection was configured with.
    const iceUrls = (person) => person.page.evaluate(() => window.signalbox.pc.getConfiguration().iceServers
      .flatMap((server) => [].concat(server.urls)));
    assert.deepEqual(await iceUrls(alice), [stun], 'the caller\'s RTCPeerConnection');
    await bob.page.click('#answer');
    await waitForState(bob, 'in-call');
    assert.deepEqual(await iceUrls(bob), [stun], 'the callee\'s RTCPeerConnection');
    await alice.page.click('#hangup');
    await waitForStatus(bob, 'alice hung up');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
    await iced.stop();
  }
});

test('a blocked microphone is explained, calling and answering', { timeout: 30_000 }, async () => {
  const blocked = () => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  };
  const alice = await openPerson('alice', { init: blocked });
  const bob = await openPerson('bob');
  try {
    await callFromList(alice, 'bob');
    await waitForStatus(alice, 'Could not call bob without the microphone.');
    await alice.page.waitForSelector('#mic-error:not([hidden])');
    assert.match(await alice.page.textContent('#mic-error'), /The microphone is blocked for this page\. Allow it/);
    await waitForState(alice, 'idle');
    assert.equal(await stateOf(bob), 'idle', 'bob never rang');

    // Called, alice cannot answer either: she is told why, and it keeps ringing.
    await callFromList(bob, 'alice');
    await waitForStatus(alice, 'bob is calling you');
    assert.equal(await alice.page.isVisible('#mic-error'), false, 'the old error is cleared');
    await alice.page.click('#answer');
    await alice.page.waitForSelector('#mic-error:not([hidden])');
    assert.match(await alice.page.textContent('#mic-error'), /The microphone is blocked/);
    await waitForState(alice, 'ringing');
    await alice.page.click('#decline');
    await waitForStatus(bob, 'alice declined');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
  }
});

test('registering, calling, answering and hanging up by keyboard alone', { timeout: 30_000 }, async () => {
  const bob = await openPerson('bob');
  const alice = await openPerson('alice', { register: false });
  try {
    await tabTo(alice, '#name');
    await alice.page.keyboard.type('alice');
    await alice.page.keyboard.press('Enter');
    await alice.page.waitForFunction(() => window.signalbox.me === 'alice');

    await alice.page.locator('[data-testid="call-bob"]:not([disabled])').waitFor();
    await tabTo(alice, '[data-testid="call-bob"]');
    await alice.page.keyboard.press('Enter');
    await waitForStatus(bob, 'alice is calling you');
    // The ringing page puts the focus on Answer; Space presses it.
    assert.equal(await focusedId(bob), 'answer');
    await bob.page.keyboard.press('Space');
    await waitForState(alice, 'in-call');
    await waitForState(bob, 'in-call');

    await tabTo(alice, '#hangup');
    await alice.page.keyboard.press('Enter');
    await waitForStatus(alice, 'Call ended');
    await waitForStatus(bob, 'alice hung up');

    // Calling by name: the dial field and Enter.
    await tabTo(alice, '#dial-name');
    await alice.page.keyboard.type('nobody-here');
    await alice.page.keyboard.press('Enter');
    await waitForStatus(alice, 'nobody-here is not online');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
  }
});

test('tokens: the page asks for one, explains refusals, and connects with it despite --cors-origin', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-browser-'));
  const secret = join(dir, 'auth-secret');
  writeFileSync(secret, 'a secret for the browser test\n', { mode: 0o600 });
  const token = (user) => execFileSync(SERVER_BIN, ['token', '--user', user, '--ttl', '1h', '--auth-secret-file', secret], { encoding: 'utf8' }).trim();
  // Only another origin is listed: the page passes as the server's own.
  const guarded = await startServer(['--auth-secret-file', secret, '--cors-origin', 'https://elsewhere.example']);
  let alice;
  let bob;
  try {
    alice = await openPerson('alice', { on: guarded, online: false });
    await alice.page.waitForSelector('#token-form:not([hidden])');
    assert.match(await alice.page.textContent('#token-error'), /needs an access token.*authentication required/s);
    assert.match(await alice.page.textContent('#connection'), /Needs an access token/);
    await waitForStatus(alice, 'Enter your access token');

    await alice.page.fill('#token', 'not-a-token');
    await alice.page.click('#token-connect');
    await alice.page.waitForFunction(() => /not an access token/.test(document.getElementById('token-error').textContent));
    assert.match(await alice.page.textContent('#token-error'), /malformed token/);
    assert.match(await alice.page.textContent('#connection'), /Access token refused/);

    await alice.page.fill('#token', token('alice'));
    await alice.page.click('#token-connect');
    await alice.page.waitForFunction(() => window.signalbox.connection === 'online');
    assert.equal(await alice.page.isVisible('#token-form'), false);
    // The name comes from the token.
    assert.equal(await alice.page.inputValue('#name'), 'alice');
    await alice.page.click('#register');
    await alice.page.waitForFunction(() => window.signalbox.me === 'alice');

    // A link with the token in its fragment connects at once, and the token
    // leaves the address bar.
    bob = await openPerson('bob', { on: guarded, path: `/app/#token=${token('bob')}` });
    assert.equal(new URL(bob.page.url()).hash, '');
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#decline');
    await waitForStatus(alice, 'bob declined');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
    await guarded.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * An HTTP proxy in front of `target` that passes requests through and
 * refuses every WebSocket upgrade, as a proxy that strips Upgrade does.
 * `upgrades` counts the refused attempts.
 */
async function noUpgradeProxy(target) {
  const upstream = new URL(target.url);
  const proxy = {
    url: null,
    upgrades: 0,
    server: http.createServer((req, res) => {
      const headers = { ...req.headers };
      delete headers.upgrade;
      const out = http.request({
        host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers,
      }, (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      });
      out.on('error', () => res.destroy());
      res.on('close', () => out.destroy());
      req.pipe(out);
    }),
    stop() {
      this.server.closeAllConnections();
      return new Promise((res) => this.server.close(res));
    },
  };
  proxy.server.on('upgrade', (req, socket) => {
    proxy.upgrades += 1;
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  await new Promise((res) => proxy.server.listen(0, '127.0.0.1', res));
  proxy.url = `http://127.0.0.1:${proxy.server.address().port}`;
  return proxy;
}

test('WebSocket refused by a proxy: the pages stay on long-polling, and a call works', { timeout: 45_000 }, async () => {
  const proxy = await noUpgradeProxy(server);
  let alice;
  let bob;
  try {
    alice = await openPerson('alice', { on: proxy });
    bob = await openPerson('bob', { on: proxy });
    for (const person of [alice, bob]) {
      assert.equal(await person.page.evaluate(() => window.signalbox.transport), 'polling', `${person.name}'s transport`);
    }
    assert.ok(proxy.upgrades >= 2, `each page tried the WebSocket (${proxy.upgrades} refused)`);
    await callFromList(alice, 'bob');
    await waitForStatus(bob, 'alice is calling you');
    await bob.page.click('#answer');
    await Promise.all([waitForConnected(alice), waitForConnected(bob)]);
    assert.ok(await waitForInboundAudio(bob) > 0, 'bob hears alice');
    assert.ok(await waitForInboundAudio(alice) > 0, 'alice hears bob');
    await alice.page.click('#hangup');
    await waitForStatus(bob, 'alice hung up');
    assert.equal(await bob.page.evaluate(() => window.signalbox.transport), 'polling');
    noPageErrors(alice, bob);
  } finally {
    await closeAll(alice, bob);
    await proxy.stop();
  }
});

test('a door panel calls a flat: the resident sees the visitor, opens the door, and the panel shows it open', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-browser-'));
  const secret = join(dir, 'auth-secret');
  writeFileSync(secret, 'a secret for the door test\n', { mode: 0o600 });
  const file = join(dir, 'directory.toml');
  writeFileSync(file, [
    '[users.front-door]',
    'kind = "door"',
    'doors = ["main"]',
    'may_call = ["flat-*", "guard-*"]',
    'hang_up_after_open = "3s"',
    '[groups."flat-12"]',
    'members = ["anna"]',
    '[groups.concierge]',
    'members = ["guard-desk"]',
    '',
  ].join('\n'));
  const token = (user) => execFileSync(SERVER_BIN, ['token', '--user', user, '--ttl', '1h', '--auth-secret-file', secret], { encoding: 'utf8' }).trim();
  const building = await startServer(['--directory', file, '--auth-secret-file', secret]);
  let anna;
  let panel;
  let refused;
  try {
    anna = await openPerson('anna', { on: building, path: `/app/#token=${token('anna')}` });
    // The panel registers by itself, as the station its token names.
    panel = await openPerson('front-door', { on: building, path: `/app/door#token=${token('front-door')}`, register: false });
    await panel.page.waitForFunction(() => window.signalbox.me === 'front-door');
    assert.equal(await panel.page.evaluate(() => window.signalbox.mode), 'door');
    await panel.page.locator('[data-testid="call-flat-12"]').waitFor({ timeout: STEP_MS });
    // Buttons for whom it may call (a pattern matches a group member too),
    // and nothing to type.
    assert.deepEqual(await panel.page.locator('#targets button').allTextContents(), ['flat-12', 'guard-desk']);
    for (const field of ['#name', '#dial-name', '#logout']) {
      assert.equal(await panel.page.isVisible(field), false, `${field} on the door panel`);
    }
    assert.equal(await panel.page.isVisible('#users-panel'), false);
    await panel.page.screenshot({ path: join(OUTPUT, 'door-panel.png') });

    await panel.page.evaluate(() => {
      document.addEventListener('click', (e) => {
        if (e.target.closest('[data-testid="call-flat-12"]')) window.__callClickAt = Date.now();
      }, { capture: true });
    });
    await panel.page.click('[data-testid="call-flat-12"]');
    await waitForStatus(panel, 'Calling flat-12…');
    assert.equal(await panel.page.isVisible('#door-panel'), false, 'the buttons give way to the call');
    await waitForStatus(anna, 'front-door is calling flat-12');
    // Opening is allowed while it rings; the resident sees the button at once.
    assert.equal(await anna.page.isVisible('[data-testid="open-door-main"]'), true);

    await watchInbound(anna, 'video');
    await anna.page.evaluate(() => {
      document.getElementById('answer').addEventListener('click', () => { window.__answerClickAt = Date.now(); }, { capture: true });
    });
    await anna.page.click('#answer');
    await Promise.all([waitForConnected(anna), waitForConnected(panel)]);
    await anna.page.waitForFunction(() => window.__firstVideoAt > 0, null, { timeout: 2 * MEDIA_MS })
      .catch(() => { throw new Error(`anna saw no video within ${2 * MEDIA_MS} ms`); });
    const [callAt, answerAt, videoAt] = [
      await panel.page.evaluate(() => window.__callClickAt),
      await anna.page.evaluate(() => window.__answerClickAt),
      await anna.page.evaluate(() => window.__firstVideoAt),
    ];
    assert.ok(callAt > 0 && answerAt >= callAt && videoAt >= answerAt, `timestamps ${callAt} ${answerAt} ${videoAt}`);
    console.log(`door call to video: ${videoAt - callAt} ms (ringing until the test clicked Answer: ${answerAt - callAt} ms; answer to first video frame: ${videoAt - answerAt} ms)`);

    // The visitor's picture plays, large: the door call's video is as wide
    // as the screen, with the resident's own camera as an inset.
    await anna.page.waitForFunction(() => document.getElementById('remote-video').videoWidth > 0, null, { timeout: MEDIA_MS });
    const video = await anna.page.evaluate(() => {
      const el = document.getElementById('remote-video');
      const box = el.getBoundingClientRect();
      return { paused: el.paused, width: box.width, height: box.height, door: document.getElementById('call-panel').dataset.door };
    });
    assert.equal(video.paused, false);
    assert.equal(video.door, 'true');
    const inset = await anna.page.evaluate(() => document.getElementById('local-video').getBoundingClientRect().width);
    assert.ok(video.width >= PHONE.width * 0.85 && video.height >= video.width / 2, `the door's picture is large: ${JSON.stringify(video)}`);
    assert.ok(inset > 0 && inset < video.width / 2, `the resident's own camera is an inset (${inset} px)`);
    await anna.page.screenshot({ path: join(OUTPUT, 'door-call-resident.png'), fullPage: true });
    assert.ok(await waitForInboundAudio(anna) > 0, 'anna hears the door');
    assert.ok(await waitForInboundAudio(panel) > 0, 'the visitor hears anna');
    await panel.page.waitForFunction(() => document.getElementById('remote-video').videoWidth > 0, null, { timeout: MEDIA_MS });
    // Nothing on the panel for a visitor to switch off.
    assert.equal(await panel.page.isVisible('#camera'), false, 'no camera button on the door panel');

    // Camera off: the track is disabled, the button says so.
    await anna.page.click('#camera');
    assert.equal(await anna.page.textContent('#camera'), 'Camera on');
    assert.equal(await anna.page.getAttribute('#camera', 'aria-pressed'), 'true');
    assert.equal(await anna.page.evaluate(() => window.signalbox.pc.getSenders().find((s) => s.track && s.track.kind === 'video').track.enabled), false);
    await anna.page.click('#camera');
    assert.equal(await anna.page.textContent('#camera'), 'Camera off');

    await anna.page.click('[data-testid="open-door-main"]');
    await anna.page.waitForFunction(() => document.getElementById('door-status').textContent === 'The door is open.');
    await panel.page.waitForSelector('#door-open:not([hidden])');
    assert.equal(await panel.page.textContent('#door-open'), 'The door is open');
    await panel.page.screenshot({ path: join(OUTPUT, 'door-panel-open.png'), fullPage: true });
    assert.ok(building.logs.some((line) => /door front-door\/main asked by anna in call .*: opened/.test(line)), 'the audit line');

    // hang_up_after_open: both sides are told why the call ended.
    await waitForStatus(anna, 'The door was opened. Call ended.', 3000 + STEP_MS);
    await waitForStatus(panel, 'The door was opened. Call ended.');
    await waitForState(panel, 'idle');
    assert.equal(await panel.page.isVisible('[data-testid="call-flat-12"]'), true, 'the buttons are back');
    assert.equal(await anna.page.evaluate(() => document.getElementById('remote-video').srcObject), null);
    noPageErrors(anna, panel);
    // A panel whose token is refused says so, and offers nothing to type.
    refused = await openPerson('refused-panel', { on: building, path: '/app/door#token=bad', register: false, online: false });
    await refused.page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Out of service'), null, { timeout: STEP_MS });
    for (const field of ['#token-form', '#name', '#reconnect']) {
      assert.equal(await refused.page.isVisible(field), false, `${field} on a refused door panel`);
    }
  } finally {
    await closeAll(anna, panel, refused);
    await building.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
