// A worker that listens on PORT (answering {pid}) and then, once (while the
// file `${GARBAGE_MARKER}.${GARBAGE_KIND}` does not exist), writes bytes that
// no process.send() could produce straight onto its channel fd
// (process.channel.fd). The daemon must close that channel, log it and
// restart this worker, and nothing else.
//   GARBAGE_KIND=frame   (default) a length header of 0xffffffff and junk
//   GARBAGE_KIND=payload a well-framed advanced-mode message that is no V8 data
//   GARBAGE_KIND=line    a JSON-mode (fork mode) line that is no JSON
const fs = require("fs");
const http = require("http");

const kind = process.env.GARBAGE_KIND || "frame";

function junk() {
  switch (kind) {
    case "payload": {
      const body = Buffer.from("garbage!");
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      return Buffer.concat([head, body]);
    }
    case "line":
      return Buffer.from("garbage, not JSON\n");
    default:
      return Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from("garbage\x00\xff\x01")]);
  }
}

http
  .createServer((req, res) => res.end(JSON.stringify({ pid: process.pid })))
  .listen(Number(process.env.PORT), () => {
    const marker = `${process.env.GARBAGE_MARKER}.${kind}`;
    if (process.env.GARBAGE_MARKER && !fs.existsSync(marker)) {
      fs.writeFileSync(marker, String(process.pid));
      // Node removes NODE_CHANNEL_FD from the env at startup; the pipe handle
      // still knows its fd.
      fs.writeSync(process.channel.fd, junk());
      console.log(`garbage (${kind}) written ${process.pid}`);
    } else {
      console.log(`clean ${process.pid}`);
    }
  });
process.on("SIGINT", () => process.exit(0));
