// Connects N socket.io clients to the cluster, has each one send a chat message, and checks that
// every client received every message, whichever worker it is connected to.
//
//   node sio_client.js [N]      (default 10; PORT env, default 8080; host 127.0.0.1;
//                                WS_ONLY=1: websocket transport only, for apps without sticky sessions)
//
// Prints a summary and exits 0 when every client connected, was greeted and got all N messages.
const { io } = require("socket.io-client");

const N = Math.max(1, Math.min(500, parseInt(process.argv[2] || process.env.N || "10", 10) || 10));
const PORT = parseInt(process.env.PORT || "8080", 10);
const URL = `http://127.0.0.1:${PORT}`;
const TIMEOUT_MS = 20000;

const clients = [];
const errors = [];

function connect(i) {
  return new Promise((resolve) => {
    const opts = { forceNew: true, reconnection: false, timeout: 5000 };
    if (process.env.WS_ONLY) opts.transports = ["websocket"];
    const socket = io(URL, opts);
    const c = { i, socket, pid: null, chats: new Set() };
    clients.push(c);
    socket.on("hello", (pid) => {
      c.pid = pid;
      resolve(c);
    });
    socket.on("chat", ({ msg }) => c.chats.add(msg));
    socket.on("connect_error", (e) => {
      errors.push(`client ${i}: connect_error ${e.message}`);
      resolve(c);
    });
  });
}

function summary() {
  const perWorker = {};
  for (const c of clients) if (c.pid) perWorker[c.pid] = (perWorker[c.pid] || 0) + 1;
  const complete = clients.filter((c) => c.chats.size === N).length;
  const transports = {};
  for (const c of clients) {
    const t = c.socket.io.engine && c.socket.io.engine.transport ? c.socket.io.engine.transport.name : "none";
    transports[t] = (transports[t] || 0) + 1;
  }
  return {
    url: URL,
    clients: N,
    greeted: clients.filter((c) => c.pid).length,
    clientsPerWorkerPid: perWorker,
    transports,
    messagesExpectedPerClient: N,
    clientsWithAllMessages: complete,
    errors,
  };
}

let done = false;
function finish(ok) {
  if (done) return;
  done = true;
  const s = summary();
  s.ok = ok && errors.length === 0 && s.greeted === N && s.clientsWithAllMessages === N;
  console.log(JSON.stringify(s, null, 2));
  for (const c of clients) c.socket.close();
  process.exitCode = s.ok ? 0 : 1;
  setTimeout(() => process.exit(), 200).unref();
}

const guard = setTimeout(() => {
  errors.push(`timed out after ${TIMEOUT_MS} ms`);
  finish(false);
}, TIMEOUT_MS);

(async () => {
  await Promise.all(Array.from({ length: N }, (_, i) => connect(i)));
  const live = clients.filter((c) => c.pid);
  for (const c of live) c.socket.emit("chat", `message from client ${c.i}`);
  // Wait until every client has every message, polling briefly (bounded by the guard timer).
  for (let n = 0; n < 200 && !done; n++) {
    if (clients.every((c) => c.chats.size === N)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  clearTimeout(guard);
  finish(true);
})().catch((e) => {
  errors.push(`exception: ${e.message}`);
  finish(false);
});
