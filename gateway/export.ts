// GET /v1/conversations/:id/export: the whole history (archive + hot) as
// NDJSON in seq order, streamed page by page with backpressure, never
// buffered whole. It covers the log up to last_seq when the export started.
import type * as UWS from 'uWebSockets.js';
import type { GatewayContext } from './context.js';
import { AppError, invalid } from '../actors/errors.js';
import { checkId } from '../actors/commands.js';
import { toHttp } from './http-errors.js';
import { bearerToken, tokenAccepted } from './router.js';
import { writeResponse } from './server.js';
import { ReqOp } from '../runtime/wire.js';
import { groupOf } from '../runtime/placement.js';

const PAGE = 1000;

export function registerExport(app: UWS.TemplatedApp, ctx: GatewayContext): void {
  app.get('/v1/conversations/:id/export', (res, req) => {
    const state = { aborted: false, started: false, writable: null as null | (() => void) };
    res.onAborted(() => {
      state.aborted = true;
      state.writable?.();
    });
    const authorization = req.getHeader('authorization');
    const rawId = req.getParameter(0) ?? '';
    void (async () => {
      try {
        if (!tokenAccepted(ctx, bearerToken(authorization))) throw new AppError('unauthorized', 'missing or invalid bearer token');
        let id: string;
        try {
          id = checkId(decodeURIComponent(rawId));
        } catch (err) {
          throw err instanceof URIError ? invalid('invalid_id', 'id is not valid percent-encoding') : err;
        }
        const rec = await ctx.send(ReqOp.GetRecord, groupOf(id), Buffer.from(JSON.stringify({ id })));
        if (rec.status !== 200) {
          if (!state.aborted) writeResponse(res, rec);
          return;
        }
        const lastSeq = (JSON.parse(Buffer.from(rec.body as Uint8Array).toString('utf8')) as { last_seq: number }).last_seq;
        if (state.aborted) return;
        state.started = true;
        res.cork(() => {
          res.writeStatus('200 OK');
          res.writeHeader('content-type', 'application/x-ndjson');
        });
        for (let from = 0; from < lastSeq && !state.aborted; ) {
          const limit = Math.min(PAGE, lastSeq - from);
          const page = await ctx.sendPage(ReqOp.Replay, groupOf(id), id, Buffer.from(JSON.stringify({ id, from, limit })));
          if (page.status !== 200) throw new AppError('unavailable', `export stopped at seq ${from}`);
          const msgs = (JSON.parse(typeof page.body === 'string' ? page.body : Buffer.from(page.body).toString('utf8')) as { messages: { seq: number }[] }).messages;
          if (msgs.length === 0) break;
          const chunk = msgs.map((m) => JSON.stringify(m)).join('\n') + '\n';
          from = msgs[msgs.length - 1].seq;
          if (state.aborted) return;
          let ok = true;
          res.cork(() => (ok = res.write(chunk)));
          if (!ok) {
            await new Promise<void>((resolve) => {
              state.writable = resolve;
              res.onWritable(() => {
                resolve();
                return true;
              });
            });
            state.writable = null;
          }
        }
        if (!state.aborted) res.cork(() => res.end());
      } catch (err) {
        if (state.aborted) return;
        // Once the body has started the status is sent: all that is left is to cut the stream.
        if (state.started) res.close();
        else writeResponse(res, toHttp(err));
      }
    })();
  });
}
