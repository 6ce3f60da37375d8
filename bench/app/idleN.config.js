// Scale curves (row 10): BENCH_APPS idle fork-mode apps (a shell `sleep`, so 1000 fit in memory).
const path = require("path");
module.exports = {
  apps: Array.from({ length: Number(process.env.BENCH_APPS || 10) }, (_, i) => ({
    name: `idle-${String(i).padStart(4, "0")}`,
    script: path.join(__dirname, "idle.sh"),
    interpreter: "none",
    exec_mode: "fork",
    autorestart: true,
  })),
};
