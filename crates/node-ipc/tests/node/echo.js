'use strict';
// Describes and echoes every message; on request, sends every case of cases.js.
const describe = require('./describe.js');
process.on('message', (m, handle) => {
  if (m && m.cmd === 'send-cases') {
    for (const [, v] of require('./cases.js')()) if (v !== undefined && typeof v !== 'bigint') process.send(v);
    process.send('cases-done');
    return;
  }
  if (m === 'exit') {
    process.disconnect();
    return;
  }
  process.send({ desc: describe(m), handle: handle ? handle.constructor.name : null });
  // process.send refuses a top-level BigInt, so echoes are wrapped.
  process.send({ echo: m });
});
