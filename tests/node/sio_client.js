// socket.io-client driver for Corral's integration tests.
//
//   node tests/node/sio_client.js <scenario> <port> [n]
//
// Connects to http://127.0.0.1:<port> (the sticky port) where sio_worker.js workers run, plays
// one scenario and prints ONE line of JSON:
//   {"scenario":..., "ok":true|false, "errors":[...], ...scenario fields}
// and exits 0 when ok. Every wait is bounded, and the whole run is bounded by SIO_TIMEOUT_MS
// (default 30000); on timeout it prints the line with ok:false.
//
// Scenarios (n = number of clients unless said otherwise):
//   default    n=4  default transports; every client upgrades to websocket; echo round trips
//   polling    n=4  polling only; echo round trips (some with 64 KB payloads); every HTTP request
//                   of each session reached the session's owner and no other worker
//   websocket  n=4  websocket only; echo round trips
//   broadcast  n=6  io.emit of text + binary triggered on each worker reaches every client
//   rooms      n=6  half the clients join a room; a room emit from each worker reaches exactly them
//   acks       n=4  emit with ack (string, number, object, binary) + broadcast with ack from all
//   fetch      n=4  fetchSockets() on each worker sees all n sockets; serverCount agrees
//   sse        n=4  serverSideEmit with ack from each worker gets one answer per other worker
//   burst      n=50 n simultaneous connects; reports the per-worker spread
//   load       n=200 sessions max, SIO_LOAD_MS (default 15000) max, SIO_CONCURRENCY (8) at a
//                   time: connect, echo, disconnect; reports failures
//   http       plain GET and a 300 KB binary POST (sent in 4 pieces) to /whoami through the port
//   exit       n=4  SIGKILLs one worker; a survivor's serverCount must drop (serverCountDropMs)
//                   while its fetchSockets() keeps answering (maxFetchMs)
//
// Workers are identified by pid; `instances` maps pid -> NODE_APP_INSTANCE.
"use strict";
const http = require("http");
const crypto = require("crypto");
const fs = require("fs");
const { io } = require("socket.io-client");

const DEFAULT_N = {
  default: 4, polling: 4, websocket: 4, broadcast: 6, rooms: 6, acks: 4,
  fetch: 4, sse: 4, burst: 50, load: 200, http: 1, exit: 4,
};
const MAX_N = 2000;
const ACK_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 8000;

const [scenario, portArg, nArg] = process.argv.slice(2);
const PORT = parseInt(portArg || "", 10);
const result = { scenario: scenario || null, port: PORT || null, ok: false, errors: [] };
const clients = [];
let finished = false;

function fail(msg) {
  if (result.errors.length < 20) result.errors.push(String(msg));
  else result.errorsTruncated = (result.errorsTruncated || 0) + 1;
}

function finish() {
  if (finished) return;
  finished = true;
  for (const c of clients) {
    try {
      c.socket.close();
    } catch (_) {
      // closing is best effort
    }
  }
  if (result.errors.length) result.ok = false;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = result.ok ? 0 : 1;
  setTimeout(() => process.exit(), 300).unref();
}

if (!scenario || !(scenario in DEFAULT_N) || !(PORT > 0 && PORT < 65536)) {
  fail(`usage: node sio_client.js <${Object.keys(DEFAULT_N).join("|")}> <port> [n]`);
  finish();
  return;
}
const N = Math.max(1, Math.min(MAX_N, parseInt(nArg || "", 10) || DEFAULT_N[scenario]));
const URL = `http://127.0.0.1:${PORT}`;
const TIMEOUT_MS = parseInt(process.env.SIO_TIMEOUT_MS || "30000", 10) || 30000;
result.n = N;

const guard = setTimeout(() => {
  fail(`scenario timed out after ${TIMEOUT_MS} ms`);
  finish();
}, TIMEOUT_MS);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves with a client once the worker greeted it; rejects on error or after the timeout.
function connect(transports, opts = {}) {
  return new Promise((resolve, reject) => {
    const socket = io(URL, {
      forceNew: true,
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...(transports ? { transports } : {}),
    });
    const c = { socket, hello: null, bcasts: [], roomMsgs: [], disconnects: [] };
    if (opts.track !== false) clients.push(c);
    const t = setTimeout(() => {
      socket.close();
      reject(new Error("no hello within timeout"));
    }, CONNECT_TIMEOUT_MS);
    socket.on("hello", (me) => {
      clearTimeout(t);
      c.hello = me;
      resolve(c);
    });
    socket.on("connect_error", (e) => {
      clearTimeout(t);
      socket.close();
      reject(new Error(`connect_error: ${e.message}`));
    });
    socket.on("disconnect", (reason) => c.disconnects.push(reason));
    socket.on("bcast", (m) => c.bcasts.push(m));
    socket.on("room-msg", (m) => c.roomMsgs.push(m));
    socket.on("need-ack", (cb) => typeof cb === "function" && cb(process.pid));
  });
}

function ack(c, ev, ...args) {
  return c.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(ev, ...args);
}

async function connectAll(count, transports) {
  const settled = await Promise.allSettled(Array.from({ length: count }, () => connect(transports)));
  const ok = [];
  for (const s of settled) {
    if (s.status === "fulfilled") ok.push(s.value);
    else fail(s.reason && s.reason.message);
  }
  result.connected = ok.length;
  return ok;
}

function byWorker(list) {
  const m = new Map();
  for (const c of list) {
    if (!c.hello) continue;
    if (!m.has(c.hello.pid)) m.set(c.hello.pid, []);
    m.get(c.hello.pid).push(c);
  }
  return m;
}

function describeSpread(list) {
  const spread = {};
  const instances = {};
  for (const [pid, cs] of byWorker(list)) {
    spread[pid] = cs.length;
    instances[pid] = cs[0].hello.instance;
  }
  result.spread = spread;
  result.instances = instances;
  result.workers = Object.keys(spread).length;
  const counts = Object.values(spread);
  result.maxMinusMin = counts.length ? Math.max(...counts) - Math.min(...counts) : 0;
}

function transportOf(c) {
  const engine = c.socket.io.engine;
  return engine && engine.transport ? engine.transport.name : null;
}

async function waitFor(pred, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return true;
    await sleep(25);
  }
  return pred();
}

async function echoRounds(list, rounds, payloadFor) {
  let okCount = 0;
  for (let r = 0; r < rounds; r++) {
    await Promise.all(list.map(async (c, i) => {
      const payload = payloadFor(r, i);
      try {
        const back = await ack(c, "echo", payload);
        if (JSON.stringify(back) === JSON.stringify(payload)) okCount++;
        else fail(`echo mismatch on client ${i} round ${r}`);
      } catch (e) {
        fail(`echo ${r}/${i}: ${e.message}`);
      }
    }));
  }
  result.echoes = okCount;
  return okCount === rounds * list.length;
}

const BIN = Buffer.from([0, 1, 2, 127, 128, 255]);

const scenarios = {
  async default() {
    const list = await connectAll(N);
    const upgraded = await waitFor(() => list.every((c) => transportOf(c) === "websocket"), 5000);
    result.transports = list.map(transportOf);
    if (!upgraded) fail("not every client upgraded to websocket");
    const echoed = await echoRounds(list, 5, (r, i) => ({ r, i, s: "héllo ✓" }));
    describeSpread(list);
    return list.length === N && upgraded && echoed;
  },

  async polling() {
    const list = await connectAll(N, ["polling"]);
    const big = "x".repeat(64 * 1024);
    const echoed = await echoRounds(list, 8, (r, i) => (r % 4 === 3 ? { r, i, big } : { r, i }));
    result.transports = list.map(transportOf);
    describeSpread(list);
    // Stickiness: ask each worker which sids it saw requests for.
    const seen = new Map(); // pid -> sidHits
    for (const [pid, cs] of byWorker(list)) {
      try {
        seen.set(pid, (await ack(cs[0], "stats")).sidHits);
      } catch (e) {
        fail(`stats from ${pid}: ${e.message}`);
      }
    }
    let misrouted = 0;
    for (const c of list) {
      const sid = c.socket.io.engine && c.socket.io.engine.id;
      const on = [...seen].filter(([, hits]) => hits[sid]).map(([pid]) => Number(pid));
      if (on.length !== 1 || on[0] !== c.hello.pid) {
        misrouted++;
        fail(`sid ${sid} (owner ${c.hello.pid}) seen on ${JSON.stringify(on)}`);
      }
    }
    result.misroutedSessions = misrouted;
    return list.length === N && echoed && misrouted === 0 && list.every((c) => transportOf(c) === "polling");
  },

  async websocket() {
    const list = await connectAll(N, ["websocket"]);
    result.transports = list.map(transportOf);
    const echoed = await echoRounds(list, 5, (r, i) => ({ r, i }));
    describeSpread(list);
    return list.length === N && echoed;
  },

  async broadcast() {
    // Mix transports: half default (upgraded), half polling only.
    const half = Math.ceil(N / 2);
    const list = [...(await connectAll(half)), ...(await connectAll(N - half, ["polling"]))];
    result.connected = list.length;
    describeSpread(list);
    const deliveries = {};
    let allOk = list.length === N;
    for (const [pid, cs] of byWorker(list)) {
      const text = `from-${pid}-${crypto.randomBytes(4).toString("hex")}`;
      try {
        await ack(cs[0], "broadcast", text);
      } catch (e) {
        fail(`broadcast trigger on ${pid}: ${e.message}`);
        allOk = false;
        continue;
      }
      const got = (c) => c.bcasts.find((m) => m.text === text);
      await waitFor(() => list.every(got), 3000);
      const delivered = list.filter(got).length;
      const badBinary = list.filter((c) => {
        const m = got(c);
        return m && !(Buffer.isBuffer(m.bin) && m.bin.equals(BIN));
      }).length;
      deliveries[pid] = { delivered, of: list.length, badBinary };
      if (delivered !== list.length || badBinary) {
        fail(`broadcast from ${pid}: ${delivered}/${list.length} delivered, ${badBinary} bad binary`);
        allOk = false;
      }
    }
    result.deliveries = deliveries;
    return allOk && result.workers > 0;
  },

  async rooms() {
    const list = await connectAll(N);
    describeSpread(list);
    const room = `room-${crypto.randomBytes(3).toString("hex")}`;
    // Every other client of each worker joins, so members and non-members sit on every worker.
    const members = [];
    const others = [];
    for (const cs of byWorker(list).values()) cs.forEach((c, i) => (i % 2 === 0 ? members : others).push(c));
    for (const c of members) {
      try {
        await ack(c, "join", room);
      } catch (e) {
        fail(`join: ${e.message}`);
      }
    }
    const checks = {};
    let allOk = list.length === N;
    for (const [pid, cs] of byWorker(list)) {
      const payload = `to-${room}-from-${pid}`;
      try {
        await ack(cs[0], "to-room", room, payload);
      } catch (e) {
        fail(`to-room from ${pid}: ${e.message}`);
        allOk = false;
        continue;
      }
      const got = (c) => c.roomMsgs.some((m) => m.payload === payload);
      await waitFor(() => members.every(got), 3000);
      await sleep(200); // give a wrong delivery time to show up
      const reached = members.filter(got).length;
      const leaked = others.filter(got).length;
      checks[pid] = { reached, members: members.length, leaked };
      if (reached !== members.length || leaked) {
        fail(`room emit from ${pid}: ${reached}/${members.length} members, ${leaked} non-members`);
        allOk = false;
      }
    }
    result.memberWorkers = [...new Set(members.map((c) => c.hello.pid))].length;
    result.roomChecks = checks;
    return allOk;
  },

  async acks() {
    const list = await connectAll(N);
    describeSpread(list);
    const payloads = ["text", 42, { nested: { a: [1, 2, 3] } }, null];
    let allOk = list.length === N;
    for (const c of list) {
      for (const p of payloads) {
        try {
          const back = await ack(c, "echo", p);
          if (JSON.stringify(back) !== JSON.stringify(p)) {
            fail(`ack mismatch ${JSON.stringify(p)}`);
            allOk = false;
          }
        } catch (e) {
          fail(`ack: ${e.message}`);
          allOk = false;
        }
      }
      try {
        const back = await ack(c, "echo", BIN);
        if (!(Buffer.isBuffer(back) && back.equals(BIN))) {
          fail("binary ack mismatch");
          allOk = false;
        }
      } catch (e) {
        fail(`binary ack: ${e.message}`);
        allOk = false;
      }
    }
    // Broadcast with ack: every client on every worker answers.
    const broadcastAcks = {};
    for (const [pid, cs] of byWorker(list)) {
      try {
        const r = await ack(cs[0], "bcast-ack");
        broadcastAcks[pid] = r;
        if (r.err || r.n !== list.length) {
          fail(`broadcast ack from ${pid}: ${JSON.stringify(r)}`);
          allOk = false;
        }
      } catch (e) {
        fail(`bcast-ack from ${pid}: ${e.message}`);
        allOk = false;
      }
    }
    result.broadcastAcks = broadcastAcks;
    return allOk;
  },

  async fetch() {
    const list = await connectAll(N);
    describeSpread(list);
    const counts = {};
    let allOk = list.length === N;
    for (const [pid, cs] of byWorker(list)) {
      try {
        const r = await ack(cs[0], "count");
        counts[pid] = { sockets: r.sockets, serverCount: r.serverCount, fetchMs: r.fetchMs };
        if (r.sockets !== list.length || !(r.serverCount >= result.workers)) {
          fail(`fetch on ${pid}: ${JSON.stringify(r)}`);
          allOk = false;
        }
      } catch (e) {
        fail(`count on ${pid}: ${e.message}`);
        allOk = false;
      }
    }
    const serverCounts = new Set(Object.values(counts).map((c) => c.serverCount));
    if (serverCounts.size > 1) {
      fail(`workers disagree on serverCount: ${[...serverCounts]}`);
      allOk = false;
    }
    result.counts = counts;
    result.serverCount = [...serverCounts][0];
    return allOk;
  },

  async sse() {
    const list = await connectAll(N);
    describeSpread(list);
    const answers = {};
    let allOk = list.length === N;
    for (const [pid, cs] of byWorker(list)) {
      try {
        const { serverCount } = await ack(cs[0], "count");
        const r = await ack(cs[0], "sse");
        const pids = r.responses.map((x) => x.pid);
        answers[pid] = { serverCount, responders: pids, err: r.err };
        if (r.err || pids.length !== serverCount - 1 || pids.includes(Number(pid))) {
          fail(`serverSideEmit from ${pid}: ${JSON.stringify(answers[pid])}`);
          allOk = false;
        }
      } catch (e) {
        fail(`sse from ${pid}: ${e.message}`);
        allOk = false;
      }
    }
    result.answers = answers;
    return allOk;
  },

  async burst() {
    const started = Date.now();
    const list = await connectAll(N);
    result.elapsedMs = Date.now() - started;
    result.failures = N - list.length;
    describeSpread(list);
    return list.length === N;
  },

  async load() {
    const budgetMs = parseInt(process.env.SIO_LOAD_MS || "15000", 10) || 15000;
    const concurrency = Math.max(1, Math.min(64, parseInt(process.env.SIO_CONCURRENCY || "8", 10) || 8));
    // SIO_PROGRESS_FILE: the completed count, rewritten after each session,
    // so a test can tell the load runs without sleeping. SIO_STOP_FILE: stop
    // launching once it exists (the budget stays the upper bound).
    const progressFile = process.env.SIO_PROGRESS_FILE;
    const stopFile = process.env.SIO_STOP_FILE;
    const stopped = () => stopFile !== undefined && fs.existsSync(stopFile);
    const started = Date.now();
    let launched = 0;
    let completed = 0;
    let failures = 0;
    const spread = {};
    async function lane(lane) {
      while (launched < N && Date.now() - started < budgetMs && !finished && !stopped()) {
        const k = launched++;
        // Alternate transports so both polling stickiness and upgrades are exercised.
        const transports = k % 3 === 2 ? ["polling"] : undefined;
        let c;
        try {
          c = await connect(transports, { track: false });
          const back = await ack(c, "echo", { k, lane });
          if (!back || back.k !== k) throw new Error("echo mismatch");
          if (c.disconnects.length) throw new Error(`disconnected: ${c.disconnects}`);
          spread[c.hello.pid] = (spread[c.hello.pid] || 0) + 1;
          completed++;
          if (progressFile) fs.writeFileSync(progressFile, String(completed));
        } catch (e) {
          failures++;
          fail(`session ${k}: ${e.message}`);
        } finally {
          if (c) c.socket.close();
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, (_, i) => lane(i)));
    Object.assign(result, {
      sessions: launched, completed, failures, elapsedMs: Date.now() - started,
      budgetMs, concurrency, spread, workers: Object.keys(spread).length,
    });
    return failures === 0 && completed > 0;
  },

  // SIGKILL one worker (pid from its greeting) and watch a survivor. With the
  // adapter close announced by the daemon, serverCount drops within ~1 s and fetchSockets()
  // stays fast; without it, ~10 s and 5 s stalls. The daemon may restart the worker meanwhile,
  // so the first drop is what counts.
  async exit() {
    const list = await connectAll(N);
    describeSpread(list);
    const groups = [...byWorker(list)];
    if (groups.length < 2) {
      fail("need clients on at least 2 workers");
      return false;
    }
    const [victimPid] = groups[0];
    const survivor = groups[1][1][0];
    const before = await ack(survivor, "count");
    result.killed = victimPid;
    result.serverCountBefore = before.serverCount;
    process.kill(victimPid, "SIGKILL");
    const killedAt = Date.now();
    let dropMs = null;
    let maxFetchMs = 0;
    // Without the daemon's adapter close the survivor notices only after the
    // adapter's heartbeat timeout; the test sets that far beyond this window.
    const windowMs = parseInt(process.env.SIO_EXIT_WINDOW_MS || "8000", 10) || 8000;
    while (Date.now() - killedAt < windowMs) {
      const r = await ack(survivor, "count");
      maxFetchMs = Math.max(maxFetchMs, r.fetchMs);
      if (typeof r.sockets !== "number") fail(`fetchSockets on survivor: ${r.sockets}`);
      if (r.serverCount < before.serverCount) {
        dropMs = Date.now() - killedAt;
        break;
      }
      await sleep(100);
    }
    Object.assign(result, { serverCountDropMs: dropMs, maxFetchMs });
    if (dropMs === null) fail("survivor never stopped counting the dead worker");
    return dropMs !== null && survivor.socket.connected;
  },

  async http() {
    const get = await request("GET", "/whoami");
    const body = crypto.randomBytes(300 * 1024);
    const sha = crypto.createHash("sha1").update(body).digest("hex");
    const post = await request("POST", "/whoami", body);
    result.get = get;
    result.post = { ...post, shaOk: post.bodySha1 === sha };
    if (post.bodyLen !== body.length || post.bodySha1 !== sha) fail("POST body mismatch");
    return get.method === "GET" && post.bodyLen === body.length && post.bodySha1 === sha;
  },
};

// One request on its own connection; a body is written in 4 pieces with pauses so it spans
// several TCP segments.
function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1", port: PORT, method, path, agent: false,
      headers: body ? { "content-length": body.length, "content-type": "application/octet-stream" } : {},
    }, (res) => {
      const chunks = [];
      res.on("data", (d) => chunks.push(d));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        try {
          resolve({ status: res.statusCode, ...JSON.parse(text) });
        } catch (_) {
          reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        }
      });
    });
    req.setTimeout(ACK_TIMEOUT_MS, () => req.destroy(new Error("http timeout")));
    req.on("error", reject);
    if (!body) return req.end();
    const pieces = 4;
    const size = Math.ceil(body.length / pieces);
    let i = 0;
    const next = () => {
      if (i >= pieces) return req.end();
      req.write(body.subarray(i * size, (i + 1) * size));
      i++;
      setTimeout(next, 30);
    };
    next();
  });
}

scenarios[scenario]()
  .then((ok) => {
    result.ok = Boolean(ok);
  })
  .catch((e) => {
    fail(`exception: ${e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e}`);
  })
  .finally(() => {
    clearTimeout(guard);
    finish();
  });
