// Reference broadcast server of bench/fanout.ts on bare uWebSockets.js, the
// library our gateway is built on: a subscriber connects to /sub/<conv> and
// joins the uWS topic <conv>; POST /publish/<conv> publishes the body to that
// topic. No log, no durability, no per-event work: the cost of the sends
// alone, i.e. what any server built on uWS can reach on this machine.
// GET /health answers 200 once listening.
//
//   node dist/bench/fanout-uws-server.js <port>
import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

const uws = createRequire(import.meta.url)('uWebSockets.js') as typeof UWS;
const port = Number(process.argv[2]);

const app = uws.App();
app.ws<{ conv: string }>('/sub/:conv', {
  maxBackpressure: 1 << 20,
  upgrade: (res, req, context) => {
    res.upgrade(
      { conv: req.getParameter(0) ?? '' },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => void ws.subscribe(ws.getUserData().conv),
});
app.get('/health', (res) => void res.end(''));
app.post('/publish/:conv', (res, req) => {
  const conv = req.getParameter(0) ?? '';
  const chunks: Buffer[] = [];
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    chunks.push(Buffer.from(chunk.slice(0))); // uWS reuses the chunk's memory
    if (!isLast) return;
    app.publish(conv, Buffer.concat(chunks), false);
    if (!aborted) res.cork(() => void res.writeStatus('204 No Content').end());
  });
});
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
});
