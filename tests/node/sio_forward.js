// Raw Engine.IO driver for Corral's "any node takes any request" tests: it chooses the node
// every single request goes to, which socket.io-client cannot.
//
//   node tests/node/sio_forward.js alternate <hostA:portA> <hostB:portB> [rounds]
//       Handshake (polling) on A, then every request alternates between B and A: POST an
//       event with an ack on one node, GET the ack on the other. Then the websocket upgrade
//       is sent to B and an ack travels over it. Requests are made from 127.0.0.9, so the
//       owner's worker must see that address in X-Forwarded-For (it reports what it saw).
//       SIO_PACE_MS=<ms> waits that long between rounds, and each round prints "progress <i>"
//       on stderr (a test changes something while the session is in use).
//   node tests/node/sio_forward.js forge <host:port> <secret> <group> <sid>
//       A node-to-node forward signed with <secret>: the listener must close it unanswered.
//   node tests/node/sio_forward.js open <host:port>
//       Opens a polling session there and leaves it open (prints its sid).
//   node tests/node/sio_forward.js garbage <host:port>
//       Bytes that are no forward (an HTTP request, then random bytes): each connection must
//       be closed.
//
// Prints ONE line of JSON {"scenario", "ok", "errors", ...}; every wait is bounded, the whole
// run by SIO_TIMEOUT_MS (default 40000).
"use strict";
const http = require("http");
const net = require("net");
const crypto = require("crypto");
const WebSocket = require("ws");

const [scenario, ...args] = process.argv.slice(2);
const TIMEOUT_MS = parseInt(process.env.SIO_TIMEOUT_MS || "40000", 10) || 40000;
const CLIENT_ADDR = "127.0.0.9";
const PACE_MS = parseInt(process.env.SIO_PACE_MS || "0", 10) || 0;
const result = { scenario: scenario || null, ok: false, errors: [] };

function fail(msg) {
  if (result.errors.length < 20) result.errors.push(String(msg));
}

function finish() {
  if (result.errors.length) result.ok = false;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = result.ok ? 0 : 1;
  setTimeout(() => process.exit(), 200).unref();
}

setTimeout(() => {
  fail(`scenario timed out after ${TIMEOUT_MS} ms`);
  finish();
}, TIMEOUT_MS).unref();

function hostPort(s) {
  const i = s.lastIndexOf(":");
  return { host: s.slice(0, i), port: parseInt(s.slice(i + 1), 10) };
}

// One HTTP request (a fresh connection each: the balancer routes per connection).
function request(target, method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.host,
        port: target.port,
        method,
        path,
        localAddress: CLIENT_ADDR,
        agent: false,
        headers: body === undefined ? {} : { "content-type": "text/plain;charset=UTF-8" },
        timeout: 10000,
      },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (data += c));
        res.on("end", () => resolve({ status: res.statusCode, body: data }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${target.host}:${target.port} timed out`)));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const packets = (body) => body.split("\x1e");

async function alternate() {
  const A = hostPort(args[0]);
  const B = hostPort(args[1]);
  const rounds = parseInt(args[2] || "10", 10);
  const unknown = { count: 0 };
  const counted = (r, where) => {
    if (r.status !== 200) {
      if (/Session ID unknown/.test(r.body)) unknown.count++;
      fail(`${where}: ${r.status} ${r.body}`);
    }
    return r;
  };
  const base = "/socket.io/?EIO=4&transport=polling";
  const hs = counted(await request(A, "GET", base), "handshake on A");
  const open = JSON.parse(hs.body.slice(1));
  const sid = open.sid;
  result.sid = sid;
  const path = `${base}&sid=${encodeURIComponent(sid)}`;
  const nodes = [B, A];
  const name = (n) => (n === A ? "A" : "B");
  let step = 0;
  const next = () => nodes[step++ % 2];

  // Socket.IO connect to "/" on one node, its answer read on the other.
  let n = next();
  counted(await request(n, "POST", path, "40"), `connect POST on ${name(n)}`);
  const acks = new Map();
  let connected = false;
  const drain = (body) => {
    for (const p of packets(body)) {
      if (p.startsWith("40")) connected = true;
      const m = /^43(\d+)(.*)$/.exec(p);
      if (m) acks.set(parseInt(m[1], 10), JSON.parse(m[2]));
    }
  };
  for (let i = 0; i < 5 && !connected; i++) {
    n = next();
    drain(counted(await request(n, "GET", path), `GET on ${name(n)}`).body);
  }
  if (!connected) fail("no Socket.IO connect answer");

  // Each round: the event on one node, its ack fetched from the other.
  const perNode = { A: 0, B: 0 };
  for (let i = 1; i <= rounds; i++) {
    n = next();
    perNode[name(n)]++;
    counted(await request(n, "POST", path, `42${i}["echo","m-${i}"]`), `POST on ${name(n)}`);
    for (let tries = 0; tries < 5 && !acks.has(i); tries++) {
      n = next();
      perNode[name(n)]++;
      drain(counted(await request(n, "GET", path), `GET on ${name(n)}`).body);
    }
    const got = acks.get(i);
    if (!got || got[0] !== `m-${i}`) fail(`round ${i}: ack ${JSON.stringify(got)}`);
    if (PACE_MS > 0) {
      process.stderr.write(`progress ${i}\n`);
      await new Promise((r) => setTimeout(r, PACE_MS));
    }
  }
  result.requests = perNode;

  // The websocket upgrade goes to B.
  const ws = new WebSocket(`ws://${B.host}:${B.port}/socket.io/?EIO=4&transport=websocket&sid=${encodeURIComponent(sid)}`, {
    localAddress: CLIENT_ADDR,
  });
  const wsAcks = new Map();
  let probed = false;
  const wsDone = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("websocket: no answer within 10 s")), 10000);
    ws.on("unexpected-response", (_req, res) => {
      clearTimeout(t);
      reject(new Error(`websocket upgrade answered ${res.statusCode}`));
    });
    ws.on("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
    ws.on("open", () => ws.send("2probe"));
    ws.on("message", (data) => {
      const m = String(data);
      if (m === "3probe") {
        probed = true;
        ws.send("5");
        ws.send(`42900["echo","over-ws"]`);
        ws.send(`42901["stats"]`);
        return;
      }
      if (m === "2") return ws.send("3");
      const a = /^43(\d+)(.*)$/.exec(m);
      if (a) wsAcks.set(parseInt(a[1], 10), JSON.parse(a[2]));
      if (wsAcks.has(900) && wsAcks.has(901)) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  try {
    await wsDone;
  } catch (e) {
    if (/400/.test(e.message)) unknown.count++;
    fail(e.message);
  }
  ws.close();
  result.upgraded = probed;
  const echo = wsAcks.get(900);
  if (!echo || echo[0] !== "over-ws") fail(`websocket echo: ${JSON.stringify(echo)}`);
  const stats = wsAcks.get(901) && wsAcks.get(901)[0];
  result.forwardedFor = stats && stats.forwardedFor ? stats.forwardedFor[sid] || [] : null;
  result.sidHitsOnOwner = stats && stats.sidHits ? stats.sidHits[sid] : null;
  if (!result.forwardedFor || !result.forwardedFor.includes(CLIENT_ADDR)) {
    fail(`the owner's worker did not see the client address: ${JSON.stringify(result.forwardedFor)}`);
  }
  result.sessionIdUnknown = unknown.count;
  result.ok = result.errors.length === 0;
}

// Resolves with what the peer sent before closing (or null on timeout).
function exchange(target, bytes) {
  return new Promise((resolve) => {
    const s = net.connect(target.port, target.host);
    const got = [];
    const t = setTimeout(() => {
      s.destroy();
      resolve(null);
    }, 15000);
    s.on("connect", () => s.write(bytes));
    s.on("data", (d) => got.push(d));
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(t);
      resolve(Buffer.concat(got));
    });
  });
}

function sign(secret, parts) {
  const h = crypto.createHmac("sha256", secret);
  for (const p of parts) {
    const b = Buffer.from(p);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(b.length));
    h.update(len);
    h.update(b);
  }
  return h.digest("hex");
}

async function forge() {
  const target = hostPort(args[0]);
  const [secret, group, sid] = args.slice(1);
  const req = Buffer.from(`GET /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const vals = ["intruder", group, sid, CLIENT_ADDR, String(Date.now()), crypto.randomBytes(8).toString("hex"), String(req.length)];
  const text = Buffer.from(vals.join("\n") + "\n" + sign(secret, vals));
  const len = Buffer.alloc(2);
  len.writeUInt16BE(text.length);
  const got = await exchange(target, Buffer.concat([Buffer.from("CRF1"), len, text, req]));
  if (got === null) fail("the forged forward was not closed");
  else if (got.length) fail(`the forged forward got an answer: ${JSON.stringify(got.toString("latin1"))}`);
  result.ok = result.errors.length === 0;
}

async function garbage() {
  const target = hostPort(args[0]);
  const inputs = [Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), crypto.randomBytes(4096), Buffer.from("CRF1\xff\xff", "latin1")];
  const answers = await Promise.all(inputs.map((b) => exchange(target, b)));
  answers.forEach((got, i) => {
    if (got === null) fail(`garbage ${i} was not closed`);
    else if (got.length) fail(`garbage ${i} got an answer`);
  });
  result.closed = answers.filter((a) => a !== null).length;
  result.ok = result.errors.length === 0;
}

// Opens a polling session (handshake and Socket.IO connect) on one node and leaves it open.
async function open() {
  const A = hostPort(args[0]);
  const base = "/socket.io/?EIO=4&transport=polling";
  const hs = await request(A, "GET", base);
  if (hs.status !== 200) return fail(`handshake: ${hs.status} ${hs.body}`);
  result.sid = JSON.parse(hs.body.slice(1)).sid;
  const r = await request(A, "POST", `${base}&sid=${encodeURIComponent(result.sid)}`, "40");
  if (r.status !== 200) fail(`connect: ${r.status} ${r.body}`);
  result.ok = result.errors.length === 0;
}

const scenarios = { alternate, forge, garbage, open };
const run = scenarios[scenario];
if (!run) {
  fail(`unknown scenario ${scenario}`);
  finish();
} else {
  run()
    .catch((e) => fail(e && e.stack ? e.stack : e))
    .finally(finish);
}
