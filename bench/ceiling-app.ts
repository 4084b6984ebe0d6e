// The HTTP side shared by the two ceiling servers (bench/ceiling-server.ts,
// bench/cluster-ceiling-server.ts): the least an append endpoint does —
// read the body, JSON.parse it, check it is a message — then hand it to the
// server's durability scheme, which numbers it per conversation (number())
// and answers it with answer(). GET /health/ready answers 200.
import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

const uws = createRequire(import.meta.url)('uWebSockets.js') as typeof UWS;

export interface PendingAppend {
  res: UWS.HttpResponse;
  /** the conversation */
  id: string;
  /** the request body */
  line: string;
  /** the 201 body (set by number()) */
  reply: string;
  aborted: boolean;
}

export function answer(p: PendingAppend): void {
  if (p.aborted) return;
  p.res.cork(() => p.res.writeStatus('201 Created').writeHeader('content-type', 'application/json').end(p.reply));
}

const seqs = new Map<string, number>();
/** The next seq of the conversation and its 201 body: done by the node that orders the conversation's appends. */
export function number(id: string): string {
  const seq = (seqs.get(id) ?? 0) + 1;
  seqs.set(id, seq);
  return `{"seq":${seq},"version":${seq},"token_count":0}`;
}

/** Serves appends on 127.0.0.1:`port`; each valid one goes to `accept`. Exits the process if it cannot listen. */
export function serveAppends(port: number, accept: (p: PendingAppend) => void): void {
  const app = uws.App();
  app.get('/health/ready', (res) => void res.end('{"status":"ok"}'));
  app.post('/v1/conversations/:id/messages', (res, req) => {
    const id = req.getParameter(0) ?? '';
    const chunks: Buffer[] = [];
    const p: PendingAppend = { res, id, line: '', reply: '', aborted: false };
    res.onAborted(() => {
      p.aborted = true;
    });
    res.onData((chunk, isLast) => {
      chunks.push(Buffer.from(chunk.slice(0))); // uWS reuses the chunk's memory
      if (!isLast) return;
      p.line = Buffer.concat(chunks).toString('utf8');
      let msg: unknown;
      try {
        msg = (JSON.parse(p.line) as { message?: unknown }).message;
      } catch {
        msg = undefined;
      }
      if (typeof msg !== 'object' || msg === null || !Array.isArray((msg as { parts?: unknown }).parts)) {
        res.cork(() => res.writeStatus('400 Bad Request').end('{"error":{"code":"invalid_message"}}'));
        return;
      }
      accept(p);
    });
  });
  app.listen('127.0.0.1', port, (token) => {
    if (!token) {
      console.error(`cannot listen on ${port}`);
      process.exit(1);
    }
  });
}
