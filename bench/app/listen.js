// A plain Node cluster-mode app (row 8): every worker calls listen(BENCH_APP_PORT); the cluster primary
// (the process manager's daemon) owns the socket and hands accepted connections to the workers.
// Every response closes its connection so each request costs the primary one accept + hand-off.
const http = require("http");
const pid = String(process.pid);
const port = Number(process.env.BENCH_APP_PORT || 0);
if (!port) {
  console.error("BENCH_APP_PORT is not set");
  process.exit(1);
}
let served = 0;
const dir = process.env.BENCH_STATE_DIR;
if (dir) {
  const file = require("path").join(dir, `w-${pid}.json`);
  const write = () => {
    try {
      require("fs").writeFileSync(file + ".tmp", JSON.stringify({ pid: Number(pid), http: served }));
      require("fs").renameSync(file + ".tmp", file);
    } catch (_) {}
  };
  setInterval(write, 500).unref();
  process.on("exit", write);
}
http
  .createServer((req, res) => {
    served++;
    res.writeHead(200, { "content-type": "text/plain", "x-worker-pid": pid, connection: "close" });
    res.end("ok " + pid);
  })
  .listen(port, "127.0.0.1");
