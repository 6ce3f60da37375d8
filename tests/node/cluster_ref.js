// Reference: runs SCRIPT as a worker of Node's own cluster primary (round
// robin) and relays the worker's stdout. Exits with the worker's exit code,
// or 0 as soon as the worker prints a line starting with REF_UNTIL. Lets a
// test compare what an app sees under Corral with what it sees under Node.
//   node cluster_ref.js <script>   (env is passed through)
const cluster = require("cluster");
cluster.schedulingPolicy = cluster.SCHED_RR;
cluster.setupPrimary({ exec: process.argv[2], stdio: ["ignore", "pipe", "inherit", "ipc"] });
const w = cluster.fork();
const until = process.env.REF_UNTIL;
let buf = "";
w.process.stdout.on("data", (c) => {
  process.stdout.write(c);
  buf += c;
  if (until && buf.split("\n").some((l) => l.startsWith(until))) {
    w.process.kill("SIGKILL");
    process.exit(0);
  }
});
w.on("exit", (code) => process.exit(code === null ? 128 : code));
setTimeout(() => {
  w.process.kill("SIGKILL");
  process.exit(124);
}, Number(process.env.REF_TIMEOUT_MS || 10000)).unref();
