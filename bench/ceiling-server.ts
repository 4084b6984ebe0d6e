// What any append server on this stack can reach on this machine: bare
// uWebSockets.js answering POST /v1/conversations/:id/messages the way ours
// must at the least — read the body, JSON.parse it, check it is a message,
// number it per conversation, answer 201 {seq, version, token_count} — with no
// Raft, no RocksDB, no worker thread and no token count. Mode `durable` also
// appends each body to one file and answers a loop turn's requests only after
// one write + fdatasync of that turn's bodies (group commit, like ours). Doing
// that write synchronously on the loop thread instead, as Redis does, measured
// the same here (31–38k against 35–40k appends/s, interleaved 6 s wrk runs).
// With <threads> > 1, that many threads each run the same app on the same
// port (the kernel spreads connections, SO_REUSEPORT), each with its own file.
// GET /health/ready answers 200 once listening.
//
//   node dist/bench/ceiling-server.js <port> <http|durable> <data file> [threads]
import fs from 'node:fs';
import { Worker, isMainThread, threadId } from 'node:worker_threads';
import { answer, number, serveAppends, type PendingAppend } from './ceiling-app.js';

const port = Number(process.argv[2]);
const mode = process.argv[3];
const file = process.argv[4];
const threads = Number(process.argv[5] ?? 1);
if (!Number.isInteger(port) || (mode !== 'http' && mode !== 'durable') || !file || !(threads >= 1)) {
  console.error('usage: ceiling-server.js <port> <http|durable> <data file> [threads]');
  process.exit(2);
}
if (isMainThread) for (let i = 1; i < threads; i++) new Worker(new URL(import.meta.url), { argv: process.argv.slice(2) });
const fd = mode === 'durable' ? fs.openSync(`${file}.${threadId}`, 'a') : -1;

let turn: PendingAppend[] = [];
let writing = false;

// One write + fdatasync per batch; requests that arrive meanwhile form the next batch.
function flush(): void {
  if (writing || turn.length === 0) return;
  const batch = turn;
  turn = [];
  writing = true;
  const bytes = Buffer.from(batch.map((p) => p.line).join('\n') + '\n');
  fs.write(fd, bytes, (err) => {
    if (err) throw err;
    fs.fdatasync(fd, (err2) => {
      if (err2) throw err2;
      writing = false;
      for (const p of batch) answer(p);
      flush();
    });
  });
}

serveAppends(port, (p) => {
  p.reply = number(p.id);
  if (fd < 0) return answer(p);
  turn.push(p);
  if (turn.length === 1) setImmediate(flush);
});
