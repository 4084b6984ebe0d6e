// A stand-in for our server, for validating the bench plumbing before
// dist/runtime/main.js works: GET /health/ready, PUT /v1/conversations/:id,
// POST /v1/conversations/:id/messages (201). Appends go to a file in
// FLEETLM_RAFT_DATA_DIR (no fsync), which is re-read on start so restart time
// grows with the data. Not a benchmark of anything.
//   node dist/bench/append.js --only=ours --server=dist/bench/stub-server.js
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const port = Number(process.env.PORT ?? 4000);
const dir = process.env.FLEETLM_RAFT_DATA_DIR ?? './data';
fs.mkdirSync(dir, { recursive: true });
const file = path.join(dir, 'stub.log');
const seqs = new Map<string, number>();
let ready = false;

try {
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const tab = line.indexOf('\t');
    if (tab > 0) seqs.set(line.slice(0, tab), (seqs.get(line.slice(0, tab)) ?? 0) + 1);
  }
} catch {
  /* fresh */
}
const out = fs.createWriteStream(file, { flags: 'a' });

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const send = (status: number, body: unknown) => {
      const s = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
      res.end(s);
    };
    if (req.method === 'GET' && url === '/health/ready') return send(ready ? 200 : 503, { ready });
    const m = /^\/v1\/conversations\/([^/]+)(\/messages)?$/.exec(url);
    if (!m) return send(404, { error: 'not_found' });
    const id = decodeURIComponent(m[1]);
    if (req.method === 'PUT' && !m[2]) {
      const created = !seqs.has(id);
      if (created) seqs.set(id, 0);
      return send(created ? 201 : 200, { id });
    }
    if (req.method === 'POST' && m[2]) {
      if (!seqs.has(id)) return send(404, { error: 'conversation_not_found' });
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(400, { error: 'bad_json' });
      }
      const seq = (seqs.get(id) ?? 0) + 1;
      seqs.set(id, seq);
      out.write(`${id}\t${JSON.stringify(body)}\n`);
      return send(201, { seq });
    }
    send(405, { error: 'method_not_allowed' });
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  ready = true;
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  out.end(() => process.exit(0));
});
