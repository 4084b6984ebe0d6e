// Reference broadcast server of bench/fanout.ts on the `ws` library, written
// the simplest idiomatic way: a subscriber connects to /sub/<conv>; POST
// /publish/<conv> with a JSON body sends that text to every socket of the
// conversation, one ws.send each. GET /health answers 200 once listening.
//
//   node dist/bench/fanout-ws-server.js <port>
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.argv[2]);
const SUB_PREFIX = '/sub/';
const PUBLISH_PREFIX = '/publish/';
const subscribers = new Map<string, Set<WebSocket>>();

const server = http.createServer((req, res) => {
  const url = req.url ?? '';
  if (req.method === 'GET' && url === '/health') return void res.writeHead(200).end();
  if (req.method !== 'POST' || !url.startsWith(PUBLISH_PREFIX)) return void res.writeHead(404).end();
  const conv = url.slice(PUBLISH_PREFIX.length);
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString();
    for (const ws of subscribers.get(conv) ?? []) ws.send(text);
    res.writeHead(204).end();
  });
});

// permessage-deflate is off by default on a ws server; the clients do not offer it either.
const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  const url = req.url ?? '';
  if (!url.startsWith(SUB_PREFIX)) return void ws.close(1008, 'subscribe at /sub/<conv>');
  const conv = url.slice(SUB_PREFIX.length);
  let set = subscribers.get(conv);
  if (!set) subscribers.set(conv, (set = new Set()));
  set.add(ws);
  ws.on('close', () => set.delete(ws));
});

server.listen(port, '127.0.0.1');
