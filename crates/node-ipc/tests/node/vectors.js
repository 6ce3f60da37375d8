'use strict';
// Prints, for every case, the exact frame Node's own advanced IPC writer
// produces (internal/child_process/serialization, via --expose-internals,
// with a fake channel that captures the buffer) and the canonical description
// of the value.
const { advanced } = require('internal/child_process/serialization');
const describe = require('./describe.js');
const out = [];
for (const [name, value] of require('./cases.js')()) {
  let frame = null;
  const channel = { writeBuffer(req, buf) { frame = Buffer.from(buf); return 0; } };
  advanced.writeChannelMessage(channel, {}, value, null);
  out.push({ name, frame: frame.toString('hex'), desc: describe(value) });
}
process.stdout.write(JSON.stringify(out));
