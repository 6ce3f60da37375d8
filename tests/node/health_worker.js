// Socket.IO worker with a health endpoint, for Corral's health-check tests: the sio_worker.js
// app plus an HTTP server on its own PORT (increment_var gives each instance PORT+i) whose
// /health answers 200, or 503 while a flag file exists in HEALTH_DIR:
//   unready-<pid>   this worker is unready (toggled by the test)
//   unready-all     every worker is unready
//   unready-new     workers started while it exists are unready for good (a reload's new worker)
"use strict";
require("./sio_worker.js");
const http = require("http");
const fs = require("fs");
const path = require("path");

const dir = process.env.HEALTH_DIR || "/nonexistent";
const bornUnready = fs.existsSync(path.join(dir, "unready-new"));
const unready = () =>
  bornUnready ||
  fs.existsSync(path.join(dir, `unready-${process.pid}`)) ||
  fs.existsSync(path.join(dir, "unready-all"));

http
  .createServer((req, res) => {
    if (req.url === "/health") {
      const bad = unready();
      res.statusCode = bad ? 503 : 200;
      res.end(bad ? "unready" : "ok");
    } else {
      res.statusCode = 404;
      res.end();
    }
  })
  .listen(Number(process.env.PORT), "127.0.0.1");
