// A cluster worker that never calls listen() and never sends 'ready' (like a
// sticky Socket.IO worker before setupWorker): only listen_timeout ends a
// reload's or a wait_ready start's wait for it.
console.log(`up ${process.pid}`);
setInterval(() => {}, 1000);
process.on("SIGINT", () => process.exit(0));
