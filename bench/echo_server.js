// A fast, dependency-free WebSocket echo server for the load-generator benchmark.
// Handles the opening handshake, masked unfragmented client frames (text, binary),
// ping -> pong and the close handshake; one Node process, no npm packages needed.
// Usage: node bench/echo_server.js PORT
'use strict';
const http = require('http');
const crypto = require('crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const port = Number(process.argv[2] || 8765);

function frame(opcode, payload) {
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, len]);
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode; header[1] = 126; header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode; header[1] = 127; header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, payload]);
}

const server = http.createServer((req, res) => { res.writeHead(426); res.end(); });
server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (!key) { socket.destroy(); return; }
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  socket.setNoDelay(true);
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
               'Sec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  let buffered = Buffer.alloc(0);
  let closing = false;
  socket.on('data', (chunk) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    for (;;) {
      if (buffered.length < 2) return;
      const opcode = buffered[0] & 0x0f;
      let len = buffered[1] & 0x7f;
      let offset = 2;
      if (len === 126) { if (buffered.length < 4) return; len = buffered.readUInt16BE(2); offset = 4; }
      else if (len === 127) { if (buffered.length < 10) return; len = Number(buffered.readBigUInt64BE(2)); offset = 10; }
      const masked = (buffered[1] & 0x80) !== 0;
      const need = offset + (masked ? 4 : 0) + len;
      if (buffered.length < need) return;
      const payload = Buffer.from(buffered.subarray(offset + (masked ? 4 : 0), need));
      if (masked) {
        const mask = buffered.subarray(offset, offset + 4);
        for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      }
      buffered = buffered.subarray(need);
      if (opcode === 0x8) {
        if (!closing) { closing = true; socket.end(frame(0x8, payload.subarray(0, 2))); }
        return;
      } else if (opcode === 0x9) {
        socket.write(frame(0xA, payload));
      } else if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
        socket.write(frame(opcode, payload));  // unfragmented echo (the bench sends small messages)
      }
    }
  });
  socket.on('error', () => socket.destroy());
});
server.listen(port, '127.0.0.1', () => console.log('listening on ws://127.0.0.1:' + port + '/'));
process.on('SIGTERM', () => process.exit(0));
