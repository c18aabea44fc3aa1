// A local Web Push service for the e2e tests: it hands out subscriptions the
// way a browser's PushManager does and takes the server's pushes the way a
// push service does, checking each POST against RFC 8030 (headers), RFC 8292
// (the VAPID `Authorization`) and RFC 8291 (the aes128gcm body, decrypted
// with the http_ece package). A failed check never throws inside the server:
// it is recorded in `receiver.errors` and answered 400, so a test asserts
// `receiver.errors` is empty.

import { createECDH, createPublicKey, randomBytes, verify } from 'node:crypto';
import { createServer } from 'node:http';
import ece from 'http_ece';

const URGENCIES = ['very-low', 'low', 'normal', 'high'];
const B64URL = /^[A-Za-z0-9_-]+$/;
const MAX_BODY = 4096; // every push service takes at least this much (RFC 8030 §7.2), and need take no more
const AES128GCM_HEADER = 86; // salt 16 + rs 4 + idlen 1 + keyid 65 (RFC 8291 §4)
const DAY_S = 24 * 60 * 60;

/**
 * A local Web Push service for tests: one endpoint per subscription it makes, each with its own
 * P-256 key pair and auth secret, like a browser's push service and PushManager together.
 *
 * Only pushes that it accepts (answers 2xx) are delivered to `next()`; `count()` counts every POST.
 *
 * @param {{host?: string}} [opts]
 */
export async function startPushReceiver({ host = '127.0.0.1' } = {}) {
  const endpoints = new Map(); // path id -> { name, ecdh, auth }
  const byName = new Map(); // name -> { queue, waiters, status, count }
  const errors = [];

  const entry = (name) => {
    let e = byName.get(name);
    if (!e) {
      e = { queue: [], waiters: [], status: 201, count: 0 };
      byName.set(name, e);
    }
    return e;
  };

  const server = createServer((req, res) => {
    const arrivedAt = Date.now();
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let status;
      let problems;
      try {
        ({ status, problems } = handle(req, Buffer.concat(chunks), arrivedAt));
      } catch (err) {
        status = 500;
        problems = [`receiver bug: ${err.stack ?? err}`];
      }
      for (const p of problems) errors.push(`${req.method} ${req.url}: ${p}`);
      res.writeHead(status, problems.length ? { 'content-type': 'text/plain' } : {});
      res.end(problems.join('\n'));
    });
  });

  /** Check one request; returns the status to answer and the list of failed checks. */
  function handle(req, body, arrivedAt) {
    const m = /^\/push\/([^/?#]+)$/.exec(req.url);
    const sub = m && endpoints.get(m[1]);
    if (!sub) return { status: 404, problems: ['no such subscription'] };
    if (req.method !== 'POST') return { status: 400, problems: [`method must be POST, got ${req.method}`] };
    const e = entry(sub.name);
    e.count += 1;
    const problems = [];

    const h = req.headers;
    const headers = { ttl: h.ttl, urgency: h.urgency, topic: h.topic, contentEncoding: h['content-encoding'] };
    if (headers.contentEncoding?.trim().toLowerCase() !== 'aes128gcm') {
      problems.push(`Content-Encoding must be exactly aes128gcm (RFC 8291 §4), got ${JSON.stringify(headers.contentEncoding)}`);
    }
    if (headers.ttl === undefined || !/^\d+$/.test(headers.ttl)) {
      problems.push(`TTL header must be a non-negative integer (RFC 8030 §5.2), got ${JSON.stringify(headers.ttl)}`);
    }
    if (headers.urgency !== undefined && !URGENCIES.includes(headers.urgency)) {
      problems.push(`Urgency must be one of ${URGENCIES.join('|')} (RFC 8030 §5.3), got ${JSON.stringify(headers.urgency)}`);
    }
    if (headers.topic !== undefined && !(headers.topic.length <= 32 && B64URL.test(headers.topic))) {
      problems.push(`Topic must be 1..32 chars of base64url (RFC 8030 §5.4), got ${JSON.stringify(headers.topic)}`);
    }

    const vapid = checkVapid(h.authorization, problems);
    const payload = decryptBody(body, sub, problems);

    if (problems.length) return { status: 400, problems };
    if (e.status >= 200 && e.status < 300) {
      const msg = { payload, headers, vapid, receivedAt: arrivedAt };
      const waiter = e.waiters.shift();
      if (waiter) waiter.resolve(msg);
      else e.queue.push(msg);
    }
    return { status: e.status, problems };
  }

  /** RFC 8292: `Authorization: vapid t=<JWT>, k=<P-256 public key>`, ES256-signed, aud/exp/sub. */
  function checkVapid(authorization, problems) {
    const fail = (why) => {
      problems.push(`VAPID: ${why}`);
      return undefined;
    };
    if (authorization === undefined) return fail('no Authorization header');
    const m = /^vapid\s+(.*)$/is.exec(authorization.trim());
    if (!m) return fail(`Authorization must use the vapid scheme (RFC 8292 §3), got ${JSON.stringify(authorization)}`);
    const params = {};
    for (const part of m[1].split(',')) {
      const p = /^\s*([A-Za-z]+)\s*=\s*(\S+)\s*$/.exec(part);
      if (!p || p[1].toLowerCase() in params) return fail(`malformed Authorization parameters ${JSON.stringify(m[1])}`);
      params[p[1].toLowerCase()] = p[2];
    }
    const { t: jwt, k } = params;
    if (!jwt || !k) return fail(`Authorization needs both t= and k=, got ${JSON.stringify(m[1])}`);

    if (!B64URL.test(k)) return fail(`k is not base64url: ${JSON.stringify(k)}`);
    const point = Buffer.from(k, 'base64url');
    if (point.length !== 65 || point[0] !== 4) return fail(`k must be a 65-byte uncompressed P-256 point, got ${point.length} bytes`);
    let key;
    try {
      key = createPublicKey({
        key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33, 65).toString('base64url') },
        format: 'jwk',
      });
    } catch (err) {
      return fail(`k is not a P-256 point: ${err.message}`);
    }

    const parts = jwt.split('.');
    if (parts.length !== 3 || !parts.every((s) => B64URL.test(s))) return fail(`t is not a compact JWT: ${JSON.stringify(jwt)}`);
    let header;
    let claims;
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    } catch (err) {
      return fail(`JWT header or claims are not JSON: ${err.message}`);
    }
    if (header?.typ !== 'JWT' || header?.alg !== 'ES256') fail(`JWT header must be {typ: JWT, alg: ES256}, got ${JSON.stringify(header)}`);
    const sig = Buffer.from(parts[2], 'base64url');
    if (sig.length !== 64) {
      fail(`JWT signature must be 64 bytes (raw r||s), got ${sig.length}`);
    } else if (!verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key, dsaEncoding: 'ieee-p1363' }, sig)) {
      fail('JWT signature does not verify against k');
    }
    const { sub, aud, exp } = claims ?? {};
    if (aud !== receiver.url) fail(`aud must be the endpoint's origin ${receiver.url}, got ${JSON.stringify(aud)}`);
    const now = Date.now() / 1000;
    if (typeof exp !== 'number' || !(exp > now)) fail(`exp must be a time in the future, got ${JSON.stringify(exp)} (now ${Math.floor(now)})`);
    else if (exp > now + DAY_S) fail(`exp must be at most 24 h ahead (RFC 8292 §2), got ${Math.round(exp - now)} s ahead`);
    if (typeof sub !== 'string' || !/^(mailto:.+|https:\/\/.+)$/.test(sub)) fail(`sub must be a mailto: or https: URL, got ${JSON.stringify(sub)}`);
    return { sub, aud, exp, publicKey: k };
  }

  /** RFC 8291: one aes128gcm record, keyed to this subscription, whose plaintext is JSON. */
  function decryptBody(body, sub, problems) {
    const fail = (why) => {
      problems.push(`body: ${why}`);
      return undefined;
    };
    if (body.length > MAX_BODY) return fail(`${body.length} bytes, more than the ${MAX_BODY} a push service must take (RFC 8030 §7.2)`);
    if (body.length <= AES128GCM_HEADER + 16) return fail(`${body.length} bytes is too short for an aes128gcm push`);
    const rs = body.readUInt32BE(16);
    const idlen = body[20];
    if (idlen !== 65 || body[21] !== 4) return fail(`keyid must be the sender's 65-byte uncompressed public key (RFC 8291 §4), got ${idlen} bytes`);
    if (body.length - AES128GCM_HEADER > rs) return fail(`must be a single record (RFC 8291 §4): ${body.length - AES128GCM_HEADER} bytes with rs ${rs}`);
    let plain;
    try {
      plain = ece.decrypt(body, { version: 'aes128gcm', privateKey: sub.ecdh, authSecret: sub.auth });
    } catch (err) {
      return fail(`does not decrypt with this subscription's keys: ${err.message}`);
    }
    try {
      return JSON.parse(plain.toString('utf8'));
    } catch (err) {
      return fail(`decrypted body is not JSON: ${err.message}: ${JSON.stringify(plain.toString('utf8').slice(0, 200))}`);
    }
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address();

  const receiver = {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    errors,

    /** A new subscription for `name`, in the shape of PushSubscription.toJSON(). */
    subscribe(name) {
      const id = `${encodeURIComponent(name)}-${randomBytes(6).toString('hex')}`;
      const ecdh = createECDH('prime256v1');
      ecdh.generateKeys();
      const auth = randomBytes(16);
      endpoints.set(id, { name, ecdh, auth });
      entry(name);
      return {
        endpoint: `${receiver.url}/push/${id}`,
        expirationTime: null,
        keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: auth.toString('base64url') },
      };
    },

    /** The next push accepted for `name` (already queued, or still to come); rejects after `timeoutMs`. */
    next(name, timeoutMs = 5000) {
      const e = entry(name);
      if (e.queue.length) return Promise.resolve(e.queue.shift());
      return new Promise((resolve, reject) => {
        const waiter = {
          resolve: (msg) => {
            clearTimeout(waiter.timer);
            resolve(msg);
          },
          reject: (err) => {
            clearTimeout(waiter.timer);
            reject(err);
          },
        };
        waiter.timer = setTimeout(() => {
          e.waiters.splice(e.waiters.indexOf(waiter), 1);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for a push to "${name}" `
            + `(${e.count} POSTs arrived for it; receiver errors: ${JSON.stringify(errors)})`));
        }, timeoutMs);
        e.waiters.push(waiter);
      });
    },

    /** From now on answer pushes to `name` with `status` (e.g. 410) instead of 201. */
    respond(name, status) {
      entry(name).status = status;
    },

    /** How many POSTs arrived for `name`, whatever the answer. */
    count(name) {
      return byName.get(name)?.count ?? 0;
    },

    close() {
      for (const e of byName.values()) {
        for (const w of e.waiters.splice(0)) w.reject(new Error('push receiver closed'));
      }
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections(); // the sender's keep-alive connections would hold close() open
      });
    },
  };
  return receiver;
}
