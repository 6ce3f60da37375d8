// Driver for the readiness-routing test (tests/health.rs), line protocol on stdio:
//
//   node sio_health_client.js <sticky port> <n new clients>
//
// 1. Connects client A (polling only, so every request of its session goes through the
//    sticky balancer) and prints `A <pid of its worker>`.
// 2. Waits for a line `go` on stdin (the test has made A's worker unready meanwhile).
// 3. Connects n new polling clients, round-trips 5 echoes on A, asks A's worker again, and
//    prints one JSON line: {ok, aPid, aPidAfter, echoes, newPids: [...], errors: [...]}.
// Every wait is bounded (SIO_TIMEOUT_MS, default 30000).
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

const port = parseInt(process.argv[2], 10);
const n = parseInt(process.argv[3] || "6", 10);
const url = `http://127.0.0.1:${port}`;
const result = { ok: false, errors: [], newPids: [] };
const sockets = [];

setTimeout(() => {
  result.errors.push("timed out");
  done();
}, Number(process.env.SIO_TIMEOUT_MS) || 30000).unref();

function done() {
  for (const s of sockets) s.close();
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}

function connect() {
  return new Promise((resolve, reject) => {
    const s = io(url, { transports: ["polling"], reconnection: false, timeout: 8000 });
    sockets.push(s);
    s.on("connect", () => resolve(s));
    s.on("connect_error", (e) => reject(new Error(`connect_error: ${e.message}`)));
  });
}

function ask(s, ev, ...args) {
  return new Promise((resolve, reject) => {
    s.timeout(5000).emit(ev, ...args, (err, v) => (err ? reject(err) : resolve(v)));
  });
}

(async () => {
  const a = await connect();
  const me = await ask(a, "whoami");
  result.aPid = me.pid;
  console.log(`A ${me.pid}`);
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.on("line", (l) => l.trim() === "go" && resolve()));
  rl.close();
  for (let i = 0; i < n; i++) {
    const s = await connect();
    result.newPids.push((await ask(s, "whoami")).pid);
  }
  result.echoes = 0;
  for (let i = 0; i < 5; i++) {
    const v = await ask(a, "echo", `m${i}`);
    if (v === `m${i}`) result.echoes++;
  }
  result.aPidAfter = (await ask(a, "whoami")).pid;
  result.ok = a.connected && result.echoes === 5;
  done();
})().catch((e) => {
  result.errors.push(String(e && e.message ? e.message : e));
  done();
});
