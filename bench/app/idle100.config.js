// 100 idle fork-mode apps (footprint row 1b).
const path = require("path");
module.exports = {
  apps: Array.from({ length: 100 }, (_, i) => ({
    name: `idle-${String(i).padStart(3, "0")}`,
    script: path.join(__dirname, "idle.js"),
    exec_mode: "fork",
    autorestart: true,
  })),
};
