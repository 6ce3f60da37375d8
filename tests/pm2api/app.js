// An app managed through pm2's programmatic API: logs a line at start and
// answers sendDataToProcessId packets over process.send, as pm2 documents.
const label = `${process.env.name}:${process.env.pm_id}`;
console.log(`app ${label} up FOO=${process.env.FOO || ''}`);
process.on('message', (packet) => {
  if (packet && packet.topic) {
    process.send({ type: 'process:msg', data: { echo: packet.data, from: label } });
  }
});
setInterval(() => {}, 1 << 30);
