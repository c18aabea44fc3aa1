/* signalbox intercom page.
 *
 * Plain JavaScript, no libraries: a small Socket.IO v4 client (Engine.IO 4 /
 * Socket.IO 5 framing, with connection state recovery) that starts on
 * long-polling and upgrades to WebSocket when it can, as socket.io-client
 * does by default, so that a proxy that strips Upgrade leaves a working page,
 * the signalbox call flow, and a WebRTC call with trickle ICE: audio, and
 * video where the device has a camera (with a button that turns it off).
 *
 * A call rides out a lost connection: the page keeps the call while it
 * reconnects (recovering its socket, or registering again), the server holds
 * it for its reconnect grace, and once back the page restarts ICE through
 * call_update, since the network path may have changed.
 *
 * With tokens required (--auth-secret-file), the page joins with
 * auth {token}, as socket.io-client does: the token comes from the link
 * (/app/#token=… or ?token=…), from this browser's storage, or from the
 * Access token field shown when the server refuses the page.
 *
 * With a directory, the server tells the page every door station's doors:
 * a call with one shows its picture large and an Open door button per door.
 *
 * At /app/door the page is a door panel (meta signalbox-mode "door"): it
 * registers as the door station named by its token (or ?user=), offers big
 * buttons for whom the directory lets it call, and nothing to type.
 *
 * For tests: window.signalbox = { pc, state, me, connection } (read-only
 * views of the page's live state), and stable ids / data-testid attributes
 * on the controls.
 */
(() => {
  'use strict';

  // The server's rule for user names (README, "Rules").
  const NAME_RE = /^[A-Za-z0-9_.@-]{1,64}$/;
  const USERS_POLL_MS = 2000;
  const STORAGE_KEY = 'signalbox.name';
  const TOKEN_KEY = 'signalbox.token';
  const TOKEN_PROMPT = 'Enter your access token to use this intercom.';
  // How long the server holds a call for a party that lost its connection.
  const RECONNECT_GRACE_MS = (() => {
    const meta = document.querySelector('meta[name="signalbox-reconnect-grace"]');
    const ms = Number(meta && meta.content);
    return Number.isFinite(ms) && ms >= 0 ? ms : 10000;
  })();

  // "resident" at /app/, "door" at /app/door (a door panel).
  const MODE = (() => {
    const meta = document.querySelector('meta[name="signalbox-mode"]');
    return meta && meta.content === 'door' ? 'door' : 'resident';
  })();
  const PANEL = MODE === 'door';
  // How long a door panel shows "The door is open".
  const DOOR_OPEN_MS = 10000;

  // The page is served at <server>/app/, so the server root is "../".
  const serverRoot = new URL('../', window.location.href);

  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $('connection'),
    connectionText: $('connection-text'),
    registerForm: $('register-form'),
    name: $('name'),
    register: $('register'),
    nameHint: $('name-hint'),
    nameError: $('name-error'),
    whoami: $('whoami'),
    myName: $('my-name'),
    logout: $('logout'),
    tokenForm: $('token-form'),
    token: $('token'),
    tokenError: $('token-error'),
    kicked: $('kicked'),
    kickedText: $('kicked-text'),
    reconnect: $('reconnect'),
    callPanel: $('call-panel'),
    status: $('status'),
    timer: $('call-timer'),
    micError: $('mic-error'),
    answer: $('answer'),
    decline: $('decline'),
    hangup: $('hangup'),
    usersPanel: $('users-panel'),
    meHeading: $('me-heading'),
    users: $('users'),
    usersEmpty: $('users-empty'),
    usersError: $('users-error'),
    dialForm: $('dial-form'),
    dialName: $('dial-name'),
    dial: $('dial'),
    dialError: $('dial-error'),
    audio: $('remote-audio'),
    media: $('media'),
    remoteVideo: $('remote-video'),
    localVideo: $('local-video'),
    camera: $('camera'),
    doors: $('doors'),
    doorStatus: $('door-status'),
    doorPanel: $('door-panel'),
    targets: $('targets'),
    targetsEmpty: $('targets-empty'),
    doorOpen: $('door-open'),
  };

  // ---------------------------------------------------------------------
  // One Engine.IO session: long-polling, upgraded to WebSocket.
  // ---------------------------------------------------------------------

  // Packets in a long-polling payload are separated by this (Engine.IO 4).
  const RECORD_SEPARATOR = '\x1e';

  /**
   * An Engine.IO session over long-polling first; once open, a WebSocket
   * is probed (`2probe` / `3probe`) and, when it answers, the session
   * moves to it (`5`). A WebSocket that cannot open (a proxy stripping
   * Upgrade, a network that blocks it) leaves the session on polling.
   * `onPacket(text)` gets each Engine.IO packet; `onClose(reason)` once.
   */
  class EngineConnection {
    constructor(base, onPacket, onClose) {
      this.base = base; // .../socket.io/?EIO=4
      this.onPacket = onPacket;
      this.onClose = onClose;
      this.sid = null;
      this.transport = 'polling';
      this.ws = null; // after the upgrade
      this.probing = null; // the WebSocket being probed
      this.closed = false;
      this.outbox = []; // packets for the next POST
      this.posting = false;
      this.polling = null; // the GET in flight: its AbortController
      this.paused = false; // upgrading: no new GET or POST
      this.onIdle = null; // called once neither a GET nor a POST is in flight
      this.poll();
    }

    get open() {
      return !this.closed && this.sid !== null;
    }

    url(transport) {
      const url = new URL(this.base);
      url.searchParams.set('transport', transport);
      if (this.sid) url.searchParams.set('sid', this.sid);
      if (transport === 'websocket') url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      return url.href;
    }

    async poll() {
      while (!this.closed && this.transport === 'polling' && !this.paused) {
        const controller = new AbortController();
        this.polling = controller;
        let text;
        try {
          const res = await fetch(this.url('polling'), { cache: 'no-store', signal: controller.signal });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          text = await res.text();
        } catch (_) {
          this.polling = null;
          this.fail('transport error');
          return;
        }
        this.polling = null;
        if (this.closed) return;
        for (const packet of text.split(RECORD_SEPARATOR)) this.receive(packet);
      }
      this.idle();
    }

    receive(packet) {
      if (this.closed || !packet || packet === '6') return; // '6': noop
      if (packet[0] === '0' && this.sid === null) {
        let upgrades = [];
        try {
          const handshake = JSON.parse(packet.slice(1));
          this.sid = typeof handshake.sid === 'string' ? handshake.sid : null;
          upgrades = Array.isArray(handshake.upgrades) ? handshake.upgrades : [];
        } catch (_) { /* no sid: fails below */ }
        if (this.sid === null) {
          this.fail('transport error');
          return;
        }
        this.onPacket(packet);
        if (upgrades.includes('websocket') && typeof WebSocket === 'function') this.probe();
        this.flush();
        return;
      }
      this.onPacket(packet);
    }

    send(packet) {
      if (this.closed) return false;
      if (this.transport === 'websocket') {
        this.ws.send(packet);
      } else {
        this.outbox.push(packet);
        this.flush();
      }
      return true;
    }

    async flush() {
      if (this.posting || this.paused || this.sid === null || this.outbox.length === 0) return;
      this.posting = true;
      const body = this.outbox.splice(0).join(RECORD_SEPARATOR);
      try {
        const res = await fetch(this.url('polling'), {
          method: 'POST', body, cache: 'no-store', headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
        });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
      } catch (_) {
        this.posting = false;
        this.fail('transport error');
        return;
      }
      this.posting = false;
      if (this.paused) this.idle();
      else this.flush();
    }

    /** Tries the WebSocket; the session moves there once it answers the probe. */
    probe() {
      let ws;
      try {
        ws = new WebSocket(this.url('websocket'));
      } catch (_) {
        return;
      }
      this.probing = ws;
      const giveUp = () => {
        ws.onopen = null;
        ws.onmessage = null;
        ws.onclose = null;
        ws.onerror = null;
        try { ws.close(); } catch (_) { /* not open */ }
        if (this.probing === ws) this.probing = null;
        if (this.paused && !this.closed) {
          this.paused = false;
          this.onIdle = null;
          this.poll();
          this.flush();
        }
      };
      ws.onopen = () => ws.send('2probe');
      ws.onerror = giveUp;
      ws.onclose = giveUp;
      ws.onmessage = (e) => {
        if (e.data !== '3probe' || this.closed) {
          giveUp();
          return;
        }
        // The server answers the GET in flight (a noop); once that and any
        // POST are done, everything goes over the WebSocket.
        this.paused = true;
        this.onIdle = () => {
          if (this.closed || this.probing !== ws) return;
          this.probing = null;
          this.ws = ws;
          this.transport = 'websocket';
          ws.onmessage = (ev) => { if (typeof ev.data === 'string') this.receive(ev.data); };
          ws.onclose = () => this.fail('transport close');
          ws.onerror = () => { /* a close event follows */ };
          ws.send('5');
          for (const packet of this.outbox.splice(0)) ws.send(packet);
          this.paused = false;
        };
        this.idle();
      };
    }

    idle() {
      if (!this.paused || this.polling || this.posting || !this.onIdle) return;
      const then = this.onIdle;
      this.onIdle = null;
      then();
    }

    /** Closes the session; what was queued still goes out (a leaving page). */
    close() {
      if (this.closed) return;
      this.closed = true;
      if (this.transport === 'polling' && this.sid !== null) {
        const body = [...this.outbox.splice(0), '1'].join(RECORD_SEPARATOR);
        fetch(this.url('polling'), { method: 'POST', body, keepalive: true }).catch(() => {});
      }
      this.shut();
    }

    fail(reason) {
      if (this.closed) return;
      this.closed = true;
      this.shut();
      this.onClose(reason);
    }

    shut() {
      if (this.polling) this.polling.abort();
      for (const ws of [this.ws, this.probing]) {
        if (!ws) continue;
        ws.onopen = null;
        ws.onmessage = null;
        ws.onclose = null;
        ws.onerror = null;
        try { ws.close(); } catch (_) { /* already closed */ }
      }
      this.probing = null;
    }
  }

  // ---------------------------------------------------------------------
  // A small Socket.IO client, namespace "/".
  // ---------------------------------------------------------------------

  class SignalSocket {
    /**
     * @param {string} url  http(s)://host/socket.io/?EIO=4
     * @param {{onConnect: Function, onConnectError: Function, onDisconnect: Function,
     *   onEvent: Function, onStatus: Function, auth: Function}} handlers
     */
    constructor(url, handlers) {
      this.url = url;
      this.handlers = handlers;
      this.conn = null; // the EngineConnection
      this.connected = false; // joined the "/" namespace
      this.attempt = 0;
      this.retryTimer = 0;
      this.watchdog = 0;
      this.pingDeadlineMs = 45000;
      this.acks = new Map();
      this.nextAckId = 0;
      this.stopped = false;
      // Connection state recovery: the socket's id and private id from the
      // last CONNECT answer, and the last offset seen (--recovery-offsets).
      this.sid = null;
      this.pid = null;
      this.offset = null;
    }

    start() {
      this.stopped = false;
      if (!this.conn && !this.retryTimer) this.open();
    }

    /** Reconnects at once (after a forced disconnect, or when back online). */
    reconnectNow() {
      this.stopped = false;
      this.attempt = 0;
      clearTimeout(this.retryTimer);
      this.retryTimer = 0;
      if (!this.conn) this.open();
    }

    /** Drops the connection now (the browser went offline) and reconnects later. */
    interrupt() {
      if (this.conn) this.drop(this.conn, 'transport close');
    }

    /** Leaves on purpose (the page is going away): a Socket.IO DISCONNECT,
     * so that the server ends our call at once instead of holding it. */
    leave() {
      if (this.conn && this.connected && this.conn.open) {
        try { this.conn.send('41'); } catch (_) { /* closing anyway */ }
      }
      this.pid = null;
      this.stop();
    }

    /** Stops for good: no reconnect until reconnectNow(). */
    stop() {
      this.stopped = true;
      clearTimeout(this.retryTimer);
      this.retryTimer = 0;
      if (this.conn) this.drop(this.conn, 'client stop');
    }

    open() {
      this.retryTimer = 0;
      this.handlers.onStatus('connecting');
      const conn = new EngineConnection(this.url,
        (packet) => this.onFrame(conn, packet),
        (reason) => this.drop(conn, reason));
      this.conn = conn;
      // The open packet must come soon; a silent connection is a dead one.
      this.arm(conn, 10000);
    }

    /** The transport in use now: 'polling' or 'websocket' (for tests). */
    get transport() {
      return this.conn && this.conn.open ? this.conn.transport : null;
    }

    arm(conn, ms) {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => this.drop(conn, 'ping timeout'), ms);
    }

    onFrame(conn, data) {
      if (conn !== this.conn || typeof data !== 'string' || data.length === 0) return;
      switch (data[0]) {
        case '0': { // Engine.IO open
          let handshake = {};
          try { handshake = JSON.parse(data.slice(1)); } catch (_) { /* keep defaults */ }
          if (handshake.pingInterval && handshake.pingTimeout) {
            this.pingDeadlineMs = handshake.pingInterval + handshake.pingTimeout;
          }
          this.arm(conn, this.pingDeadlineMs);
          // Join the default namespace, with the auth payload if any, and
          // the private id that recovers the last socket.
          const auth = { ...(this.handlers.auth() || {}) };
          if (this.pid) {
            auth.pid = this.pid;
            if (this.offset) auth.offset = this.offset;
          }
          conn.send(Object.keys(auth).length ? `40${JSON.stringify(auth)}` : '40');
          break;
        }
        case '1': // Engine.IO close
          this.drop(conn, 'transport close');
          break;
        case '2': // ping
          conn.send('3');
          this.arm(conn, this.pingDeadlineMs);
          break;
        case '4':
          this.onPacket(conn, data.slice(1));
          break;
        default: // '6' noop, anything else: ignore
          break;
      }
    }

    onPacket(conn, packet) {
      const type = packet[0];
      let i = 1;
      if (packet[i] === '/') { // another namespace than "/": not ours
        return;
      }
      let id = '';
      while (i < packet.length && packet[i] >= '0' && packet[i] <= '9') id += packet[i++];
      let payload;
      if (i < packet.length) {
        try { payload = JSON.parse(packet.slice(i)); } catch (err) {
          console.warn('signalbox: malformed packet', packet);
          return;
        }
      }
      switch (type) {
        case '0': { // CONNECT
          const sid = payload && payload.sid;
          const recovered = Boolean(this.pid) && payload.pid === this.pid && sid === this.sid;
          this.sid = sid;
          this.pid = (payload && typeof payload.pid === 'string') ? payload.pid : null;
          if (!recovered) this.offset = null;
          this.connected = true;
          this.attempt = 0;
          this.handlers.onConnect(sid, recovered);
          break;
        }
        case '1': // DISCONNECT by the server: it does not want us back
          this.stopped = true;
          this.pid = null;
          this.drop(conn, 'io server disconnect');
          break;
        case '2': { // EVENT
          if (!Array.isArray(payload) || typeof payload[0] !== 'string') return;
          // With offsets, each event ends with one (a string after the payload).
          if (this.pid && payload.length > 2 && typeof payload[payload.length - 1] === 'string') {
            this.offset = payload[payload.length - 1];
          }
          // An ack only for an event this page acts on, as a socket.io
          // client without a handler for it sends none.
          if (this.handlers.onEvent(payload[0], payload[1]) && id !== '') conn.send(`43${id}[]`);
          break;
        }
        case '3': { // ACK
          const callback = this.acks.get(Number(id));
          this.acks.delete(Number(id));
          if (callback) callback(...(Array.isArray(payload) ? payload : []));
          break;
        }
        case '4': { // CONNECT_ERROR
          console.warn('signalbox: connect error', payload);
          const message = payload && typeof payload.message === 'string' ? payload.message : '';
          // false: retrying would be refused again (a missing or bad token).
          if (this.handlers.onConnectError(message) === false) this.stopped = true;
          this.drop(conn, 'connect error');
          break;
        }
        default:
          break;
      }
    }

    /**
     * Sends an event; with `ack`, the server's answer ({ok, error}) is passed
     * to it (also {ok:false} when the connection drops first).
     * @returns {boolean} whether it was sent
     */
    emit(name, data, ack) {
      if (!this.connected || !this.conn || !this.conn.open) {
        if (ack) ack({ ok: false, error: 'not connected to the server' });
        return false;
      }
      let id = '';
      if (ack) {
        id = String(this.nextAckId++);
        this.acks.set(Number(id), ack);
      }
      this.conn.send(`42${id}${JSON.stringify([name, data])}`);
      return true;
    }

    drop(conn, reason) {
      if (conn !== this.conn) return;
      this.conn = null;
      clearTimeout(this.watchdog);
      conn.close();
      const wasConnected = this.connected;
      this.connected = false;
      const pending = [...this.acks.values()];
      this.acks.clear();
      for (const callback of pending) callback({ ok: false, error: 'disconnected' });
      this.handlers.onDisconnect(reason, wasConnected);
      if (!this.stopped) this.scheduleRetry();
    }

    scheduleRetry() {
      clearTimeout(this.retryTimer);
      const base = Math.min(10000, 500 * 2 ** this.attempt);
      const delay = Math.round(base * (0.75 + Math.random() * 0.5));
      this.attempt += 1;
      this.retryTimer = setTimeout(() => this.open(), delay);
      this.handlers.onStatus('waiting', delay);
    }
  }

  // ---------------------------------------------------------------------
  // Page state
  // ---------------------------------------------------------------------

  const app = {
    me: null, // the registered name
    wanted: null, // a name to register once connected
    iceServers: [],
    state: 'connecting', // see setState()
    connection: 'connecting', // connecting | online | offline | kicked
    call: null, // the current call, see newCall()
    kickedName: null,
    token: '', // sent as auth {token} when joining
    tokenNeeded: false, // the server refused the page for its token
    refusal: '', // the server's last CONNECT_ERROR message
    recovered: 0, // times the socket was recovered (for tests)
    iceRestarts: 0, // ICE restarts this page started (for tests)
    stations: new Map(), // door station -> its doors (the directory event)
    targets: null, // {groups, users} this page may call, from the directory
    doorOpenTimer: 0, // hides "The door is open" (door panel)
  };

  window.signalbox = Object.freeze({
    get pc() { return (app.call && app.call.pc) || null; },
    get state() { return app.state; },
    get me() { return app.me; },
    get connection() { return app.connection; },
    get recovered() { return app.recovered; },
    get peerAway() { return Boolean(app.call && app.call.peerAway); },
    get iceRestarts() { return app.iceRestarts; },
    get transport() { return socket.transport; },
    get mode() { return MODE; },
    get doorOpen() { return !ui.doorOpen.hidden; },
  });

  const engineUrl = (() => {
    // The server writes its Socket.IO path (--path) into this page.
    const meta = document.querySelector('meta[name="signalbox-path"]');
    const path = ((meta && meta.content) || '/socket.io/').replace(/^\/+/, '');
    const url = new URL(path, serverRoot);
    url.search = '?EIO=4';
    return url.href;
  })();

  const socket = new SignalSocket(engineUrl, {
    onConnect: onSocketConnect,
    onConnectError: onSocketConnectError,
    onDisconnect: onSocketDisconnect,
    onEvent: onServerEvent,
    onStatus: onSocketStatus,
    auth: () => (app.token ? { token: app.token } : null),
  });

  // ---------------------------------------------------------------------
  // Rendering
  // ---------------------------------------------------------------------

  /**
   * Machine states: connecting, unregistered, registering, idle, calling,
   * ringing, answering, in-call, kicked.
   */
  function setState(state, message) {
    app.state = state;
    if (message !== undefined) setStatus(message);
    render();
  }

  function setStatus(message) {
    if (ui.status.textContent !== message) ui.status.textContent = message;
  }

  function show(el, visible) {
    el.hidden = !visible;
  }

  function render() {
    const { state, call } = app;
    ui.callPanel.dataset.state = state;
    document.body.dataset.state = state;

    const registered = Boolean(app.me);
    const kicked = app.connection === 'kicked';
    show(ui.registerForm, !registered && !kicked && !PANEL);
    show(ui.nameHint, !registered && !kicked && !PANEL);
    show(ui.whoami, registered);
    show(ui.logout, !PANEL);
    ui.myName.textContent = app.me || '';
    show(ui.kicked, kicked);
    // A door panel has nothing a visitor could type into or press to
    // change it: its token comes with its address, and a refusal is for
    // the installer.
    show(ui.tokenForm, app.tokenNeeded && !kicked && app.connection !== 'online' && !PANEL);
    show(ui.reconnect, !PANEL);
    ui.register.disabled = state === 'registering';

    show(ui.answer, state === 'ringing');
    show(ui.decline, state === 'ringing' || state === 'answering');
    show(ui.hangup, state === 'calling' || state === 'in-call');
    ui.answer.disabled = false;
    ui.hangup.textContent = state === 'calling' ? 'Cancel call' : 'Hang up';

    const canCall = registered && state === 'idle' && app.connection === 'online';
    for (const li of ui.users.children) {
      const button = li.querySelector('button');
      button.disabled = !canCall;
      const peer = li.dataset.user;
      if (call && call.peer === peer) {
        li.dataset.with = state === 'in-call' ? 'in-call' : call.role === 'callee' ? 'calling-you' : 'calling';
      } else {
        delete li.dataset.with;
      }
    }
    ui.dial.disabled = !canCall;
    ui.dialName.disabled = !registered || kicked;
    for (const button of ui.targets.querySelectorAll('button')) button.disabled = !canCall;
    show(ui.doorPanel, PANEL && registered && state === 'idle');
    show(ui.usersPanel, !PANEL);
    renderMedia();

    renderTimer();
    document.title = state === 'ringing' && call ? `Ringing: ${call.peer} is calling you` : 'signalbox intercom';
  }

  /** The call's video, the camera button, and a door station's doors. */
  function renderMedia() {
    const { state, call } = app;
    const live = Boolean(call) && ['calling', 'ringing', 'answering', 'in-call'].includes(state);
    const camera = live && call.stream ? call.stream.getVideoTracks()[0] : null;
    show(ui.media, live && (Boolean(camera) || call.remoteVideo));
    ui.media.dataset.remote = live && call.remoteVideo ? 'video' : 'none';
    show(ui.camera, Boolean(camera) && state !== 'ringing' && !PANEL);
    if (camera) {
      ui.camera.textContent = camera.enabled ? 'Camera off' : 'Camera on';
      ui.camera.setAttribute('aria-pressed', camera.enabled ? 'false' : 'true');
    }
    const station = live ? stationOf(call) : null;
    ui.callPanel.dataset.door = station ? 'true' : 'false';
    const doors = station && state !== 'calling' ? app.stations.get(station) : [];
    if (ui.doors.dataset.for !== `${station}:${doors.join(',')}`) {
      ui.doors.dataset.for = `${station}:${doors.join(',')}`;
      ui.doors.replaceChildren(...doors.map((door) => {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'btn big accept open-door';
        button.textContent = doors.length === 1 ? 'Open door' : `Open door: ${door}`;
        button.dataset.testid = `open-door-${door}`;
        button.addEventListener('click', () => openDoor(station, door));
        return button;
      }));
    }
    show(ui.doors, doors.length > 0);
    if (!live) showError(ui.doorStatus, null);
  }

  /** The door station the call is with, by any name it goes by; or null. */
  function stationOf(call) {
    if (app.stations.has(call.peer)) return call.peer;
    return [...call.names].find((n) => app.stations.has(n)) || null;
  }

  function renderTimer() {
    const call = app.call;
    if (app.state === 'in-call' && call && call.startedAt) {
      const seconds = Math.floor((performance.now() - call.startedAt) / 1000);
      ui.timer.textContent = ` — ${formatDuration(seconds)}`;
      show(ui.timer, true);
    } else {
      show(ui.timer, false);
      ui.timer.textContent = '';
    }
  }

  function formatDuration(total) {
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const two = (n) => String(n).padStart(2, '0');
    return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
  }

  function showError(el, message) {
    el.textContent = message || '';
    show(el, Boolean(message));
  }

  function idleState() {
    if (app.connection === 'kicked') return 'kicked';
    if (app.me) return 'idle';
    if (app.wanted) return 'registering';
    return 'unregistered';
  }

  // ---------------------------------------------------------------------
  // Connection
  // ---------------------------------------------------------------------

  function setConnection(connection, text) {
    app.connection = connection;
    ui.connection.dataset.state = connection;
    ui.connectionText.textContent = text;
  }

  function onSocketStatus(kind, detail) {
    if (app.connection === 'kicked') return;
    if (kind === 'connecting') {
      app.refusal = '';
      setConnection('connecting', app.connection === 'offline' ? 'Reconnecting…' : 'Connecting…');
    } else if (kind === 'waiting') {
      const seconds = Math.max(1, Math.round(detail / 1000));
      setConnection('offline', app.refusal
        ? `Server refused the connection (${app.refusal}), retrying in ${seconds} s…`
        : `Offline, reconnecting in ${seconds} s…`);
    }
    render();
  }

  /** The server refused to let the page join; false stops the retries. */
  function onSocketConnectError(message) {
    app.refusal = message || 'no reason given';
    const words = tokenProblem(message);
    if (words === null) return true;
    app.tokenNeeded = true;
    if (PANEL) {
      // Kept, and tried again: the installer may put the secret back.
      setConnection('offline', 'This door panel\u2019s access token was refused');
      setStatus(`Out of service: the installer must give this panel a new access token (the server said: \u201c${message}\u201d).`);
      render();
      return true;
    }
    if (message.startsWith('authentication failed')) forgetToken();
    setConnection('offline', message.startsWith('authentication required') ? 'Needs an access token' : 'Access token refused');
    showError(ui.tokenError, `${words} (The server said: “${message}”.)`);
    ui.token.setAttribute('aria-invalid', 'true');
    setStatus(TOKEN_PROMPT);
    render();
    const active = document.activeElement;
    if (!active || active === document.body) ui.token.focus();
    return false;
  }

  /** Explains a refusal about the token in words, or returns null. */
  function tokenProblem(message) {
    switch (message) {
      case 'authentication failed: token expired':
        return 'This access token has expired. Ask whoever runs the intercom for a new one.';
      case 'authentication failed: invalid token signature':
        return 'This access token was not made for this intercom, or it was changed. '
          + 'Check that it was copied whole, or ask for a new one.';
      case 'authentication failed: malformed token':
        return 'This is not an access token. Check that it was copied whole.';
      default:
        if (message.startsWith('authentication required')) {
          return 'This intercom needs an access token. Enter the token you were given.';
        }
        if (message.startsWith('authentication failed')) return 'The access token was refused.';
        return null;
    }
  }

  function onSocketConnect(sid, recovered) {
    app.refusal = '';
    if (recovered) app.recovered += 1;
    const wasRefused = app.tokenNeeded;
    if (wasRefused) {
      app.tokenNeeded = false;
      showError(ui.tokenError, null);
      ui.token.setAttribute('aria-invalid', 'false');
      // The token form is about to hide: keep keyboard users in place.
      if (ui.tokenForm.contains(document.activeElement)) ui.name.focus();
    }
    if (app.token) rememberToken(app.token);
    setConnection('online', 'Online');
    const name = app.wanted || app.me;
    if (name) {
      sendRegister(name);
    } else if (wasRefused || app.state === 'connecting' || app.state === 'registering') {
      setState('unregistered', 'Choose a name and press Register.');
    }
    render();
  }

  function onSocketDisconnect(reason) {
    const call = app.call;
    if (app.me && !app.wanted) app.wanted = app.me; // register again when back
    if (app.connection !== 'kicked' && reason !== 'connect error') {
      setConnection('offline', reason === 'io server disconnect' ? 'Disconnected by the server' : 'Reconnecting…');
    }
    if (call && reason !== 'io server disconnect' && reason !== 'connect error' && app.connection !== 'kicked') {
      // The server holds the call for its grace: keep it while we come back.
      holdCall(call);
    } else if (call) {
      finishCall(call, 'Lost the connection to the server. Call ended.', { notify: false });
    } else if (app.connection !== 'kicked') {
      const lost = app.tokenNeeded ? TOKEN_PROMPT : 'Connection to the server lost. Reconnecting…';
      setState(app.me ? app.state : idleState(), app.me ? lost : undefined);
    }
    render();
  }

  // ---------------------------------------------------------------------
  // Access token
  // ---------------------------------------------------------------------

  /** Uses `token` from now on; its user name fills the name field. */
  function setToken(token) {
    app.token = token;
    ui.token.value = token;
    const user = tokenUser(token);
    if (user && !app.me && !app.wanted) ui.name.value = user;
  }

  /** The user name inside a token (base64url before the first dot), or null. */
  function tokenUser(token) {
    try {
      const part = token.split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
      const user = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      return NAME_RE.test(user) ? user : null;
    } catch (_) {
      return null;
    }
  }

  /** A token in the link (#token=… or ?token=…), taken out of the address bar. */
  function tokenFromLink() {
    const url = new URL(window.location.href);
    const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
    if (!fragment.has('token') && !url.searchParams.has('token')) return '';
    const token = (fragment.get('token') || url.searchParams.get('token') || '').trim();
    // Not left in history, bookmarks or a shared screenshot.
    fragment.delete('token');
    url.searchParams.delete('token');
    const rest = fragment.toString();
    url.hash = rest ? `#${rest}` : '';
    try { history.replaceState(history.state, '', url.href); } catch (_) { /* keep the URL */ }
    return token;
  }

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }

  function rememberToken(token) {
    try { localStorage.setItem(TOKEN_KEY, token); } catch (_) { /* private mode */ }
  }

  function forgetToken() {
    try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* private mode */ }
  }

  ui.tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const token = ui.token.value.trim();
    if (!token) {
      showError(ui.tokenError, 'Enter the access token you were given.');
      ui.token.setAttribute('aria-invalid', 'true');
      ui.token.focus();
      return;
    }
    setToken(token);
    showError(ui.tokenError, null);
    ui.token.setAttribute('aria-invalid', 'false');
    setConnection('connecting', 'Connecting…');
    socket.reconnectNow();
  });

  window.addEventListener('online', () => { if (app.connection === 'offline') socket.reconnectNow(); });
  // The network is gone: so is the connection, whatever the socket thinks.
  window.addEventListener('offline', () => socket.interrupt());

  // ---------------------------------------------------------------------
  // Registration
  // ---------------------------------------------------------------------

  /** Explains why `name` breaks the server's rule, or returns null. */
  function nameProblem(name, what) {
    if (name.length === 0) return `Enter ${what}.`;
    if (name.length > 64) return `A name can be at most 64 characters (this one has ${name.length}).`;
    if (!NAME_RE.test(name)) {
      const bad = [...new Set([...name].filter((c) => !/[A-Za-z0-9_.@-]/.test(c)))]
        .map((c) => (c === ' ' ? 'spaces' : `“${c}”`));
      return `A name can only use letters A–Z, digits and _ - . @ (not ${bad.join(', ')}).`;
    }
    return null;
  }

  function sendRegister(name) {
    app.wanted = name;
    if (!app.call) setState(app.me ? app.state : 'registering', app.me ? undefined : `Registering as ${name}…`);
    socket.emit('register_user', { userId: name });
  }

  ui.registerForm.addEventListener('submit', (e) => {
    e.preventDefault();
    unlockAudio();
    const name = ui.name.value.trim();
    const problem = nameProblem(name, 'a name');
    showError(ui.nameError, problem);
    ui.name.setAttribute('aria-invalid', problem ? 'true' : 'false');
    if (problem) {
      ui.name.focus();
      return;
    }
    app.wanted = name;
    if (app.connection === 'online') {
      sendRegister(name);
    } else if (app.tokenNeeded && !ui.token.value.trim()) {
      setState('registering', `Enter your access token to register as ${name}.`);
      ui.token.focus();
    } else {
      if (app.tokenNeeded) setToken(ui.token.value.trim());
      setState('registering', `Waiting for the server to register ${name}…`);
      socket.reconnectNow();
    }
  });

  function onUserRegistered({ success, userId, error }) {
    if (success && app.call && app.call.away) {
      app.me = userId;
      app.wanted = null;
      resumeCall(app.call);
      render();
      return;
    }
    if (success) {
      const fresh = app.me !== userId;
      app.me = userId;
      app.wanted = null;
      showError(ui.nameError, null);
      ui.name.setAttribute('aria-invalid', 'false');
      if (PANEL) {
        if (!app.call) setState('idle', 'Press a button to call.');
      } else {
        try { localStorage.setItem(STORAGE_KEY, userId); } catch (_) { /* private mode */ }
        if (!app.call) setState('idle', fresh ? `You are online as ${userId}. Choose someone to call.` : 'Back online. Choose someone to call.');
        pollUsersSoon();
      }
    } else {
      app.wanted = null;
      const message = `The server refused the name “${userId}”: ${error || 'unknown error'}`;
      showError(ui.nameError, message);
      ui.name.setAttribute('aria-invalid', 'true');
      if (!app.me) setState('unregistered', 'Choose another name and press Register.');
      ui.name.focus();
    }
    render();
  }

  ui.logout.addEventListener('click', () => {
    const call = app.call;
    if (call) finishCall(call, 'Call ended.', { notify: true });
    socket.emit('logout_user', { userId: app.me });
    app.me = null;
    app.wanted = null;
    try { localStorage.removeItem(STORAGE_KEY); } catch (_) { /* private mode */ }
    setState('unregistered', 'You are logged out. Choose a name and press Register.');
    renderUsers(lastUsers);
    ui.name.focus();
  });

  function onForceDisconnect({ reason }) {
    const name = app.me;
    app.kickedName = name;
    setConnection('kicked', 'Disconnected');
    const call = app.call;
    if (call) finishCall(call, 'Call ended: your name was opened elsewhere.', { notify: false });
    app.me = null;
    app.wanted = null;
    const why = reason === 'new_login'
      ? `The name ${name || 'you used'} was opened in another window or on another device, so this page was disconnected.`
      : `The server disconnected this page (${reason}).`;
    ui.kickedText.textContent = why;
    setState('kicked', reason === 'new_login' ? 'Disconnected: your name is in use elsewhere.' : 'Disconnected by the server.');
    socket.stop();
  }

  ui.reconnect.addEventListener('click', () => {
    const name = app.kickedName;
    app.kickedName = null;
    setConnection('connecting', 'Connecting…');
    app.wanted = name;
    setState(name ? 'registering' : 'unregistered', name ? `Registering as ${name}…` : 'Choose a name and press Register.');
    socket.reconnectNow();
  });

  // ---------------------------------------------------------------------
  // Online users
  // ---------------------------------------------------------------------

  let lastUsers = [];
  let pollTimer = 0;

  async function pollUsers() {
    clearTimeout(pollTimer);
    const controller = new AbortController();
    const abort = setTimeout(() => controller.abort(), 5000);
    try {
      const res = await fetch(new URL('users', serverRoot), { cache: 'no-store', signal: controller.signal });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = await res.json();
      lastUsers = Array.isArray(body.connectedUsers) ? body.connectedUsers.filter((u) => typeof u === 'string') : [];
      showError(ui.usersError, null);
      renderUsers(lastUsers);
    } catch (err) {
      showError(ui.usersError, 'Could not load who is online. Retrying…');
    } finally {
      clearTimeout(abort);
      pollTimer = setTimeout(pollUsers, USERS_POLL_MS);
    }
  }

  function pollUsersSoon() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(pollUsers, 50);
  }

  function renderUsers(users) {
    const others = users.filter((u) => u !== app.me && u !== app.kickedName);
    const existing = new Map([...ui.users.children].map((li) => [li.dataset.user, li]));
    others.forEach((user, index) => {
      let li = existing.get(user);
      if (li) {
        existing.delete(user);
      } else {
        li = document.createElement('li');
        li.dataset.user = user;
        li.dataset.testid = `user-${user}`;
        const name = document.createElement('span');
        name.className = 'user-name';
        name.textContent = user;
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'btn accept';
        button.textContent = 'Call';
        button.setAttribute('aria-label', `Call ${user}`);
        button.dataset.testid = `call-${user}`;
        button.addEventListener('click', () => startCall(user));
        li.append(name, button);
      }
      const at = ui.users.children[index];
      if (at !== li) ui.users.insertBefore(li, at || null);
    });
    for (const li of existing.values()) li.remove();
    show(ui.usersEmpty, others.length === 0);
    render();
  }

  ui.dialForm.addEventListener('submit', (e) => {
    e.preventDefault();
    unlockAudio();
    const peer = ui.dialName.value.trim();
    const problem = nameProblem(peer, 'the name of the person to call');
    showError(ui.dialError, problem);
    if (problem) {
      ui.dialName.focus();
      return;
    }
    startCall(peer);
  });

  // ---------------------------------------------------------------------
  // Calls
  // ---------------------------------------------------------------------

  let callSeq = 0;

  function newCall(peer, role) {
    return {
      id: ++callSeq,
      peer,
      // The names the other side may go by: what was dialed (a group, or
      // where the call was forwarded) besides who answered.
      names: new Set([peer]),
      group: null, // the group a call to us rang (callee)
      role, // 'caller' | 'callee'
      offer: null, // the caller's offer, for the callee
      pc: null,
      stream: null,
      sent: false, // make_call was sent (caller)
      placed: false, // the server accepted make_call (caller) / we answered (callee)
      remoteSet: false, // setRemoteDescription done
      remoteVideo: false, // the other side sends video
      pendingLocal: [], // our candidates, held until the server knows the call
      pendingRemote: [], // their candidates, held until setRemoteDescription
      startedAt: 0,
      away: false, // our connection to the server is down; the server holds the call
      awayTimer: 0, // ends the call here once the server's grace is surely over
      peerAway: false, // the other party's connection is down
      makingOffer: false, // an ICE-restart offer of ours is on its way
      restarts: 0,
    };
  }

  /** Our connection dropped mid-call: keep the call while we reconnect. */
  function holdCall(call) {
    if (call.away) return;
    call.away = true;
    const seconds = Math.round(RECONNECT_GRACE_MS / 1000);
    setStatus(`Connection to the server lost. Reconnecting… The call goes on if it is back within ${seconds} s.`);
    call.awayTimer = setTimeout(() => {
      finishCall(call, 'Lost the connection to the server. Call ended.', { notify: false });
    }, RECONNECT_GRACE_MS + 1000);
  }

  /** Back online and registered: the call goes on; renegotiate the media path. */
  function resumeCall(call) {
    call.away = false;
    clearTimeout(call.awayTimer);
    setState(app.state, statusOf(call));
    if (app.state === 'in-call') restartIce(call);
  }

  function statusOf(call) {
    if (call.peerAway) return `${call.peer}’s connection dropped. Waiting for them to come back…`;
    switch (app.state) {
      case 'in-call': return `In call with ${call.peer}${dialed(call)}`;
      case 'ringing': return call.group ? `${call.peer} is calling ${call.group}` : `${call.peer} is calling you`;
      case 'calling': return `Calling ${call.peer}…`;
      default: return `Connecting to ${call.peer}…`;
    }
  }

  /** An ICE restart: a new offer through call_update (the network may have changed). */
  async function restartIce(call) {
    const pc = call.pc;
    if (!pc || app.call !== call || call.away || call.restarts >= 5) return;
    call.restarts += 1;
    app.iceRestarts += 1;
    try {
      call.makingOffer = true;
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      if (app.call !== call) return;
      const description = { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
      socket.emit('call_update', { to: call.peer, from: app.me, description }, (reply) => {
        if (app.call !== call || (reply && reply.ok)) return;
        if (reply && reply.error === 'no call with that user') {
          finishCall(call, `The call with ${call.peer} ended while you were offline.`, { notify: false });
        }
      });
    } catch (err) {
      console.warn('signalbox: ICE restart failed', err);
    } finally {
      call.makingOffer = false;
    }
  }

  /** The other party's new offer or answer (call_update). */
  async function onCallUpdate({ from, description }) {
    const call = app.call;
    if (!call || call.peer !== from || !call.pc || !description) return;
    const pc = call.pc;
    try {
      if (description.type === 'offer') {
        // Both restarting at once: the callee gives way (its own offer is
        // rolled back), the caller keeps its own.
        const collision = call.makingOffer || pc.signalingState !== 'stable';
        if (collision && call.role === 'caller') return;
        await pc.setRemoteDescription(description);
        await pc.setLocalDescription(await pc.createAnswer());
        if (app.call !== call) return;
        const answer = { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
        socket.emit('call_update', { to: call.peer, from: app.me, description: answer });
      } else if (description.type === 'answer' && pc.signalingState === 'have-local-offer') {
        await pc.setRemoteDescription(description);
      }
    } catch (err) {
      console.warn('signalbox: renegotiation failed', err);
    }
  }

  function onPeerReconnecting({ from }) {
    const call = app.call;
    if (!call || call.peer !== from) return;
    call.peerAway = true;
    setStatus(statusOf(call));
    render();
  }

  function onPeerReconnected({ from }) {
    const call = app.call;
    if (!call || call.peer !== from) return;
    call.peerAway = false;
    setStatus(`${from} is back. ${statusOf(call)}`);
    render();
  }

  async function startCall(peer) {
    unlockAudio();
    showError(ui.micError, null);
    showError(ui.dialError, null);
    if (!app.me || app.call || app.state !== 'idle') return;
    if (peer === app.me) {
      setStatus('You can’t call yourself.');
      return;
    }
    const call = newCall(peer, 'caller');
    app.call = call;
    setState('calling', `Calling ${peer}…`);
    try {
      const stream = await getMicrophone();
      if (app.call !== call) { stopStream(stream); return; }
      if (!stream) {
        finishCall(call, `Could not call ${peer} without the microphone.`, { notify: false });
        return;
      }
      call.stream = stream;
      const pc = createPeerConnection(call);
      addTracks(call, pc, stream);
      await pc.setLocalDescription(await pc.createOffer());
      if (app.call !== call) return;
      const offer = { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
      call.sent = true;
      const sent = socket.emit('make_call', { to: peer, from: app.me, offer }, (reply) => {
        if (app.call !== call || call.role !== 'caller') return;
        if (reply && reply.ok) {
          call.placed = true;
          for (const candidate of call.pendingLocal.splice(0)) sendCandidate(call, candidate);
        } else {
          // call_failed / call_busy usually got here first and ended the call.
          finishCall(call, failureText(reply && reply.error, peer), { notify: false });
        }
      });
      if (!sent) finishCall(call, 'Not connected to the server. Try again in a moment.', { notify: false });
    } catch (err) {
      console.error('signalbox: cannot start the call', err);
      finishCall(call, `Could not call ${peer}: ${err.message || err}`, { notify: call.sent });
    }
  }

  function failureText(error, peer) {
    switch (error) {
      case 'user is offline': return `${peer} is not online`;
      case 'user is busy': return `${peer} is busy`;
      case 'user does not want to be disturbed': return `${peer} does not want to be disturbed`;
      case 'not allowed to call this user': return `You may not call ${peer}.`;
      case 'cannot call yourself': return 'You can’t call yourself.';
      case 'you are already in a call': return 'You are already in a call.';
      default:
        if (error && error.startsWith('invalid user name')) return `“${peer}” is not a valid name.`;
        return `Could not call ${peer}${error ? `: ${error}` : ''}`;
    }
  }

  /** Whether `name` is the other side of `call`, by any name it goes by. */
  function isPeer(call, name) {
    return !!call && (call.peer === name || call.names.has(name));
  }

  function onIncomingCall({ from, offer, group }) {
    if (typeof from !== 'string') return;
    const current = app.call;
    if (current) {
      // Both called each other at once: the server rang us, so our own
      // attempt (not yet accepted) is dropped and we take theirs.
      if (current.role === 'caller' && !current.placed) {
        finishCall(current, undefined, { notify: false, quiet: true });
      } else {
        console.warn('signalbox: incoming call while in a call, ignored', from);
        return;
      }
    }
    const call = newCall(from, 'callee');
    call.offer = offer;
    if (typeof group === 'string') call.group = group;
    app.call = call;
    showError(ui.micError, null);
    setState('ringing', call.group ? `${from} is calling ${call.group}` : `${from} is calling you`);
    startRinging();
    if (navigator.vibrate) {
      try { navigator.vibrate([400, 200, 400]); } catch (_) { /* not allowed */ }
    }
    ui.answer.focus({ preventScroll: false });
  }

  async function answerCall() {
    const call = app.call;
    if (!call || call.role !== 'callee' || app.state !== 'ringing') return;
    unlockAudio();
    stopRinging();
    showError(ui.micError, null);
    setState('answering', `Connecting to ${call.peer}…`);
    try {
      const stream = await getMicrophone();
      if (app.call !== call) { stopStream(stream); return; }
      if (!stream) {
        // Still ringing: the person may allow the microphone and try again.
        setState('ringing', `${call.peer} is calling you`);
        startRinging();
        return;
      }
      call.stream = stream;
      const pc = createPeerConnection(call);
      addTracks(call, pc, stream);
      await pc.setRemoteDescription(call.offer);
      if (app.call !== call) return;
      call.remoteSet = true;
      flushRemoteCandidates(call);
      await pc.setLocalDescription(await pc.createAnswer());
      if (app.call !== call) return;
      const answer = { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
      const sent = socket.emit('answer_call', { to: call.peer, from: app.me, answer }, (reply) => {
        if (app.call !== call) return;
        if (!reply || !reply.ok) {
          const error = reply && reply.error;
          finishCall(call, error === 'no incoming call from that user'
            ? `${call.peer} is no longer calling.`
            : `Could not answer: ${error || 'unknown error'}`, { notify: false });
        }
      });
      if (!sent) {
        finishCall(call, 'Not connected to the server. Call ended.', { notify: false });
        return;
      }
      call.placed = true;
      beginInCall(call);
    } catch (err) {
      console.error('signalbox: cannot answer', err);
      finishCall(call, `Could not answer: ${err.message || err}`, { notify: true });
    }
  }

  function declineCall() {
    const call = app.call;
    if (!call || call.role !== 'callee' || call.placed) return;
    socket.emit('decline_call', { to: call.peer, from: app.me });
    finishCall(call, `You declined ${call.peer}’s call.`, { notify: false });
  }

  function hangUp() {
    const call = app.call;
    if (!call) return;
    const ringingOut = call.role === 'caller' && app.state === 'calling';
    finishCall(call, ringingOut ? 'Call cancelled.' : 'Call ended', { notify: true });
  }

  function toggleCamera() {
    const call = app.call;
    const camera = call && call.stream ? call.stream.getVideoTracks()[0] : null;
    if (!camera) return;
    // A disabled track sends black frames: the other side sees nothing,
    // and the camera light goes off, with no renegotiation.
    camera.enabled = !camera.enabled;
    render();
  }

  function openDoor(station, door) {
    const call = app.call;
    const one = (app.stations.get(station) || []).length === 1;
    showError(ui.doorStatus, one ? 'Opening the door…' : `Opening ${door}…`);
    socket.emit('open_door', { to: station, door }, (reply) => {
      if (app.call !== call) return;
      if (reply && reply.ok) {
        showError(ui.doorStatus, one ? 'The door is open.' : `${door} is open.`);
      } else {
        showError(ui.doorStatus, `Could not open ${one ? 'the door' : door}: ${(reply && reply.error) || 'no answer from the server'}`);
      }
    });
  }

  /** A door panel: someone opened the door (its relay is driven elsewhere). */
  function onDoorOpen({ from, door }) {
    if (typeof door !== 'string') return;
    show(ui.doorOpen, true);
    ui.doorOpen.textContent = 'The door is open';
    ui.doorOpen.dataset.door = door;
    ui.doorOpen.title = typeof from === 'string' ? `Opened by ${from}` : '';
    clearTimeout(app.doorOpenTimer);
    app.doorOpenTimer = setTimeout(() => show(ui.doorOpen, false), DOOR_OPEN_MS);
  }

  function onCallEnding({ seconds }) {
    const call = app.call;
    if (!call || typeof seconds !== 'number') return;
    setStatus(`${statusOf(call)} — the call ends in ${seconds} s`);
  }

  /** What the directory holds for us: the stations' doors, whom we may call. */
  function onDirectory({ doors, groups, users }) {
    app.stations = new Map();
    if (doors && typeof doors === 'object') {
      for (const [station, list] of Object.entries(doors)) {
        if (Array.isArray(list)) app.stations.set(station, list.filter((d) => typeof d === 'string'));
      }
    }
    const names = (list) => (Array.isArray(list) ? list.filter((n) => typeof n === 'string') : []);
    app.targets = { groups: names(groups), users: names(users) };
    renderTargets();
  }

  /** A door panel's buttons: groups first, then users. */
  function renderTargets() {
    const targets = app.targets || { groups: [], users: [] };
    const all = [...targets.groups, ...targets.users];
    ui.targets.replaceChildren(...all.map((name) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'btn big accept target';
      button.textContent = name;
      button.setAttribute('aria-label', `Call ${name}`);
      button.dataset.testid = `call-${name}`;
      button.addEventListener('click', () => startCall(name));
      li.append(button);
      return li;
    }));
    show(ui.targetsEmpty, app.targets !== null && all.length === 0);
    render();
  }

  function onCallAnswered({ from, answer }) {
    const call = app.call;
    if (!call || call.role !== 'caller' || !call.pc || call.remoteSet || typeof from !== 'string') return;
    // A group's member (or a device of a user with several) answers in
    // its own name: the call is with them from now on.
    call.names.add(call.peer);
    call.peer = from;
    beginInCall(call);
    call.pc.setRemoteDescription(answer).then(() => {
      if (app.call !== call) return;
      call.remoteSet = true;
      flushRemoteCandidates(call);
    }).catch((err) => {
      console.error('signalbox: bad answer', err);
      finishCall(call, `The call could not be set up: ${err.message || err}`, { notify: true });
    });
  }

  function beginInCall(call) {
    call.startedAt = performance.now();
    setState('in-call', `In call with ${call.peer}${dialed(call)}`);
  }

  /** ` (flat-12)` when the call went to a group and someone in it answered. */
  function dialed(call) {
    const other = [...call.names].find((n) => n !== call.peer);
    return other ? ` (${other})` : '';
  }

  function onCallForwarded({ from, to }) {
    const call = app.call;
    if (!call || call.role !== 'caller' || !isPeer(call, from) || typeof to !== 'string') return;
    call.names.add(to);
    call.peer = to;
    setStatus(`No answer from ${from}. Calling ${to}…`);
    render();
  }

  function onCallEnded({ from, reason }) {
    const call = app.call;
    if (!isPeer(call, from)) return;
    const wasRinging = app.state === 'ringing' || app.state === 'answering';
    let text;
    switch (reason) {
      case 'answered_elsewhere': text = call.group
        ? `${from}’s call to ${call.group} was answered on another device`
        : `${from}’s call was answered on another device`; break;
      case 'forwarded': text = `${from}’s call went on to someone else`; break;
      case 'disconnected': text = `${from}’s connection was lost`; break;
      case 'logged_out': text = `${from} logged out`; break;
      case 'new_login': text = `${from} signed in on another device`; break;
      case 'door_opened': text = 'The door was opened. Call ended.'; break;
      case 'max_duration': text = 'The call reached its time limit and ended.'; break;
      case 'server_shutdown': text = 'The intercom server is restarting. Call ended.'; break;
      default:
        if (wasRinging) text = `Missed call from ${from}`;
        else if (app.state === 'calling') text = `${from} ended the call`;
        else text = `${from} hung up`;
    }
    finishCall(call, text, { notify: false });
  }

  function onCallDeclined({ from }) {
    const call = app.call;
    if (!call || call.role !== 'caller' || !isPeer(call, from)) return;
    finishCall(call, `${from} declined`, { notify: false });
  }

  function onCallTimeout({ user }) {
    const call = app.call;
    if (!isPeer(call, user)) return;
    finishCall(call, call.role === 'caller' ? `No answer from ${user}` : `Missed call from ${user}`, { notify: false });
  }

  function onCallBusy({ targetUser }) {
    const call = app.call;
    if (!call || call.role !== 'caller' || call.remoteSet || !isPeer(call, targetUser)) return;
    finishCall(call, `${targetUser} is busy`, { notify: false });
  }

  function onCallFailed({ error, targetUser }) {
    const call = app.call;
    if (!call || call.role !== 'caller' || call.remoteSet || !isPeer(call, targetUser)) return;
    finishCall(call, failureText(error, targetUser), { notify: false });
  }

  /**
   * Ends `call` locally: tells the peer when `notify`, closes the
   * RTCPeerConnection, stops the microphone, and shows `message`.
   */
  function finishCall(call, message, { notify, quiet } = {}) {
    if (app.call !== call) return;
    if (notify && app.me) {
      if (call.role === 'callee' && !call.placed) {
        socket.emit('decline_call', { to: call.peer, from: app.me });
      } else if (call.role === 'callee' || call.sent) {
        socket.emit('end_call', { to: call.peer, from: app.me });
      }
    }
    app.call = null;
    clearTimeout(call.awayTimer);
    stopRinging();
    if (call.pc) {
      const pc = call.pc;
      pc.onicecandidate = null;
      pc.ontrack = null;
      pc.onconnectionstatechange = null;
      try { pc.close(); } catch (_) { /* already closed */ }
      call.pc = null;
    }
    stopStream(call.stream);
    call.stream = null;
    if (ui.audio.srcObject) {
      ui.audio.pause();
      ui.audio.srcObject = null;
    }
    ui.remoteVideo.srcObject = null;
    ui.localVideo.srcObject = null;
    if (quiet) return;
    setState(idleState(), message);
  }

  function stopStream(stream) {
    if (stream) for (const track of stream.getTracks()) track.stop();
  }

  // ---------------------------------------------------------------------
  // WebRTC
  // ---------------------------------------------------------------------

  function createPeerConnection(call) {
    const pc = new RTCPeerConnection({ iceServers: app.iceServers });
    call.pc = pc;
    pc.onicecandidate = (e) => {
      if (!e.candidate || app.call !== call) return;
      const candidate = e.candidate.toJSON();
      if (call.role === 'caller' && !call.placed) call.pendingLocal.push(candidate);
      else sendCandidate(call, candidate);
    };
    pc.ontrack = (e) => {
      const stream = (e.streams && e.streams[0]) || new MediaStream([e.track]);
      if (e.track.kind === 'video') {
        // The sound plays from the <audio> element; the <video> is muted.
        if (ui.remoteVideo.srcObject !== stream) ui.remoteVideo.srcObject = stream;
        call.remoteVideo = true;
        render();
        ui.remoteVideo.play().catch(() => {});
        return;
      }
      if (ui.audio.srcObject !== stream) ui.audio.srcObject = stream;
      const playing = ui.audio.play();
      if (playing) {
        playing.catch((err) => {
          if (err && err.name === 'NotAllowedError') {
            showError(ui.micError, 'Your browser blocked the sound. Tap or click anywhere on the page to hear the call.');
            document.addEventListener('click', () => {
              ui.audio.play().catch(() => {});
              showError(ui.micError, null);
            }, { once: true });
          }
        });
      }
    };
    pc.onconnectionstatechange = () => {
      if (app.call !== call) return;
      if (pc.connectionState !== 'failed') return;
      // A changed network: a restart finds the new path. While away, the
      // restart waits for the connection to the server.
      if (call.away || call.peerAway) return;
      if (call.restarts < 5 && socket.connected) restartIce(call);
      else finishCall(call, `The audio connection to ${call.peer} failed. Call ended.`, { notify: true });
    };
    return pc;
  }

  function sendCandidate(call, candidate) {
    socket.emit('ice_candidate', { to: call.peer, from: app.me, candidate });
  }

  function onRemoteCandidate({ from, candidate }) {
    const call = app.call;
    if (!call || call.peer !== from || !candidate) return;
    if (call.pc && call.remoteSet) addRemoteCandidate(call, candidate);
    else call.pendingRemote.push(candidate);
  }

  function flushRemoteCandidates(call) {
    for (const candidate of call.pendingRemote.splice(0)) addRemoteCandidate(call, candidate);
  }

  function addRemoteCandidate(call, candidate) {
    call.pc.addIceCandidate(candidate).catch((err) => {
      console.warn('signalbox: ICE candidate refused', err);
    });
  }

  async function getMicrophone() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError(ui.micError,
        'Browsers only allow the microphone on secure pages: HTTPS, or localhost on this very device. '
        + `This page was opened as ${window.location.origin}, so calls cannot use the microphone. `
        + 'Ask whoever runs the intercom for its https:// address.');
      return null;
    }
    // Video where there is a camera; a camera that cannot be had (taken,
    // refused) still leaves a call with sound.
    if (await hasCamera()) {
      try {
        return await navigator.mediaDevices.getUserMedia({ audio: true, video: VIDEO });
      } catch (err) {
        console.info('signalbox: no camera for this call', err && err.name);
      }
    }
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      showError(ui.micError, microphoneProblem(err));
      return null;
    }
  }

  // Enough for a face at a door on a Pi-class device.
  const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15, max: 30 } };

  async function hasCamera() {
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      return devices.some((d) => d.kind === 'videoinput');
    } catch (_) {
      return false;
    }
  }

  /** Our tracks into `pc`; without a camera, still ready to see theirs. */
  function addTracks(call, pc, stream) {
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    if (stream.getVideoTracks().length > 0) {
      ui.localVideo.srcObject = stream;
      ui.localVideo.play().catch(() => {});
    } else if (call.role === 'caller') {
      // The callee answers an offer's m-lines only: offer video to receive.
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    render();
  }

  function microphoneProblem(err) {
    switch (err && err.name) {
      case 'NotAllowedError':
      case 'SecurityError':
        return 'The microphone is blocked for this page. Allow it: click the lock or settings icon '
          + 'next to the address, set Microphone to Allow, then try again. On a phone, also check '
          + 'that the browser may use the microphone in the system settings.';
      case 'NotFoundError':
      case 'OverconstrainedError':
        return 'No microphone was found. Plug one in (or switch it on) and try again.';
      case 'NotReadableError':
      case 'AbortError':
        return 'The microphone could not be started: another app may be using it. Close that app and try again.';
      default:
        return `The microphone could not be used (${(err && (err.message || err.name)) || 'unknown error'}).`;
    }
  }

  // ---------------------------------------------------------------------
  // Ring tone (Web Audio; silent if the browser does not allow it)
  // ---------------------------------------------------------------------

  let audioContext = null;
  let ringTimer = 0;

  function unlockAudio() {
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!audioContext && Ctx) audioContext = new Ctx();
      if (audioContext && audioContext.state === 'suspended') audioContext.resume().catch(() => {});
    } catch (_) {
      audioContext = null;
    }
  }

  function ringOnce() {
    if (!audioContext || audioContext.state !== 'running') return;
    const now = audioContext.currentTime;
    const gain = audioContext.createGain();
    gain.connect(audioContext.destination);
    gain.gain.setValueAtTime(0, now);
    for (const [start, end] of [[0, 0.4], [0.6, 1.0]]) {
      gain.gain.setValueAtTime(0, now + start);
      gain.gain.linearRampToValueAtTime(0.15, now + start + 0.02);
      gain.gain.setValueAtTime(0.15, now + end - 0.02);
      gain.gain.linearRampToValueAtTime(0, now + end);
    }
    for (const frequency of [440, 480]) {
      const osc = audioContext.createOscillator();
      osc.frequency.value = frequency;
      osc.connect(gain);
      osc.start(now);
      osc.stop(now + 1.05);
    }
  }

  function startRinging() {
    stopRinging();
    ringOnce();
    ringTimer = setInterval(ringOnce, 3000);
  }

  function stopRinging() {
    clearInterval(ringTimer);
    ringTimer = 0;
  }

  // ---------------------------------------------------------------------
  // Server events
  // ---------------------------------------------------------------------

  /** Acts on a server event; false for one this page does not know. */
  function onServerEvent(name, data) {
    const payload = data && typeof data === 'object' ? data : {};
    switch (name) {
      case 'user_registered': onUserRegistered(payload); break;
      case 'ice_servers':
        app.iceServers = Array.isArray(payload.iceServers) ? payload.iceServers : [];
        break;
      case 'incoming_call': onIncomingCall(payload); break;
      case 'call_answered': onCallAnswered(payload); break;
      case 'call_declined': onCallDeclined(payload); break;
      case 'call_ended': onCallEnded(payload); break;
      case 'call_timeout': onCallTimeout(payload); break;
      case 'call_busy': onCallBusy(payload); break;
      case 'call_failed': onCallFailed(payload); break;
      case 'ice_candidate': onRemoteCandidate(payload); break;
      case 'force_disconnect': onForceDisconnect(payload); break;
      case 'call_update': onCallUpdate(payload); break;
      case 'peer_reconnecting': onPeerReconnecting(payload); break;
      case 'peer_reconnected': onPeerReconnected(payload); break;
      case 'call_forwarded': onCallForwarded(payload); break;
      case 'directory': onDirectory(payload); break;
      case 'door_open': onDoorOpen(payload); break;
      case 'call_ending': onCallEnding(payload); break;
      case 'signaling_error':
        // Races (a candidate or hang-up crossing the other side's hang-up)
        // are expected; anything else is worth showing.
        console.info('signalbox: refused by the server', payload);
        if (!['ice_candidate', 'end_call', 'decline_call', 'logout_user', 'call_update'].includes(payload.event)) {
          setStatus(`The server refused ${payload.event}: ${payload.error}`);
        }
        break;
      default:
        return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------

  ui.answer.addEventListener('click', answerCall);
  ui.decline.addEventListener('click', declineCall);
  ui.hangup.addEventListener('click', hangUp);
  ui.camera.addEventListener('click', toggleCamera);

  // The call timer.
  setInterval(() => { if (app.state === 'in-call') renderTimer(); }, 1000);

  window.addEventListener('pagehide', () => {
    const call = app.call;
    if (call) finishCall(call, 'Call ended', { notify: true });
    socket.leave();
  });
  // Back from the browser's page cache: join again.
  window.addEventListener('pageshow', (e) => { if (e.persisted) socket.reconnectNow(); });

  document.body.dataset.mode = MODE;
  if (PANEL) {
    // A door panel is the door station its token names (or ?user=, where
    // the server needs no tokens); a visitor has nothing to type.
    setToken(tokenFromLink() || storedToken());
    const named = new URL(window.location.href).searchParams.get('user');
    const name = tokenUser(app.token) || (named && NAME_RE.test(named) ? named : null);
    ui.meHeading.textContent = 'Door panel';
    if (name) {
      app.wanted = name;
    } else {
      showError(ui.nameError, 'This door panel has no name. Open it with its token link (/app/door#token=…), '
        + 'or as /app/door?user=NAME where the server needs no tokens.');
    }
  } else {
    try {
      const saved = localStorage.getItem(STORAGE_KEY);
      if (saved && NAME_RE.test(saved)) ui.name.value = saved;
    } catch (_) { /* private mode */ }
    setToken(tokenFromLink() || storedToken());
  }

  if (!window.RTCPeerConnection) {
    showError(ui.micError, 'This browser cannot make calls (no WebRTC). Use a current Chrome, Firefox or Safari.');
  }

  setState('connecting', 'Connecting to the intercom server…');
  socket.start();
  if (!PANEL) pollUsers();
})();
