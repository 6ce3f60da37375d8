// pm2's own `trigger` through the library (msgProcess on rpc.sock, the
// answer as axm:reply on pub.sock) against an app using @pm2/io.
// Usage: PM2_HOME=<home> node trigger.js <app name>
'use strict';
const pm2 = require('pm2');
const name = process.argv[2];
let stage = 'connect';
setTimeout(() => { console.log(`FAIL deadline at ${stage}`); process.exit(1); }, 60000).unref();
pm2.connect((err) => {
  if (err) { console.log(`FAIL connect: ${err}`); process.exit(1); }
  stage = 'trigger';
  pm2.trigger(name, 'echo', 'from-library', (err, results) => {
    if (err) { console.log(`FAIL trigger: ${err}`); process.exit(1); }
    const got = results && results[0] && results[0].data && results[0].data.return;
    if (!got || got.got !== 'from-library') { console.log(`FAIL answer: ${JSON.stringify(results)}`); process.exit(1); }
    console.log(`TRIGGER OK ${JSON.stringify(got)}`);
    pm2.disconnect(() => process.exit(0));
  });
});
