// Watches pm2's bus for a process's health events, as a dashboard would:
//   PM2_HOME=<home> node health_bus.js <app name>
// Prints `subscribed` once the bus is up, then one line `event <name>` for each `process:event`
// `unready` and `ready` of that app; exits 0 after seeing `unready` then `ready` (with the
// process's pm2_env.health status of each), 1 after 30 s.
'use strict';
const pm2 = require('pm2');

const name = process.argv[2];
const seen = [];
setTimeout(() => {
  console.log(`FAIL saw ${JSON.stringify(seen)}`);
  process.exit(1);
}, 30000).unref();

pm2.connect((err) => {
  if (err) {
    console.log(`FAIL connect: ${err.message}`);
    process.exit(1);
  }
  pm2.launchBus((err, bus) => {
    if (err) {
      console.log(`FAIL launchBus: ${err.message}`);
      process.exit(1);
    }
    bus.on('process:event', (d) => {
      if (!d || !d.process || d.process.name !== name) return;
      if (d.event !== 'ready' && d.event !== 'unready') return;
      const env = d.process.pm2_env || d.process;
      const status = env.health ? env.health.status : undefined;
      seen.push({ event: d.event, status });
      console.log(`event ${d.event} ${status}`);
      const i = seen.findIndex((e) => e.event === 'unready');
      if (i >= 0 && seen.slice(i + 1).some((e) => e.event === 'ready')) {
        console.log('ALL OK');
        process.exit(0);
      }
    });
    console.log('subscribed');
  });
});
