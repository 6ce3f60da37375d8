'use strict';
// Records the order in which messages and handles arrive.
const got = [];
process.on('message', (m, h) => {
  if (m && m.done) {
    process.send({ got });
    return;
  }
  if (h) {
    got.push('h' + m.i);
    if (typeof h.destroy === 'function') h.destroy();
    else h.close();
  } else {
    got.push('m' + m.i);
  }
});
