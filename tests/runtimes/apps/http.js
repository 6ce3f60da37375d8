// A plain http server: every worker of a cluster app listens on PORT and
// answers with its pid, its runtime and its instance number, after DELAY_MS
// milliseconds when set (so a reload under load always finds requests in
// flight on the worker it retires).
const http = require("node:http");
const runtime = typeof Bun !== "undefined" ? "bun" : typeof Deno !== "undefined" ? "deno" : "node";
const port = Number(process.env.PORT || 0);
const host = process.env.HOST || "127.0.0.1";
const delay = Number(process.env.DELAY_MS || 0);
const server = http.createServer((req, res) => {
  res.setHeader("connection", "close");
  const body = JSON.stringify({ pid: process.pid, runtime, instance: process.env.NODE_APP_INSTANCE });
  if (delay > 0) setTimeout(() => res.end(body), delay);
  else res.end(body);
});
server.listen(port, host, () => {
  console.log(`listening ${runtime} ${process.pid} on ${JSON.stringify(server.address())}`);
});
