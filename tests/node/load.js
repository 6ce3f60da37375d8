// Bounded HTTP load generator for the cluster tests.
//
//   node load.js port=<p> | socket=<path>  [lanes=8] [count=2000] [ms=5000] [path=/] [timeout=5000]
//
// `lanes` requests run at a time, each on a new connection (`agent: false`, so
// `Connection: close`). It stops starting requests once `count` were started
// or `ms` passed, waits for the ones in flight (each bounded by `timeout`),
// and prints exactly one JSON line on stdout:
//   {"sent","ok","failed","elapsedMs","spread":{pid:n},"failures":[...],"okAfterFirstFailure"}
// `failures` (at most 100) carry the client's local port (`localPort`, null if
// the connection never opened), the error code/message and the epoch ms
// (`at`). On stderr it prints `started` after the first successful response,
// so a test can act while load is running. Exit code 0 unless a usage error.
const http = require("http");

const opts = { lanes: 8, count: 2000, ms: 5000, path: "/", timeout: 5000 };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i < 0) {
    console.error(`bad argument ${a}`);
    process.exit(2);
  }
  opts[a.slice(0, i)] = a.slice(i + 1);
}
for (const k of ["lanes", "count", "ms", "timeout"]) opts[k] = Number(opts[k]);
if (!opts.port && !opts.socket) {
  console.error("port= or socket= is required");
  process.exit(2);
}

const t0 = Date.now();
let sent = 0;
let ok = 0;
let failed = 0;
let started = false;
let firstFailureAt = null;
let okAfterFirstFailure = 0;
const spread = {};
const failures = [];

function fail(localPort, code, message) {
  failed++;
  const at = Date.now();
  if (firstFailureAt === null) firstFailureAt = at;
  if (failures.length < 100) failures.push({ localPort, code, message, at });
}

function one() {
  return new Promise((resolve) => {
    let localPort = null;
    let done = false;
    const finish = (err, body) => {
      if (done) return;
      done = true;
      if (err) {
        fail(localPort, err.code || "ERR", err.message);
      } else {
        let pid = "?";
        try {
          pid = String(JSON.parse(body).pid);
        } catch (_) {
          fail(localPort, "BADBODY", body.slice(0, 200));
          return resolve();
        }
        ok++;
        if (firstFailureAt !== null) okAfterFirstFailure++;
        spread[pid] = (spread[pid] || 0) + 1;
        if (!started) {
          started = true;
          process.stderr.write("started\n");
        }
      }
      resolve();
    };
    const req = http.request(
      {
        host: "127.0.0.1",
        port: opts.port ? Number(opts.port) : undefined,
        socketPath: opts.socket || undefined,
        path: opts.path,
        agent: false,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (body += c));
        res.on("end", () => {
          if (res.statusCode !== 200) finish({ code: `HTTP${res.statusCode}`, message: body.slice(0, 200) });
          else finish(null, body);
        });
        res.on("error", (e) => finish(e));
      }
    );
    req.on("socket", (s) => s.on("connect", () => (localPort = s.localPort === undefined ? null : s.localPort)));
    req.setTimeout(opts.timeout, () => {
      req.destroy(Object.assign(new Error(`no answer within ${opts.timeout}ms`), { code: "TIMEOUT" }));
    });
    req.on("error", (e) => finish(e));
    req.end();
  });
}

async function lane() {
  while (sent < opts.count && Date.now() - t0 < opts.ms) {
    sent++;
    await one();
  }
}

Promise.all(Array.from({ length: opts.lanes }, lane)).then(() => {
  console.log(
    JSON.stringify({ sent, ok, failed, elapsedMs: Date.now() - t0, spread, failures, okAfterFirstFailure })
  );
});
