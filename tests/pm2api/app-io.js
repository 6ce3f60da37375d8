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

console.log('app-io up');
setInterval(() => {}, 1 << 30);
