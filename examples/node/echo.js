// A WebSocket echo server in Node.js with built-in modules only (no npm install):
// a non-Python target for soak-runner. RFC 6455 handshake and framing by hand.
//
//   node examples/node/echo.js --port 8080 [--leak KIND[,KIND...]] [--leak-bytes 2048]
//   soak run --target "node examples/node/echo.js --port {port}" --duration 2m
//
// Leaky variants to soak (each never frees what it keeps, at the default heap size):
//   --leak user-state   a Map of ~2 KB of user state per connection, never deleted
//   --leak last-seen    a ~200 B "last seen" record per user in a Map never pruned
//   --leak listener     a listener added to a global EventEmitter per connection, never removed
//   --leak buffer       a Buffer of --leak-bytes (default 2048) kept per connection
//   --leak-bytes N      alone: as --leak buffer with N bytes (the original leaky variant)
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(option('--port', ''));
const host = option('--host', '127.0.0.1');
const leaks = new Set(option('--leak', '').split(',').filter(Boolean));
const leakBytes = Number(option('--leak-bytes', leaks.has('buffer') ? '2048' : '0'));
const KINDS = ['user-state', 'last-seen', 'listener', 'buffer'];
if (!Number.isInteger(port) || port <= 0 || [...leaks].some((k) => !KINDS.includes(k))) {
  console.error(`usage: node echo.js --port PORT [--host HOST] [--leak ${KINDS.join('|')}[,...]] [--leak-bytes N]`);
  process.exit(2);
}

const kept = []; // Buffers kept per connection, never removed
const users = new Map(); // user id -> session state, never deleted on disconnect
const lastSeen = new Map(); // user id -> when and where it was last seen, never pruned
const bus = new EventEmitter(); // a process-wide event bus
bus.setMaxListeners(0);
let nextUser = 0;

// The leaks, each in a function of its own, as a server would have them.
function rememberUser(id, req) {
  users.set(id, { id, name: `user-${id}`, joinedAt: Date.now(), agent: req.headers['user-agent'] || '',
                  session: crypto.randomBytes(1000).toString('hex') });
}

function touchLastSeen(id, socket) {
  lastSeen.set(`user-${id}`, { at: Date.now(), port: socket.remotePort, online: true });
}

function subscribe(socket) {
  bus.on('broadcast', (text) => { if (!socket.destroyed) socket.write(frame(0x1, Buffer.from(text))); });
}

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

function serveConnection(socket, req) {
  let buffer = Buffer.alloc(0);
  let fragments = [];
  let fragmentOpcode = 0;
  let closing = false;
  const id = nextUser++;
  if (leakBytes > 0) kept.push(Buffer.alloc(leakBytes, 1));
  if (leaks.has('user-state')) rememberUser(id, req);
  if (leaks.has('last-seen')) touchLastSeen(id, socket);
  if (leaks.has('listener')) subscribe(socket);

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
  serveConnection(socket, req);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(); process.exit(0); });
}

server.listen(port, host, () => console.log(`listening on ws://${host}:${port}/`));
