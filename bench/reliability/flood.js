// One bounded flood against a sticky port, sampling the daemon's RSS and fds.
//
//   node flood.js <port> <daemonPid> <kind> <count> [holdSeconds]
//
// kind:
//   partial-head   an 8 KiB head that never ends
//   slow-body      a complete head, 50 KB of a 60 KB body, then nothing
//   unknown-sid    a POST for a session nobody has, 100 KB of a 900 KB body, then nothing
//   idle           connect, send nothing
//
// Opens at most <count> connections (loopback only), holds them <holdSeconds> (default 5)
// while sampling, then destroys them all and samples until RSS is flat for 2 s (at most 15 s).
// Prints one JSON line: counts of answers seen (by status), RSS before/peak/after, fds.
"use strict";
const net = require("net");
const fs = require("fs");

const [port, pid, kind, countArg, holdArg] = process.argv.slice(2);
const count = Math.min(parseInt(countArg, 10) || 1000, 20000);
const holdMs = Math.min((parseFloat(holdArg) || 5) * 1000, 60000);

function rssKb() {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? parseInt(m[1], 10) : 0;
  } catch {
    return 0;
  }
}
function fds() {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

function payload() {
  switch (kind) {
    case "partial-head":
      return "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Pad: " + "a".repeat(8 * 1024);
    case "slow-body":
      return "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + "b".repeat(50000);
    case "unknown-sid":
      return "POST /socket.io/?EIO=4&transport=polling&sid=NOSUCHSESSION0000000 HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n" + "c".repeat(100000);
    case "idle":
      return "";
    default:
      throw new Error(`unknown kind ${kind}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function handshake() {
  return new Promise((resolve) => {
    const req = require("http").get(
      { host: "127.0.0.1", port: +port, path: "/socket.io/?EIO=4&transport=polling", timeout: 10000, agent: false },
      (res) => {
        let b = "";
        res.on("data", (d) => (b += d));
        res.on("end", () => resolve(res.statusCode === 200 && b.includes("sid")));
      }
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}

async function main() {
  const before = rssKb();
  const fdsBefore = fds();
  const data = payload();
  const socks = [];
  const answers = {};
  let refused = 0;
  let peak = before;
  let peakFds = fdsBefore;
  const sample = () => {
    peak = Math.max(peak, rssKb());
    peakFds = Math.max(peakFds, fds());
  };
  const started = Date.now();
  for (let i = 0; i < count && Date.now() - started < 30000; i++) {
    await new Promise((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port: +port }, () => {
        if (data) s.write(data);
        resolve();
      });
      s.on("error", () => {
        refused++;
        resolve();
      });
      let first = true;
      s.on("data", (b) => {
        if (first) {
          first = false;
          const status = /^HTTP\/1\.1 (\d+)/.exec(b.toString("latin1"));
          const k = status ? status[1] : "other";
          answers[k] = (answers[k] || 0) + 1;
        }
      });
      socks.push(s);
    });
    if (i % 200 === 0) sample();
  }
  const opened = socks.length - refused;
  // With the flood held: the control socket must answer (FLOOD_DURING is a command, e.g.
  // "pm2 jlist"), and a fresh Engine.IO handshake must be served.
  let during = null;
  if (process.env.FLOOD_DURING) {
    const [cmd, ...args] = process.env.FLOOD_DURING.split(" ");
    const t = Date.now();
    const r = require("child_process").spawnSync(cmd, args, { timeout: 10000, stdio: ["ignore", "ignore", "pipe"] });
    during = { control_ok: r.status === 0, control_ms: Date.now() - t, handshake_ok: await handshake() };
  }
  const holdUntil = Date.now() + holdMs;
  while (Date.now() < holdUntil) {
    sample();
    await sleep(200);
  }
  for (const s of socks) s.destroy();
  // Flat for 2 s, or 15 s at most.
  let last = rssKb();
  let flatSince = Date.now();
  const endBy = Date.now() + 15000;
  while (Date.now() < endBy && Date.now() - flatSince < 2000) {
    await sleep(250);
    const now = rssKb();
    if (Math.abs(now - last) > 256) flatSince = Date.now();
    last = now;
  }
  console.log(
    JSON.stringify({
      kind,
      count,
      opened,
      refused,
      answers,
      rss_kb: { before, peak, after: rssKb() },
      fds: { before: fdsBefore, peak: peakFds, after: fds() },
      during,
      seconds: (Date.now() - started) / 1000,
    })
  );
  process.exit(0);
}
main();
