// Row 8: two cluster workers that listen() on BENCH_APP_PORT (set by run.sh per target).
module.exports = {
  apps: [{
    name: "listen",
    script: "listen.js",
    instances: 2,
    exec_mode: "cluster",
    env: { BENCH_APP_PORT: process.env.BENCH_APP_PORT },
  }],
};
