// A WebSocket echo server in Node.js with built-in modules only (no npm install):
// a non-Python target for soak-runner. RFC 6455 handshake and framing by hand.
//
//   node examples/node/echo.js --port 8080 [--leak-bytes 2048]
//   soak run --target "node examples/node/echo.js --port {port}" --duration 2m
//
// --leak-bytes N keeps N bytes per connection forever (a leaky variant to soak).
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(option('--port', ''));
const host = option('--host', '127.0.0.1');
const leakBytes = Number(option('--leak-bytes', '0'));
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node echo.js --port PORT [--host HOST] [--leak-bytes N]');
  process.exit(2);
}

const kept = []; // the leaky variant's per-connection state, never removed

function frame(opcode, payload) {
  const length = payload.length;
  let header;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode; header[1] = 126; header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode; header[1] = 127; header.writeBigUInt64BE(BigInt(length), 2);
  }
  return Buffer.concat([header, payload]);
}

function serveConnection(socket) {
  let buffer = Buffer.alloc(0);
  let fragments = [];
  let fragmentOpcode = 0;
  let closing = false;
  if (leakBytes > 0) kept.push(Buffer.alloc(leakBytes, 1));

  socket.on('data', (chunk) => {
    buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
    while (buffer.length >= 2) {
      const fin = (buffer[0] & 0x80) !== 0;
      const opcode = buffer[0] & 0x0f;
      const masked = (buffer[1] & 0x80) !== 0;
      let length = buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2); offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return;
        length = Number(buffer.readBigUInt64BE(2)); offset = 10;
      }
      if (!masked) { socket.destroy(); return; } // clients must mask (RFC 6455 5.1)
      if (buffer.length < offset + 4 + length) return;
      const mask = buffer.subarray(offset, offset + 4);
      const payload = Buffer.from(buffer.subarray(offset + 4, offset + 4 + length));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      buffer = buffer.subarray(offset + 4 + length);

      if (opcode === 0x8) { // close: answer with the same code, then end
        if (!closing) { closing = true; socket.end(frame(0x8, payload.subarray(0, 2))); }
        return;
      } else if (opcode === 0x9) { // ping -> pong
        socket.write(frame(0xA, payload));
      } else if (opcode === 0x1 || opcode === 0x2) {
        if (fin) socket.write(frame(opcode, payload));
        else { fragments = [payload]; fragmentOpcode = opcode; }
      } else if (opcode === 0x0 && fragmentOpcode) {
        fragments.push(payload);
        if (fin) {
          socket.write(frame(fragmentOpcode, Buffer.concat(fragments)));
          fragments = []; fragmentOpcode = 0;
        }
      }
    }
  });
  socket.on('error', () => socket.destroy());
}

const server = http.createServer((req, res) => {
  res.writeHead(426, { 'Content-Type': 'text/plain' });
  res.end('WebSocket only\n');
});

server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (!key || (req.headers.upgrade || '').toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    return;
  }
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  socket.setNoDelay(true);
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
               `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  serveConnection(socket);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(); process.exit(0); });
}

server.listen(port, host, () => console.log(`listening on ws://${host}:${port}/`));
