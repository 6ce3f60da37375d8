// socket.io-client driver for Corral's multi-node tests: two nodes (two daemons), each
// running sio_worker.js, joined through Redis.
//
//   node tests/node/sio_multi.js <scenario> <portA> <portB> [arg]
//
// Prints ONE line of JSON {"scenario", "ok", "errors", ...} and exits 0 when ok. Every wait
// is bounded; the whole run by SIO_TIMEOUT_MS (default 40000).
//
// Scenarios:
//   cluster <workers>  4 clients on each node. Waits until every node's serverCount is
//                      <workers>; then io.emit (text + binary) from a client of B reaches
//                      every client of both nodes; a room with members on both nodes gets
//                      exactly its members; fetchSockets() on A sees all 8 sockets;
//                      serverSideEmit with acks from A gets <workers>-1 answers.
//   count <n>          (portB unused) polls serverCount through a client of A until it is n;
//                      reports how long that took (ms).
//   paced <count>      a client of B triggers <count> io.emit, one every SIO_PACE_MS (20),
//                      a client of A must receive each exactly once and in order. Prints
//                      "progress <i>" on stderr as it sends. With SIO_WATCH_COUNT=<n>, another
//                      client of B asks serverCount every 100 ms meanwhile: every answer must
//                      be <n> (the other node's workers must never seem gone).
"use strict";
const { io } = require("socket.io-client");

const [scenario, aArg, bArg, extra] = process.argv.slice(2);
const A = parseInt(aArg || "", 10);
const B = parseInt(bArg || "", 10);
const TIMEOUT_MS = parseInt(process.env.SIO_TIMEOUT_MS || "40000", 10) || 40000;
const ACK_TIMEOUT_MS = 6000;
const result = { scenario: scenario || null, ok: false, errors: [] };
const clients = [];
let finished = false;

function fail(msg) {
  if (result.errors.length < 20) result.errors.push(String(msg));
}

function finish() {
  if (finished) return;
  finished = true;
  for (const c of clients) {
    try {
      c.socket.close();
    } catch (_) {
      // best effort
    }
  }
  if (result.errors.length) result.ok = false;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = result.ok ? 0 : 1;
  setTimeout(() => process.exit(), 300).unref();
}

setTimeout(() => {
  fail(`scenario timed out after ${TIMEOUT_MS} ms`);
  finish();
}, TIMEOUT_MS).unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(port) {
  return new Promise((resolve, reject) => {
    const socket = io(`http://127.0.0.1:${port}`, { forceNew: true, reconnection: false, timeout: 8000 });
    const c = { socket, port, hello: null, bcasts: [], roomMsgs: [] };
    clients.push(c);
    const t = setTimeout(() => reject(new Error(`no hello from port ${port}`)), 8000);
    socket.on("hello", (me) => {
      clearTimeout(t);
      c.hello = me;
      resolve(c);
    });
    socket.on("connect_error", (e) => {
      clearTimeout(t);
      reject(new Error(`connect_error on ${port}: ${e.message}`));
    });
    socket.on("bcast", (m) => c.bcasts.push(m));
    socket.on("room-msg", (m) => c.roomMsgs.push(m));
  });
}

const ack = (c, ev, ...args) => c.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(ev, ...args);

async function waitFor(pred, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return true;
    await sleep(25);
  }
  return pred();
}

// Polls "count" on client c until serverCount == n; returns the last answer.
async function untilServerCount(c, n, ms) {
  const deadline = Date.now() + ms;
  let last = null;
  while (Date.now() < deadline) {
    try {
      last = await ack(c, "count");
      if (last.serverCount === n) return last;
    } catch (e) {
      last = { error: e.message };
    }
    await sleep(50);
  }
  return last;
}

const BIN = [0, 1, 2, 127, 128, 255];

const scenarios = {
  async cluster() {
    const workers = parseInt(extra || "4", 10);
    const onA = await Promise.all([0, 1, 2, 3].map(() => connect(A)));
    const onB = await Promise.all([0, 1, 2, 3].map(() => connect(B)));
    const all = onA.concat(onB);
    result.pidsA = [...new Set(onA.map((c) => c.hello.pid))].length;
    result.pidsB = [...new Set(onB.map((c) => c.hello.pid))].length;

    // serverCount on every worker the clients reached.
    const counts = [];
    for (const c of all) {
      const last = await untilServerCount(c, workers, 20000);
      counts.push(last && last.serverCount);
    }
    result.serverCounts = counts;
    if (!counts.every((n) => n === workers)) fail(`serverCount not ${workers} everywhere: ${counts}`);

    // io.emit from B reaches every client of both nodes, text and binary intact.
    const text = `from-b-${Date.now()}`;
    await ack(onB[0], "broadcast", text);
    const got = await waitFor(() => all.every((c) => c.bcasts.some((m) => m.text === text)), 10000);
    if (!got) fail(`broadcast from B missed by ${all.filter((c) => !c.bcasts.some((m) => m.text === text)).length} clients`);
    for (const c of all) {
      const m = c.bcasts.find((x) => x.text === text);
      if (m && JSON.stringify([...Buffer.from(m.bin)]) !== JSON.stringify(BIN)) fail(`binary altered: ${[...m.bin]}`);
      if (c.bcasts.filter((x) => x.text === text).length > 1) fail("broadcast delivered twice");
    }
    result.broadcast = got;

    // A room with one member per node, emitted from the other side.
    const room = `r${Date.now()}`;
    const members = [onA[1], onB[2]];
    for (const m of members) await ack(m, "join", room);
    await ack(onB[3], "to-room", room, "hi");
    const roomOk = await waitFor(() => members.every((c) => c.roomMsgs.some((m) => m.room === room)), 10000);
    await sleep(300); // let a wrong delivery show up
    const extraRcpt = all.filter((c) => !members.includes(c) && c.roomMsgs.some((m) => m.room === room)).length;
    if (!roomOk) fail("room members on both nodes did not all get the room emit");
    if (extraRcpt) fail(`${extraRcpt} non-members got the room emit`);
    result.rooms = roomOk && !extraRcpt;

    // fetchSockets on A sees B's sockets too.
    const f = await ack(onA[0], "count");
    result.fetchSocketsOnA = f.sockets;
    if (f.sockets !== all.length) fail(`fetchSockets on A: ${f.sockets}, expected ${all.length}`);

    // serverSideEmit with acks from A: one answer per other worker.
    const s = await ack(onA[0], "sse");
    result.sseResponses = s.responses.length;
    if (s.err || s.responses.length !== workers - 1) fail(`serverSideEmit: ${JSON.stringify(s)}`);
    return true;
  },

  async count() {
    const n = parseInt(extra || "0", 10);
    const c = await connect(A);
    const t0 = Date.now();
    const last = await untilServerCount(c, n, TIMEOUT_MS - 2000);
    result.ms = Date.now() - t0;
    result.last = last;
    if (!last || last.serverCount !== n) fail(`serverCount did not become ${n}: ${JSON.stringify(last)}`);
    return true;
  },

  async paced() {
    const count = parseInt(extra || "200", 10);
    const pace = parseInt(process.env.SIO_PACE_MS || "20", 10);
    const rx = await connect(A);
    const tx = await connect(B);
    // The nodes see each other once a broadcast crosses: wait for one before counting.
    const probe = `probe-${Date.now()}`;
    let seen = false;
    for (let i = 0; i < 100 && !seen; i++) {
      await ack(tx, "broadcast", probe);
      seen = await waitFor(() => rx.bcasts.some((m) => m.text === probe), 200);
    }
    if (!seen) {
      fail("no broadcast from B reached A before the paced run");
      return false;
    }
    const watchN = parseInt(process.env.SIO_WATCH_COUNT || "", 10);
    let watching = watchN > 0;
    const watched = [];
    const watcher = watching
      ? (async () => {
          const w = await connect(B);
          while (watching) {
            try {
              watched.push((await ack(w, "count")).serverCount);
            } catch (e) {
              watched.push(`error: ${e.message}`);
            }
            await sleep(100);
          }
        })()
      : Promise.resolve();
    const tag = `p${Date.now()}-`;
    for (let i = 0; i < count; i++) {
      await ack(tx, "broadcast", tag + i);
      process.stderr.write(`progress ${i}\n`);
      await sleep(pace);
    }
    const all = () => rx.bcasts.filter((m) => typeof m.text === "string" && m.text.startsWith(tag)).length >= count;
    await waitFor(all, 20000);
    await sleep(300); // let a duplicate show up
    watching = false;
    await watcher;
    if (watchN > 0) {
      const off = watched.filter((n) => n !== watchN);
      result.countAnswers = watched.length;
      result.countOff = off.length;
      if (!watched.length) fail("serverCount was never answered");
      if (off.length) fail(`serverCount not ${watchN} in ${off.length} of ${watched.length} answers: ${off.slice(0, 10)}`);
    }
    const got = rx.bcasts.filter((m) => typeof m.text === "string" && m.text.startsWith(tag))
      .map((m) => parseInt(m.text.slice(tag.length), 10));
    result.received = got.length;
    const missing = [];
    for (let i = 0; i < count; i++) if (!got.includes(i)) missing.push(i);
    const dups = got.length - new Set(got).size;
    let outOfOrder = 0;
    for (let i = 1; i < got.length; i++) if (got[i] < got[i - 1]) outOfOrder++;
    result.missing = missing.length;
    result.duplicates = dups;
    result.outOfOrder = outOfOrder;
    if (missing.length) fail(`missing ${missing.length}: ${missing.slice(0, 10)}`);
    if (dups) fail(`${dups} duplicates`);
    if (outOfOrder) fail(`${outOfOrder} out of order`);
    return true;
  },
};

if (!(scenario in scenarios) || !(A > 0)) {
  fail("usage: node sio_multi.js <cluster|count|paced> <portA> <portB> [arg]");
  finish();
} else {
  scenarios[scenario]()
    .then((ok) => {
      result.ok = !!ok;
      finish();
    })
    .catch((e) => {
      fail(e && e.stack ? e.stack : e);
      finish();
    });
}
