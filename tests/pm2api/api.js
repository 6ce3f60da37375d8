// Drives a running daemon through the real `pm2` npm package, as a deploy
// script or dashboard would. Prints one `ok <step>` line per step and
// `ALL OK` at the end; any failure prints `FAIL <step>: <why>` and exits 1.
// Usage: PM2_HOME=<home> node api.js
'use strict';
const path = require('path');
const pm2 = require('pm2');

const APP = path.join(__dirname, 'app.js');
const DEADLINE_MS = 30000;

function fail(step, why) {
  console.log(`FAIL ${step}: ${why}`);
  process.exit(1);
}
const p = (fn) => new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));

// Resolves when `pred` holds for an event seen on the bus (or already seen).
function waiter(events) {
  const seen = [];
  const waiting = [];
  for (const topic of events.topics) {
    events.bus.on(topic, (data) => {
      seen.push({ topic, data });
      for (const w of waiting.slice()) {
        if (w.pred(topic, data)) {
          waiting.splice(waiting.indexOf(w), 1);
          w.resolve(data);
        }
      }
    });
  }
  return (what, pred) =>
    new Promise((resolve, reject) => {
      const hit = seen.find((e) => pred(e.topic, e.data));
      if (hit) return resolve(hit.data);
      const w = { pred, resolve };
      waiting.push(w);
      setTimeout(() => reject(new Error(`no ${what} on the bus within ${DEADLINE_MS} ms`)), DEADLINE_MS).unref();
    });
}

async function until(what, fn) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > DEADLINE_MS) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function checkShape(proc) {
  for (const k of ['pid', 'name', 'pm2_env', 'pm_id', 'monit']) {
    if (!(k in proc)) throw new Error(`process entry lacks ${k}: ${JSON.stringify(Object.keys(proc))}`);
  }
  for (const k of ['status', 'pm_exec_path', 'exec_mode', 'pm_id', 'restart_time', 'env', 'axm_monitor', 'axm_actions']) {
    if (!(k in proc.pm2_env)) throw new Error(`pm2_env lacks ${k}`);
  }
  if (typeof proc.monit.memory !== 'number') throw new Error('monit.memory is not a number');
}

async function main() {
  let step = 'connect';
  try {
    const meta = await p((cb) => pm2.connect(cb));
    if (meta.new_pm2_instance !== false) throw new Error(`pm2 spawned its own daemon: ${JSON.stringify(meta)}`);
    console.log('ok connect');

    step = 'launchBus';
    const bus = await p((cb) => pm2.launchBus(cb));
    const wait = waiter({ bus, topics: ['process:event', 'log:out', 'log:err', 'process:msg'] });
    console.log('ok launchBus');

    step = 'start script';
    const started = await p((cb) => pm2.start(APP, { name: 'api-fork' }, cb));
    if (!Array.isArray(started) || started.length !== 1 || started[0].pm2_env.name !== 'api-fork') {
      throw new Error(`unexpected start result ${JSON.stringify(started).slice(0, 300)}`);
    }
    await wait('log:out from api-fork', (t, d) => t === 'log:out' && d.process.name === 'api-fork' && /up/.test(d.data));
    await wait('online event', (t, d) => t === 'process:event' && d.event === 'online' && d.process.name === 'api-fork');
    console.log('ok start script');

    step = 'start ecosystem object';
    const eco = await p((cb) =>
      pm2.start({ apps: [{ name: 'api-eco', script: APP, instances: 2, exec_mode: 'fork', env: { FOO: 'bar' } }] }, cb));
    if (!Array.isArray(eco) || eco.length !== 2) throw new Error(`ecosystem start returned ${JSON.stringify(eco).slice(0, 300)}`);
    await wait('log:out from api-eco with its env', (t, d) => t === 'log:out' && d.process.name === 'api-eco' && /FOO=bar/.test(d.data));
    console.log('ok start ecosystem object');

    step = 'list';
    const list = await until('three online', async () => {
      const l = await p((cb) => pm2.list(cb));
      return l.length === 3 && l.every((x) => x.pm2_env.status === 'online') && l;
    });
    list.forEach(checkShape);
    console.log('ok list');

    step = 'describe';
    const desc = await p((cb) => pm2.describe('api-eco', cb));
    if (desc.length !== 2 || desc[0].pm2_env.env.FOO !== 'bar') throw new Error(`describe: ${JSON.stringify(desc).slice(0, 300)}`);
    desc.forEach(checkShape);
    console.log('ok describe');

    step = 'sendDataToProcessId';
    const fork = list.find((x) => x.name === 'api-fork');
    const sent = await p((cb) =>
      pm2.sendDataToProcessId(fork.pm_id, { type: 'process:msg', data: { hello: 'corral' }, topic: 'greeting' }, cb));
    if (!sent || sent.success !== true) throw new Error(`sendDataToProcessId returned ${JSON.stringify(sent)}`);
    const answer = await wait('process:msg answer', (t, d) => t === 'process:msg' && d.data && d.data.echo && d.data.echo.hello === 'corral');
    if (answer.process.pm_id !== fork.pm_id) throw new Error(`answer from ${JSON.stringify(answer.process)}`);
    console.log('ok sendDataToProcessId');

    step = 'restart';
    const pid0 = fork.pid;
    await p((cb) => pm2.restart('api-fork', cb));
    const restarted = await until('a new pid', async () => {
      const l = await p((cb) => pm2.describe('api-fork', cb));
      return l[0] && l[0].pm2_env.status === 'online' && l[0].pid !== pid0 && l[0];
    });
    if (restarted.pm2_env.restart_time < 1) throw new Error(`restart_time ${restarted.pm2_env.restart_time}`);
    console.log('ok restart');

    step = 'reload';
    await p((cb) => pm2.reload('api-eco', cb));
    await until('api-eco online after reload', async () => {
      const l = await p((cb) => pm2.describe('api-eco', cb));
      return l.length === 2 && l.every((x) => x.pm2_env.status === 'online' && x.pm2_env.restart_time >= 1);
    });
    console.log('ok reload');

    step = 'stop';
    await p((cb) => pm2.stop('api-fork', cb));
    const stopped = await p((cb) => pm2.describe('api-fork', cb));
    if (stopped[0].pm2_env.status !== 'stopped') throw new Error(`status ${stopped[0].pm2_env.status}`);
    await wait('a stop/exit event', (t, d) => t === 'process:event' && d.process.name === 'api-fork' && /stop|exit/.test(d.event));
    console.log('ok stop');

    step = 'delete';
    await p((cb) => pm2.delete('all', cb));
    const empty = await p((cb) => pm2.list(cb));
    if (empty.length !== 0) throw new Error(`${empty.length} processes left`);
    console.log('ok delete');

    step = 'disconnect';
    // Closes the RPC and bus sockets: node then exits on its own (nothing
    // else keeps the loop alive), which is what this step checks.
    await p((cb) => pm2.disconnect(cb));
    console.log('ok disconnect');
    console.log('ALL OK');
  } catch (e) {
    fail(step, (e && e.stack) || e);
  }
}

setTimeout(() => fail('overall', 'deadline'), 120000).unref();
main();
