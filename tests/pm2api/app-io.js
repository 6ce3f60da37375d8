// An app instrumented with the real @pm2/io: a custom metric, a counter and
// two actions (one taking a parameter), as pm2's documentation shows.
const io = require('@pm2/io');

io.init({ metrics: { eventLoop: false, network: false, http: false, gc: false, v8: false, runtime: false } });

io.metric({ name: 'Answer', value: () => 42, unit: 'units' });
const hits = io.counter({ name: 'Hits' });
hits.inc();
hits.inc();

io.action('hello', (reply) => reply({ success: true, greeting: 'hi' }));
io.action('echo', (param, reply) => reply({ got: param }));

// @pm2/io's IPC transport stops listening for 200 ms every 3 s when the
// process has exactly three active handles (IPC, stdout, stderr), so that an
// otherwise idle app may exit; an action arriving then is dropped (under pm2
// too). A listening socket is a fourth handle, as most real apps have.
require('net').createServer().listen(0, '127.0.0.1');

console.log('app-io up');
