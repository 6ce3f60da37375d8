// A cluster worker that listens on PORT (answering {pid}) and then, once
// (while the file GARBAGE_MARKER does not exist), writes bytes that are no
// valid IPC frame straight onto its channel fd (process.channel.fd): a length
// header of 0xffffffff and junk. The daemon must close that channel, log it
// and restart this worker, and nothing else.
const fs = require("fs");
const http = require("http");

http
  .createServer((req, res) => res.end(JSON.stringify({ pid: process.pid })))
  .listen(Number(process.env.PORT), () => {
    const marker = process.env.GARBAGE_MARKER;
    if (marker && !fs.existsSync(marker)) {
      fs.writeFileSync(marker, String(process.pid));
      // Node removes NODE_CHANNEL_FD from the env at startup; the pipe handle
      // still knows its fd.
      const fd = process.channel.fd;
      const junk = Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from("garbage\x00\xff\x01")]);
      fs.writeSync(fd, junk);
      console.log(`garbage written ${process.pid}`);
    } else {
      console.log(`clean ${process.pid}`);
    }
  });
process.on("SIGINT", () => process.exit(0));
