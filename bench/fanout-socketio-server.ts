// Reference broadcast server of bench/fanout.ts on Socket.IO (WebSocket
// transport only): a client emits `sub` with a conversation and gets an ack
// once its socket has joined that room; POST /publish/<conv> with a JSON body
// emits `m` with the parsed object to the room (io.to(conv).emit), so frames
// carry the same JSON as the other servers', as `42["m",{…}]`. GET /health
// answers 200 once listening.
//
//   node dist/bench/fanout-socketio-server.js <port>
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2]);
const PUBLISH_PREFIX = '/publish/';

const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], serveClient: false });
io.on('connection', (socket) => {
  socket.on('sub', (conv: string, ack?: () => void) => {
    void socket.join(conv);
    ack?.();
  });
});

server.on('request', (req, res) => {
  const url = req.url ?? '';
  // Engine.IO answers its own path from its own listener on this server.
  if (url.startsWith('/socket.io/')) return;
  if (req.method === 'GET' && url === '/health') return void res.writeHead(200).end();
  if (req.method !== 'POST' || !url.startsWith(PUBLISH_PREFIX)) return void res.writeHead(404).end();
  const conv = url.slice(PUBLISH_PREFIX.length);
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    io.to(conv).emit('m', JSON.parse(Buffer.concat(chunks).toString()));
    res.writeHead(204).end();
  });
});

server.listen(port, '127.0.0.1');
