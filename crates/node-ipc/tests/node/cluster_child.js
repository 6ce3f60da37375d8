'use strict';
// A cluster worker: NODE_UNIQUE_ID makes Node send NODE_CLUSTER online first.
const cluster = require('cluster');
process.send({ isWorker: cluster.isWorker, id: cluster.worker && cluster.worker.id });
setInterval(() => {}, 1000);
