// Plain cluster-mode HTTP app: listens on PORT (shared through the daemon's cluster primary)
// and answers every request with who served it. Used to check round-robin spreading, reloads
// without dropped requests, and that sticky traffic never reaches a non-socket.io app.
const http = require("http");

const me = {
  instance: process.env.NODE_APP_INSTANCE === undefined ? null : process.env.NODE_APP_INSTANCE,
  pid: process.pid,
};

const server = http.createServer((req, res) => {
  let len = 0;
  req.on("data", (chunk) => {
    len += chunk.length;
  });
  req.on("end", () => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ...me, method: req.method, url: req.url, bodyLen: len }));
  });
});

server.listen(parseInt(process.env.PORT || "3000", 10), () => {
  if (process.env.SEND_READY === "1" && typeof process.send === "function") process.send("ready");
});

// Let pm2-style stops (SIGINT) finish in-flight requests.
process.on("SIGINT", () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
