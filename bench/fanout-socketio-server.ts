// Reference broadcast server for bench/fanout.ts on Socket.IO: clients emit
// `sub` with a conversation to join its room; POST /publish/<conv> emits
// `m` with `{"type":"message","text":…}` to the room. WebSocket transport only.
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2]);
const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], serveClient: false });
io.on('connection', (socket) => socket.on('sub', (room: string) => void socket.join(room)));
server.on('request', (req, res) => {
  // Engine.IO answers its own paths on this server; everything else is ours.
  if ((req.url ?? '').startsWith('/socket.io/')) return;
  const m = /^\/publish\/(.+)$/.exec(req.url ?? '');
  if (!m || req.method !== 'POST') return void res.writeHead(404).end();
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    io.to(m[1]).emit('m', JSON.stringify({ type: 'message', text: Buffer.concat(chunks).toString() }));
    res.writeHead(201).end();
  });
});
server.listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
