// An "express-style" cluster app on plain `http`: a middleware chain and a tiny
// router. Every answer is JSON with who served it.
//
// env: PORT (listen on it), PORT2 (a second server), SOCK (a unix socket
//      server), HOST (listen on PORT at that address only),
//      READY_AFTER_MS (process.send('ready') that long after listening),
//      DELAY_MS (answer GET / after that long), LOG_CONN=1 (log every
//      accepted connection as `conn <remotePort> <pid>` and every finished
//      response as `done <remotePort> <pid>`),
//      ON_ERROR=log (a server 'error' handler that logs `listen-error <json>`
//      and keeps running; without it the error is unhandled and Node crashes),
//      CRASH_IF_EXISTS=<path> (throw at startup while that file exists).
// stdout lines: `listening <pid> <what> <JSON of server.address()>`, `ready <pid> <epoch ms>`,
//      `disconnect <pid> <epoch ms>`, `sigint <pid>`.
const http = require("http");

if (process.env.CRASH_IF_EXISTS && require("fs").existsSync(process.env.CRASH_IF_EXISTS)) {
  throw new Error(`crashing on purpose: ${process.env.CRASH_IF_EXISTS} exists`);
}

const pid = process.pid;
const instance = process.env.NODE_APP_INSTANCE === undefined ? null : process.env.NODE_APP_INSTANCE;
let ready = false;
let served = 0;

// --- a tiny express: app.use(mw), app.get(path, handler), next() chains ----
function makeApp() {
  const stack = [];
  const app = (req, res) => {
    let i = 0;
    const next = (err) => {
      const layer = stack[i++];
      if (!layer) {
        res.statusCode = err ? 500 : 404;
        return res.end(JSON.stringify({ error: err ? String(err) : "not found", pid }));
      }
      if (layer.method && layer.method !== req.method) return next(err);
      if (layer.path && layer.path !== req.path) return next(err);
      try {
        layer.fn(req, res, next);
      } catch (e) {
        next(e);
      }
    };
    next();
  };
  app.use = (fn) => stack.push({ fn });
  app.get = (path, fn) => stack.push({ method: "GET", path, fn });
  return app;
}

const app = makeApp();
app.use((req, res, next) => {
  const u = new URL(req.url, "http://x");
  req.path = u.pathname;
  req.query = Object.fromEntries(u.searchParams);
  res.json = (v) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(v));
  };
  served++;
  next();
});
app.use((req, res, next) => {
  res.setHeader("x-powered-by", "router_app");
  next();
});
const who = (req) => ({ instance, pid, ready, served, port: req.socket.localPort || null, path: req.path });
app.get("/", (req, res) => {
  const ms = Number(process.env.DELAY_MS || 0);
  if (ms > 0) setTimeout(() => res.json(who(req)), ms);
  else res.json(who(req));
});
app.get("/slow", (req, res) => setTimeout(() => res.json(who(req)), Number(req.query.ms || 500)));

function serve(what, ...listenArgs) {
  const server = http.createServer(app);
  if (process.env.LOG_CONN === "1") {
    server.on("connection", (s) => console.log(`conn ${s.remotePort} ${pid}`));
    server.on("request", (req, res) => res.on("finish", () => console.log(`done ${req.socket.remotePort} ${pid}`)));
  }
  if (process.env.ON_ERROR === "log") {
    server.on("error", (e) => {
      const { code, errno, syscall, address, port, message } = e;
      console.log(`listen-error ${JSON.stringify({ code, errno, syscall, address, port, message })}`);
    });
  }
  server.listen(...listenArgs, () => {
    console.log(`listening ${pid} ${what} ${JSON.stringify(server.address())}`);
    if (what === "main" && process.env.READY_AFTER_MS !== undefined) {
      setTimeout(() => {
        ready = true;
        console.log(`ready ${pid} ${Date.now()}`);
        process.send("ready");
      }, Number(process.env.READY_AFTER_MS));
    }
  });
  return server;
}

const servers = [];
if (process.env.PORT) {
  const port = Number(process.env.PORT);
  servers.push(process.env.HOST ? serve("main", port, process.env.HOST) : serve("main", port));
}
if (process.env.PORT2) servers.push(serve("second", Number(process.env.PORT2)));
if (process.env.SOCK) servers.push(serve("unix", process.env.SOCK));

process.on("disconnect", () => console.log(`disconnect ${pid} ${Date.now()}`));
process.on("SIGINT", () => {
  console.log(`sigint ${pid}`);
  let open = servers.length;
  if (open === 0) process.exit(0);
  for (const s of servers) s.close(() => --open === 0 && process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
});
