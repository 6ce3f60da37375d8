// Scale curves (row 9): the seed app with BENCH_INSTANCES cluster workers.
module.exports = {
  apps: [{ script: "worker.js", instances: Number(process.env.BENCH_INSTANCES || 2), exec_mode: "cluster" }],
};
