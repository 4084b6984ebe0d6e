// Starts real nodes (node dist/runtime/main.js) on a free loopback port with
// a temp data dir, and stops them by PID. Used by every process-level test.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');
const mainJs = path.join(repoRoot, 'dist', 'runtime', 'main.js');

export interface NodeProc {
  url: string;
  port: number;
  dataDir: string;
  proc: ChildProcess;
  logs: string[];
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startNode(opts: { dataDir?: string; env?: Record<string, string>; port?: number } = {}): Promise<NodeProc> {
  const dataDir = opts.dataDir ?? tempDir('fleetlm-node-');
  const proc = spawn(process.execPath, [mainJs], {
    // Two workers whatever the machine's default, so paths across workers stay exercised.
    env: { ...process.env, PORT: String(opts.port ?? 0), HOST: '127.0.0.1', FLEETLM_RAFT_DATA_DIR: dataDir, FLEETLM_WORKERS: '2', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    const onLine = (line: string) => {
      logs.push(line);
      try {
        const o = JSON.parse(line);
        if (o.type === 'listening') resolve(o.port);
      } catch {
        /* not JSON */
      }
    };
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    proc.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    void exited.then((code) => reject(new Error(`node exited (${code}) before listening:\n${logs.join('\n')}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const node: NodeProc = {
    url,
    port,
    dataDir,
    proc,
    logs,
    exited,
    stop: async () => {
      proc.kill('SIGTERM');
      return exited;
    },
    kill9: async () => {
      proc.kill('SIGKILL');
      await exited;
    },
  };
  try {
    await waitReady(url, exited);
  } catch (err) {
    proc.kill('SIGKILL');
    // Access log lines say little about why a node did not start.
    throw new Error(`${(err as Error).message}; node output:\n${logs.filter((l) => !l.includes('"type":"http"')).join('\n').slice(-4000)}`);
  }
  return node;
}

export async function waitReady(url: string, exited: Promise<unknown>, timeoutMs = 30_000): Promise<void> {
  let dead = false;
  void exited.then(() => (dead = true));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (dead) throw new Error('node exited while starting');
    try {
      const r = await fetch(`${url}/health/ready`);
      if (r.status === 200) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`node at ${url} not ready after ${timeoutMs} ms`);
}

export async function api(
  base: string,
  method: string,
  p: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: any; text: string; headers: Headers }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' || body instanceof Uint8Array ? (body as string) : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
  }
  const r = await fetch(base + p, init);
  const text = await r.text();
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: r.status, json, text, headers: r.headers };
}

/**
 * Read-your-writes of the listing under load: `writers` loops each create
 * `perWriter` conversations through `putUrl(w)` and list each one through
 * `listUrl(w)` right after its 200, while 16 loops append 2 KB messages
 * through `loadUrl` (replies leave at apply, before the state's RocksDB
 * write; the load keeps those writes busy). Returns the ids a listing missed.
 */
export async function listingMisses(o: { putUrl: (w: number) => string; listUrl: (w: number) => string; loadUrl: string; writers: number; perWriter: number }): Promise<string[]> {
  const missed: string[] = [];
  let loading = true;
  await api(o.loadUrl, 'PUT', '/v1/conversations/ryw-load', {});
  const body = { message: { role: 'user', parts: [{ type: 'text', text: 'x'.repeat(2000) }] } };
  const load = Promise.all(
    Array.from({ length: 16 }, async () => {
      while (loading) await api(o.loadUrl, 'POST', '/v1/conversations/ryw-load/messages', body);
    }),
  );
  try {
    await Promise.all(
      Array.from({ length: o.writers }, async (_, w) => {
        for (let i = 0; i < o.perWriter; i++) {
          const id = `ryw-${w}-${i}`;
          const put = await api(o.putUrl(w), 'PUT', `/v1/conversations/${id}`, { metadata: { ryw: id } });
          if (put.status !== 200) throw new Error(`PUT ${id}: ${put.status} ${put.text}`);
          const found = await api(o.listUrl(w), 'GET', `/v1/conversations?metadata.ryw=${id}`);
          if (found.status !== 200) throw new Error(`listing ${id}: ${found.status} ${found.text}`);
          if (found.json.conversations.length !== 1) missed.push(id);
        }
      }),
    );
  } finally {
    loading = false;
    await load;
  }
  return missed;
}
