// Socket.IO clients that must not notice an in-place update of the daemon.
//
//   node tests/node/upgrade_client.js <port> <stop-file> [maxMs=60000]
//
// Against the seed app (examples/socketio/worker.js: every "chat" a client sends is broadcast
// to every client on every worker through the cluster adapter). Opens 2 websocket-only and 2
// polling-only clients (no reconnection: a dropped session shows), then the first websocket
// client sends a numbered "chat" every 20 ms (the paced broadcast; each client also sees its own
// messages come back, the echo). Stops sending when <stop-file> exists (or after maxMs), waits
// up to 5 s for the last broadcasts, and prints ONE line of JSON:
//   {"ok", "clients", "sent", "disconnects", "connectErrors", "missing", "duplicates", "errors"}
// `missing` / `duplicates`: per client, how many sequence numbers never arrived / arrived twice.
// Prints `started` on stderr once every client is connected and the first broadcast came back.
"use strict";
const fs = require("fs");
const { io } = require("socket.io-client");

const [portArg, stopFile, maxArg] = process.argv.slice(2);
const PORT = parseInt(portArg || "", 10);
const MAX_MS = parseInt(maxArg || "60000", 10);
const url = `http://127.0.0.1:${PORT}`;
const result = { ok: false, clients: 0, sent: 0, disconnects: 0, connectErrors: 0, missing: [], duplicates: [], errors: [] };

const specs = [["websocket"], ["websocket"], ["polling"], ["polling"]];
const clients = specs.map((transports, i) => {
  const c = { i, transports, seen: new Map(), socket: null };
  c.socket = io(url, { transports, reconnection: false, timeout: 10000, forceNew: true });
  c.socket.on("chat", (m) => {
    const seq = m && m.msg && m.msg.seq;
    if (typeof seq === "number") c.seen.set(seq, (c.seen.get(seq) || 0) + 1);
  });
  c.socket.on("disconnect", (reason) => {
    if (!finishing) {
      result.disconnects++;
      result.errors.push(`client ${i} (${transports}) disconnected: ${reason}`);
    }
  });
  c.socket.on("connect_error", (e) => {
    result.connectErrors++;
    result.errors.push(`client ${i} connect_error: ${e.message}`);
  });
  return c;
});

let finishing = false;
let seq = 0;
const t0 = Date.now();

function connected() {
  return clients.every((c) => c.socket.connected);
}

function report() {
  finishing = true;
  result.clients = clients.length;
  result.sent = seq;
  for (const c of clients) {
    let missing = 0;
    let dup = 0;
    for (let s = 0; s < seq; s++) {
      const n = c.seen.get(s) || 0;
      if (n === 0) missing++;
      if (n > 1) dup += n - 1;
    }
    result.missing.push(missing);
    result.duplicates.push(dup);
    c.socket.close();
  }
  result.ok =
    result.disconnects === 0 &&
    result.connectErrors === 0 &&
    result.missing.every((n) => n === 0) &&
    result.duplicates.every((n) => n === 0) &&
    seq > 0;
  process.stdout.write(JSON.stringify(result) + "\n");
  setTimeout(() => process.exit(0), 50);
}

const wait = setInterval(() => {
  if (Date.now() - t0 > 20000) {
    clearInterval(wait);
    result.errors.push("clients did not all connect within 20 s");
    report();
    return;
  }
  if (!connected()) return;
  clearInterval(wait);
  let announced = false;
  const sender = clients[0].socket;
  const pace = setInterval(() => {
    const stop = Date.now() - t0 > MAX_MS || (stopFile && fs.existsSync(stopFile));
    if (stop) {
      clearInterval(pace);
      // The last broadcasts get 5 s to arrive everywhere.
      const deadline = Date.now() + 5000;
      const drain = setInterval(() => {
        const all = clients.every((c) => c.seen.size >= seq);
        if (all || Date.now() > deadline) {
          clearInterval(drain);
          report();
        }
      }, 20);
      return;
    }
    sender.emit("chat", { seq: seq++ });
    if (!announced && clients.every((c) => c.seen.size > 0)) {
      announced = true;
      process.stderr.write("started\n");
    }
  }, 20);
}, 20);
