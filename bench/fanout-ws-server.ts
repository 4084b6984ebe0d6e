// Reference broadcast server for bench/fanout.ts on the `ws` library, written
// the idiomatic way: subscribers connect to /sub/<conv>, POST /publish/<conv>
// with a text body sends `{"type":"message","text":…}` to each of them.
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.argv[2]);
const rooms = new Map<string, Set<WebSocket>>();
const server = http.createServer((req, res) => {
  const m = /^\/publish\/(.+)$/.exec(req.url ?? '');
  if (req.method !== 'POST' || !m) return void res.writeHead(404).end();
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const frame = JSON.stringify({ type: 'message', text: Buffer.concat(chunks).toString() });
    for (const ws of rooms.get(m[1]) ?? []) ws.send(frame);
    res.writeHead(201).end();
  });
});
const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  const room = (req.url ?? '').replace(/^\/sub\//, '');
  let set = rooms.get(room);
  if (!set) rooms.set(room, (set = new Set()));
  set.add(ws);
  ws.on('close', () => set!.delete(ws));
});
server.listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
