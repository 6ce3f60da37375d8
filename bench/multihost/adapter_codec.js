// What one broadcast of the seed app costs the workers in each adapter's own encoding, with
// no process manager, no daemon and no Redis involved: only the code each worker runs to put
// the message on its transport and to take it off.
//
//   node --expose-internals bench/multihost/adapter_codec.js [messages=200000]
//
// - @socket.io/cluster-adapter: the worker calls process.send(); Node's cluster channel in
//   "advanced" serialization (needed for the seed app's binary payload) encodes it with
//   `writeChannelMessage` and the receiving worker decodes it with `parseChannelMessages`
//   (lib/internal/child_process/serialization.js, Node's own functions, reached with
//   --expose-internals). Receivers decode from reads of 64 frames, as the daemon batches them.
// - @socket.io/redis-adapter: the worker encodes [uid, packet, opts] with notepack and
//   @redis/client turns it into a PUBLISH command; each subscriber decodes the RESP push with
//   @redis/client's RESP2 decoder (reads of 64 pushes) and the payload with notepack.
//
// Per broadcast on 2 nodes x 2 workers: cluster-adapter = 1 encode + 3 decodes (the daemon
// does not send a frame back to its sender); redis-adapter = 1 encode + 4 decodes (Redis sends
// every subscriber the message, the sender included, which decodes it before it sees its own
// uid). Prints one JSON line: ns per encode, per decode, per broadcast, best of 5 runs.
"use strict";
const path = require("path");

let serialization;
try {
  serialization = require("internal/child_process/serialization");
} catch {
  console.error("adapter_codec.js: run it with node --expose-internals");
  process.exit(2);
}
const mods = path.join(__dirname, "redis-adapter/node_modules");
const notepack = require(path.join(mods, "notepack.io"));
const encodeCommand = require(path.join(mods, "@redis/client/dist/lib/client/RESP2/encoder.js")).default;
const RESP2Decoder = require(path.join(mods, "@redis/client/dist/lib/client/RESP2/decoder.js")).default;

const N = parseInt(process.argv[2] || "200000", 10);
const BATCH = 64;
// Reads of BATCH frames each; every run decodes READS * BATCH messages.
const READS = Math.max(1, Math.floor(N / BATCH));

// The seed app's broadcast (tests/node/sio_worker.js "broadcast"), as the adapters see it.
const me = { instance: "0", pid: 12345, sticky: "2.0.1" };
const packet = () => ({
  type: 2,
  data: ["bcast", { from: me, text: "l1764451200000-1234", bin: Buffer.from([0, 1, 2, 127, 128, 255]) }],
  nsp: "/",
});
const opts = { rooms: [], except: [], flags: {} };
const uid = "a1b2c3";
const channelName = "socket.io#/#";

function best(runs, f) {
  let min = Infinity;
  for (let r = 0; r < runs; r++) min = Math.min(min, f());
  return Math.round(min);
}
function timed(n, f) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f(i);
  return Number(process.hrtime.bigint() - t0) / n;
}

// --- cluster-adapter over Node's advanced channel ---
const adv = serialization.advanced;
let lastFrame = null;
const sink = { writeBuffer: (_req, buf) => ((lastFrame = buf), 0) };
const clusterMessage = () => ({
  type: 3,
  data: { packet: packet(), opts },
  uid,
  nsp: "/",
  source: "_sio_adapter",
});
adv.writeChannelMessage(sink, {}, clusterMessage(), null);
const oneFrame = Buffer.from(lastFrame);
const frameBatch = Buffer.concat(Array(BATCH).fill(oneFrame));
const clusterEncode = () => timed(N, () => adv.writeChannelMessage(sink, {}, clusterMessage(), null));
const clusterDecode = () => {
  const ch = {};
  adv.initMessageChannel(ch);
  let got = 0;
  const ns = timed(READS, () => {
    for (const m of adv.parseChannelMessages(ch, frameBatch)) if (m.data.packet.data[1].bin.length === 6) got++;
  });
  if (got !== READS * BATCH) throw new Error(`cluster decode: ${got} messages`);
  return ns / BATCH;
};

// --- redis-adapter: notepack + RESP ---
const redisEncode = () =>
  timed(N, () => encodeCommand(["PUBLISH", channelName, notepack.encode([uid, packet(), opts])]));
const payload = notepack.encode([uid, packet(), opts]);
const push = Buffer.concat([
  Buffer.from(`*4\r\n$8\r\npmessage\r\n$${channelName.length + 1}\r\n${channelName}*\r\n`),
  Buffer.from(`$${channelName.length}\r\n${channelName}\r\n$${payload.length}\r\n`),
  payload,
  Buffer.from("\r\n"),
]);
const pushBatch = Buffer.concat(Array(BATCH).fill(push));
const redisDecode = () => {
  let got = 0;
  const dec = new RESP2Decoder({
    returnStringsAsBuffers: () => true,
    onReply: (reply) => {
      const [u, p, o] = notepack.decode(reply[3]);
      o.rooms = new Set(o.rooms);
      o.except = new Set(o.except);
      if (u === uid && p.data[1].bin.length === 6) got++;
    },
  });
  const ns = timed(READS, () => dec.write(pushBatch));
  if (got !== READS * BATCH) throw new Error(`redis decode: ${got} messages`);
  return ns / BATCH;
};

const RUNS = 5;
const ce = best(RUNS, clusterEncode);
const cd = best(RUNS, clusterDecode);
const re = best(RUNS, redisEncode);
const rd = best(RUNS, redisDecode);
console.log(
  JSON.stringify({
    node: process.version,
    messages: N,
    frameBytes: { clusterAdapter: oneFrame.length, redisAdapter: push.length },
    nsPerEncode: { clusterAdapter: ce, redisAdapter: re },
    nsPerDecode: { clusterAdapter: cd, redisAdapter: rd },
    nsPerBroadcast2x2: { clusterAdapter: ce + 3 * cd, redisAdapter: re + 4 * rd },
  }),
);
