// The baseline for signalbox's load benchmarks: the original Node.js
// signaling server, on its own stack (express 4, socket.io 4, cors), written
// from its README (the seed spec) as that server works: user presence in a
// Map of user name -> socket id, call state in a Map of user name -> call,
// a 30 s ring timeout, busy detection, one device per user, ICE relayed to
// `to`. It trusts the `from` its clients write, as the original did.
//
//   PORT=3000 node server.js
//   TLS_CERT=cert.pem TLS_KEY=key.pem PORT=3000 node server.js   (HTTPS and WSS)

const express = require("express");
const fs = require("fs");
const http = require("http");
const https = require("https");
const cors = require("cors");
const { Server } = require("socket.io");

const PORT = process.env.PORT || 3000;
const CALL_TIMEOUT_MS = 30000;
const QUIET = process.env.QUIET === "1";

const app = express();
app.use(cors());
app.use(express.json());

// For benches/run's TLS groups: the same app and socket.io over HTTPS.
const TLS = process.env.TLS_CERT && process.env.TLS_KEY;
const server = TLS
  ? https.createServer(
      { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) },
      app,
    )
  : http.createServer(app);
const io = new Server(server, {
  cors: {
    origin: "*",
    methods: ["GET", "POST"],
    credentials: true,
  },
});

// userId -> socket.id of the device that registered it last.
const connectedUsers = new Map();
// userId -> { peer, status: "ringing" | "active", timeout }; each call has
// one entry per party.
const activeCalls = new Map();

function log(...args) {
  if (!QUIET) console.log(new Date().toISOString(), ...args);
}

function emitToUser(userId, event, payload) {
  const socketId = connectedUsers.get(userId);
  if (!socketId) return false;
  io.to(socketId).emit(event, payload);
  return true;
}

// Forgets the call `userId` is in, on both sides, and stops its ring timer.
// Returns the peer, or undefined when there was no call.
function clearCall(userId) {
  const call = activeCalls.get(userId);
  if (!call) return undefined;
  if (call.timeout) clearTimeout(call.timeout);
  activeCalls.delete(userId);
  const other = activeCalls.get(call.peer);
  if (other && other.peer === userId) {
    if (other.timeout) clearTimeout(other.timeout);
    activeCalls.delete(call.peer);
  }
  return call.peer;
}

// Ends `userId`'s call because they left; the peer hears why.
function endCallOf(userId, reason) {
  const peer = clearCall(userId);
  if (peer) {
    emitToUser(peer, "call_ended", { from: userId, reason });
    log(`call ${userId} <-> ${peer} ended: ${reason}`);
  }
}

app.get("/", (req, res) => {
  // Each call is in the map once per party.
  res.json({
    status: "WebRTC Signaling Server Running",
    connectedUsers: connectedUsers.size,
    activeCalls: Math.floor(activeCalls.size / 2),
    timestamp: new Date().toISOString(),
  });
});

app.get("/users", (req, res) => {
  res.json({
    connectedUsers: Array.from(connectedUsers.keys()),
    totalUsers: connectedUsers.size,
  });
});

io.on("connection", (socket) => {
  log(`socket connected: ${socket.id}`);

  socket.on("register_user", (data) => {
    const userId = data && data.userId;
    if (!userId) {
      socket.emit("user_registered", { success: false, userId });
      return;
    }

    // A socket that changes its name leaves the old one behind.
    if (socket.userId && socket.userId !== userId) {
      endCallOf(socket.userId, "logged_out");
      if (connectedUsers.get(socket.userId) === socket.id) {
        connectedUsers.delete(socket.userId);
      }
    }

    // One device per user: the latest login wins.
    const previous = connectedUsers.get(userId);
    if (previous && previous !== socket.id) {
      endCallOf(userId, "new_login");
      const old = io.sockets.sockets.get(previous);
      if (old) {
        old.emit("force_disconnect", { reason: "new_login" });
        old.userId = undefined;
        old.disconnect(true);
      }
      log(`user ${userId} logged in on another device`);
    }

    connectedUsers.set(userId, socket.id);
    socket.userId = userId;
    socket.emit("user_registered", { success: true, userId });
    log(`user registered: ${userId} (${connectedUsers.size} online)`);
  });

  socket.on("make_call", (data) => {
    const { to, from, offer } = data || {};
    const caller = from || socket.userId;
    if (!connectedUsers.has(to)) {
      socket.emit("call_failed", { error: "User is offline", targetUser: to });
      return;
    }
    if (activeCalls.has(to)) {
      socket.emit("call_busy", { targetUser: to });
      return;
    }

    const timeout = setTimeout(() => {
      const call = activeCalls.get(caller);
      if (call && call.peer === to && call.status === "ringing") {
        clearCall(caller);
        emitToUser(caller, "call_timeout", { user: to });
        emitToUser(to, "call_timeout", { user: caller });
        log(`call ${caller} -> ${to} timed out`);
      }
    }, CALL_TIMEOUT_MS);

    activeCalls.set(caller, { peer: to, status: "ringing", timeout });
    activeCalls.set(to, { peer: caller, status: "ringing" });
    emitToUser(to, "incoming_call", { from: caller, offer });
    log(`call ${caller} -> ${to} ringing`);
  });

  socket.on("answer_call", (data) => {
    const { to, from, answer } = data || {};
    const callee = from || socket.userId;
    const call = activeCalls.get(to);
    if (call) {
      if (call.timeout) clearTimeout(call.timeout);
      activeCalls.set(to, { peer: callee, status: "active" });
      activeCalls.set(callee, { peer: to, status: "active" });
    }
    emitToUser(to, "call_answered", { from: callee, answer });
    log(`call ${to} <-> ${callee} answered`);
  });

  socket.on("decline_call", (data) => {
    const { to, from } = data || {};
    const callee = from || socket.userId;
    clearCall(to);
    emitToUser(to, "call_declined", { from: callee });
    log(`call ${to} -> ${callee} declined`);
  });

  socket.on("end_call", (data) => {
    const { to, from } = data || {};
    const user = from || socket.userId;
    clearCall(user);
    clearCall(to);
    emitToUser(to, "call_ended", { from: user });
    log(`call ${user} <-> ${to} ended`);
  });

  socket.on("ice_candidate", (data) => {
    const { to, from, candidate } = data || {};
    emitToUser(to, "ice_candidate", { from: from || socket.userId, candidate });
  });

  socket.on("logout_user", (data) => {
    const userId = (data && data.userId) || socket.userId;
    if (!userId) return;
    endCallOf(userId, "logged_out");
    if (connectedUsers.get(userId) === socket.id) {
      connectedUsers.delete(userId);
    }
    socket.userId = undefined;
    log(`user logged out: ${userId}`);
  });

  socket.on("disconnect", (reason) => {
    const userId = socket.userId;
    // A socket replaced by a newer login no longer owns its name.
    if (userId && connectedUsers.get(userId) === socket.id) {
      endCallOf(userId, "disconnected");
      connectedUsers.delete(userId);
      log(`user disconnected: ${userId} (${reason}, ${connectedUsers.size} online)`);
    } else {
      log(`socket disconnected: ${socket.id} (${reason})`);
    }
  });
});

server.listen(PORT, () => {
  console.log(`Signaling server listening on port ${PORT}${TLS ? " (HTTPS)" : ""}`);
});

function shutdown() {
  io.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
