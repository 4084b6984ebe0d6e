// What route handlers get: a way to reach the workers and the node's config.
import type { Config } from '../runtime/config.js';
import type { TokenEstimator } from '../actors/tokens.js';
import type { CpuPool } from '../runtime/cpu-pool.js';
import type { Dispatcher, WorkerReply } from './dispatch.js';
import type { ReqOp } from '../runtime/wire.js';
import type { HttpResponse } from './http.js';
import { ReplyKind } from '../runtime/replies.js';
import type { WireError } from '../actors/errors.js';
import { AppError } from '../actors/errors.js';
import { wireToHttp } from './http-errors.js';

export interface GatewayContext {
  config: Config;
  estimator: TokenEstimator;
  pool: CpuPool | null;
  isReady(): boolean;
  /** The NATS connection: 'disabled' when NATS_URL is unset. */
  natsStatus(): 'ok' | 'failing' | 'disabled';
  postgresStatus(): 'ok' | 'failing' | 'disabled';
  /** One request to the owning worker, its reply as an HTTP response. */
  send(op: ReqOp, group: number, payload: Uint8Array): Promise<HttpResponse>;
  /** A page of messages (tail, replay): the part below the hot tier comes from the archive. */
  sendPage(op: ReqOp, group: number, id: string, payload: Uint8Array): Promise<HttpResponse>;
  /** One request to every worker; the raw Ok bodies, or throws the first error. */
  broadcastRead(op: ReqOp, payload: Uint8Array): Promise<Uint8Array[]>;
}

const STATUS_OF: Record<ReplyKind, number> = {
  [ReplyKind.Error]: 500,
  [ReplyKind.Ok]: 200,
  [ReplyKind.Created]: 201,
  [ReplyKind.NoContent]: 204,
  // Only sendPage may see one; anywhere else it is a bug.
  [ReplyKind.Partial]: 500,
};

/** Reads archived messages, in seq order, as stored message record texts. */
export type ArchiveReader = (id: string, lo: number, hi: number) => Promise<string[]>;

function parseWire(body: Uint8Array): WireError {
  return JSON.parse(Buffer.from(body).toString('utf8')) as WireError;
}

export function replyToHttp(r: WorkerReply): HttpResponse {
  if (r.kind === ReplyKind.Error) return wireToHttp(parseWire(r.body));
  return { status: STATUS_OF[r.kind], body: r.body };
}

export function makeContext(
  config: Config,
  estimator: TokenEstimator,
  pool: CpuPool | null,
  dispatcher: Pick<Dispatcher, 'request' | 'broadcast'>,
  isReady: () => boolean,
  natsStatus: () => 'ok' | 'failing' | 'disabled',
  archive: () => ArchiveReader | null,
  postgresStatus: () => 'ok' | 'failing' | 'disabled',
): GatewayContext {
  return {
    config,
    estimator,
    pool,
    isReady,
    natsStatus,
    postgresStatus,
    send: async (op, group, payload) => replyToHttp(await dispatcher.request(op, group, payload)),
    sendPage: async (op, group, id, payload) => {
      const r = await dispatcher.request(op, group, payload);
      if (r.kind !== ReplyKind.Partial) return replyToHttp(r);
      const page = JSON.parse(Buffer.from(r.body).toString('utf8')) as { cold: [number, number]; hot: unknown[] };
      const read = archive();
      if (read === null) {
        throw new AppError('unavailable', `messages up to seq ${page.cold[1]} are in the archive, which this node does not have enabled`);
      }
      const cold = await read(id, page.cold[0], page.cold[1]);
      const hot = page.hot.map((m) => JSON.stringify(m));
      return { status: 200, body: '{"messages":[' + cold.concat(hot).join(',') + ']}' };
    },
    broadcastRead: async (op, payload) => {
      const replies = await dispatcher.broadcast(op, payload);
      for (const r of replies) {
        if (r.kind === ReplyKind.Error) {
          const w = parseWire(r.body);
          throw new AppError(w.code, w.message, w.detail);
        }
      }
      return replies.map((r) => r.body);
    },
  };
}
