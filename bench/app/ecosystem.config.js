// The seed ecosystem file: one cluster app, one worker per core (2 on the reference machine).
module.exports = {
  apps: [{ script: "worker.js", instances: "max", exec_mode: "cluster" }],
};
