// A cluster-mode app using prom-client's AggregatorRegistry as Node apps do: every worker
// constructs one (which makes it answer its cluster primary's metric requests) and counts
// in prom-client's default registry. Under Corral the daemon is the primary and serves the
// aggregate on its /metrics.
const http = require("http");
const client = require("prom-client");

new client.AggregatorRegistry();
// The default metrics too (heap, event loop, GC...), each with its own aggregator.
client.collectDefaultMetrics();

const instance = parseInt(process.env.NODE_APP_INSTANCE || "0", 10);
// Summed across workers (prom-client's default aggregator): 5 per worker.
const hits = new client.Counter({ name: "fixture_hits_total", help: "Hits counted by each worker.", labelNames: ["kind"] });
hits.inc({ kind: "boot" }, 5);
// The highest instance index across workers.
const top = new client.Gauge({ name: "fixture_top_instance", help: "Highest worker instance.", aggregator: "max" });
top.set(instance);
// Left out by the primary.
new client.Gauge({ name: "fixture_omitted", help: "Never aggregated.", aggregator: "omit" }).set(1);
const lat = new client.Histogram({ name: "fixture_latency_seconds", help: "Fake latencies.", buckets: [0.1, 1] });
lat.observe(0.05);

http
  .createServer((req, res) => res.end("ok\n"))
  .listen(parseInt(process.env.PORT || "3000", 10));
