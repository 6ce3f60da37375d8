// getSystemData, sendLineToStdin and profileCPU/profileMEM through the pm2
// library. Prints one JSON line with what each call answered.
// Usage: PM2_HOME=<home> node extra.js <pm_id of a stdin-reading fork app> <profile file>
'use strict';
const pm2 = require('pm2');
setTimeout(() => { console.log('FAIL deadline'); process.exit(1); }, 90000).unref();
const [id, file] = [Number(process.argv[2]), process.argv[3]];
const call = (m, a) => new Promise((res) => pm2.Client.executeRemote(m, a, (err, r) => res({ err: err ? String(err.message || err) : null, r })));
pm2.connect(async (err) => {
  if (err) { console.log(`FAIL connect: ${err}`); process.exit(1); }
  const out = {};
  out.sys = await call('getSystemData', {});
  out.line = await new Promise((res) => pm2.sendLineToStdin(id, 'from-library', (err, r) => res({ err: err ? String(err.message || err) : null, r })));
  out.lineMissing = await call('sendLineToStdin', { pm_id: id });
  out.cpuNoApp = await call('profileCPU', { pwd: file, timeout: 200 });
  out.cpu = await call('profileCPU', { pwd: file, timeout: 300, id });
  out.mem = await call('profileMEM', { pwd: file + '.mem', timeout: 300, id });
  console.log('RESULT ' + JSON.stringify(out));
  pm2.disconnect();
});
