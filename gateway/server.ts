// The uWS app: the only uWebSockets.js import. Reads the request (headers in
// the synchronous handler, body with a size cap), hands a plain HttpRequest
// to the router and writes the plain HttpResponse back, corked.
import { createRequire } from 'node:module';
import path from 'node:path';
import type { HttpRequest, HttpResponse as PlainResponse } from './http.js';
import type { GatewayContext } from './context.js';
import { dispatch } from './router.js';
import { errorResponse } from './http-errors.js';
import { metrics } from './metrics.js';
import { log, logEnabled } from '../runtime/log.js';
import type * as UWS from 'uWebSockets.js';
import { Streams } from './streams/sockets.js';
import { registerExport } from './export.js';
import type { StreamHub } from './streams/hub.js';

const require = createRequire(import.meta.url);

/** Loads the native uWS build and refuses the package's slow pure-JS fallback. */
export function loadNativeUws(): typeof UWS {
  const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  const pkgDir = path.dirname(require.resolve('uWebSockets.js/package.json'));
  const native = require(path.join(pkgDir, 'binaries', binary)) as typeof UWS;
  const exported = require('uWebSockets.js') as typeof UWS;
  if (exported !== native) throw new Error(`uWebSockets.js resolved to a fallback, not the native ${binary}`);
  log('info', 'uws_native', 'uWebSockets.js native build in use', { binary });
  return native;
}

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  201: '201 Created',
  204: '204 No Content',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  409: '409 Conflict',
  410: '410 Gone',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/** Writes a complete plain response (corked). */
export function writeResponse(res: UWS.HttpResponse, r: PlainResponse, closeConnection = false): void {
  metrics.httpRequests.labels(`${Math.floor(r.status / 100)}xx`).inc();
  res.cork(() => {
    res.writeStatus(STATUS_TEXT[r.status] ?? `${r.status} Status`);
    res.writeHeader('content-type', r.headers?.['content-type'] ?? 'application/json');
    for (const [k, v] of Object.entries(r.headers ?? {})) if (k !== 'content-type') res.writeHeader(k, v);
    if (closeConnection) res.writeHeader('connection', 'close');
    res.end(r.status === 204 ? '' : r.body);
  });
}

const HEADERS = [
  'content-type',
  'content-length',
  'authorization',
  'idempotency-key',
  'true-client-ip',
  'x-real-ip',
  'x-forwarded-for',
  'last-event-id',
] as const;

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface Gateway {
  port: number;
  streams: Streams;
  /** Stops accepting connections; in-flight requests still get answers. */
  stopListening(): void;
  inFlight(): number;
}

function ipFromHeaders(h: Record<string, string>): string | null {
  if (h['true-client-ip']) return h['true-client-ip'].trim();
  if (h['x-real-ip']) return h['x-real-ip'].trim();
  if (h['x-forwarded-for']) return h['x-forwarded-for'].split(',')[0].trim();
  return null;
}

export function startGateway(
  uws: typeof UWS,
  ctx: GatewayContext,
  host: string,
  port: number,
  hub: () => StreamHub | null,
): Promise<Gateway> {
  const app = uws.App();
  const streams = new Streams(app, ctx, {
    maxConnections: ctx.config.streamMaxConnections,
    bufferBytes: ctx.config.streamBufferBytes,
    pingMs: ctx.config.streamPingMs,
    hub,
  });
  streams.register(uws);
  registerExport(app, ctx);
  let inFlight = 0;
  let draining = false;

  const write = (res: UWS.HttpResponse, r: PlainResponse, state: { aborted: boolean }) => {
    if (state.aborted) return metrics.httpRequests.labels(`${Math.floor(r.status / 100)}xx`).inc();
    state.aborted = true; // answered: nothing more may touch `res`
    writeResponse(res, r, draining);
  };

  const run = (res: UWS.HttpResponse, req: HttpRequest, state: { aborted: boolean }) => {
    inFlight++;
    dispatch(ctx, req)
      .then((r) => {
        if (r.status >= 500 || logEnabled('debug')) {
          log(r.status >= 500 ? 'warn' : 'debug', 'http', `${req.method} ${req.path} ${r.status}`, {
            status: r.status,
            client_ip: req.clientIp(),
          });
        }
        write(res, r, state);
      })
      .catch((err: unknown) => {
        log('error', 'gateway_error', 'request failed outside the router', { err: String(err) });
        write(res, errorResponse('internal', undefined, 'internal error'), state);
      })
      .finally(() => inFlight--);
  };

  app.any('/*', (res, uReq) => {
    const state = { aborted: false };
    res.onAborted(() => {
      state.aborted = true;
    });
    const method = uReq.getCaseSensitiveMethod().toUpperCase();
    const h: Record<string, string> = {};
    for (const name of HEADERS) h[name] = uReq.getHeader(name);
    const req: HttpRequest = {
      method,
      path: uReq.getUrl(),
      query: new URLSearchParams(uReq.getQuery() ?? ''),
      header: (name) => h[name] ?? '',
      body: Buffer.alloc(0),
      // The socket's address is only readable while `res` is live (not aborted or answered).
      clientIp: () => ipFromHeaders(h) ?? (state.aborted ? 'unknown' : Buffer.from(res.getRemoteAddressAsText()).toString()),
    };
    if (draining) return write(res, errorResponse('unavailable', undefined, 'node is shutting down'), state);
    if (!BODY_METHODS.has(method)) return run(res, req, state);
    const max = ctx.config.maxBodyBytes;
    const tooLarge = () => errorResponse('too_large', undefined, `request body exceeds ${max} bytes`);
    const declared = h['content-length'] === '' ? 0 : Number(h['content-length']);
    if (declared > max) return write(res, tooLarge(), state);
    const chunks: Buffer[] = [];
    let size = 0;
    res.onData((chunk, isLast) => {
      if (state.aborted) return;
      size += chunk.byteLength;
      if (size > max) return write(res, tooLarge(), state);
      chunks.push(Buffer.from(chunk.slice(0))); // uWS reuses the chunk's memory
      if (!isLast) return;
      req.body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
      run(res, req, state);
    });
  });

  return new Promise((resolve, reject) => {
    app.listen(host, port, (token) => {
      if (!token) return reject(new Error(`PORT: cannot listen on ${host}:${port}`));
      const bound = uws.us_socket_local_port(token);
      resolve({
        port: bound,
        streams,
        inFlight: () => inFlight,
        stopListening: () => {
          draining = true;
          uws.us_listen_socket_close(token);
        },
      });
    });
  });
}
