// pm2's killDaemon through the library: the bus announces pm2:kill, the
// daemon signals this process (SIGQUIT) once it is gone.
// Usage: PM2_HOME=<home> node kill.js
'use strict';
const pm2 = require('pm2');
setTimeout(() => { console.log('FAIL deadline'); process.exit(1); }, 60000).unref();
let announced = false;
pm2.connect((err) => {
  if (err) { console.log(`FAIL connect: ${err}`); process.exit(1); }
  pm2.launchBus((err, bus) => {
    if (err) { console.log(`FAIL launchBus: ${err}`); process.exit(1); }
    bus.on('pm2:kill', (d) => { announced = d && d.status === 'killed'; });
    const t0 = Date.now();
    pm2.killDaemon((err) => {
      if (err) { console.log(`FAIL killDaemon: ${err}`); process.exit(1); }
      // pm2's client gives up waiting for SIGQUIT after 3 s.
      console.log(`KILLED announced=${announced} signalled=${Date.now() - t0 < 2900}`);
      process.exit(0);
    });
  });
});
