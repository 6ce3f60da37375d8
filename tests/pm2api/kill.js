// pm2's killDaemon through the library: the bus announces pm2:kill, the
// daemon signals this process (SIGQUIT) once it is gone.
// Usage: PM2_HOME=<home> node kill.js
'use strict';
const pm2 = require('pm2');
let announced = false;
let signalled = false;
setTimeout(() => {
  console.log(`FAIL deadline announced=${announced} signalled=${signalled}`);
  process.exit(1);
}, 60000).unref();
// The daemon's SIGQUIT to the caller, recorded here (pm2's client listens for
// it too, but gives up after 3 s, which a loaded machine can exceed).
process.on('SIGQUIT', () => { signalled = true; });
pm2.connect((err) => {
  if (err) { console.log(`FAIL connect: ${err}`); process.exit(1); }
  pm2.launchBus((err, bus) => {
    if (err) { console.log(`FAIL launchBus: ${err}`); process.exit(1); }
    bus.on('pm2:kill', (d) => { announced = d && d.status === 'killed'; });
    pm2.killDaemon((err) => {
      if (err) { console.log(`FAIL killDaemon: ${err}`); process.exit(1); }
      // Wait (bounded by the deadline above) for the signal and the bus
      // event rather than judging by elapsed time.
      const done = () => {
        if (signalled && announced) {
          console.log(`KILLED announced=${announced} signalled=${signalled}`);
          process.exit(0);
        }
        setTimeout(done, 20);
      };
      done();
    });
  });
});
