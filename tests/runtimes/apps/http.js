// A plain http server: every worker of a cluster app listens on PORT and
// answers with its pid, its runtime and its instance number.
const http = require("node:http");
const runtime = typeof Bun !== "undefined" ? "bun" : typeof Deno !== "undefined" ? "deno" : "node";
const port = Number(process.env.PORT || 0);
const host = process.env.HOST || "127.0.0.1";
const server = http.createServer((req, res) => {
  res.setHeader("connection", "close");
  res.end(JSON.stringify({ pid: process.pid, runtime, instance: process.env.NODE_APP_INSTANCE }));
});
server.listen(port, host, () => {
  console.log(`listening ${runtime} ${process.pid} on ${JSON.stringify(server.address())}`);
});
