// A throwaway PostgreSQL for tests, from Debian's packages
// (/usr/lib/postgresql/<ver>/bin; scripts/test-deps.sh installs them): a temp
// data dir, a free loopback port, started and stopped by PID. PostgreSQL
// refuses to run as root, so as root it runs as the `postgres` user.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { tempDir } from './harness.js';

export interface Postgres {
  url: string;
  port: number;
  /** SIGKILL the server (an outage); restart() brings it back on the same data and port. */
  kill(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))) : [];
  if (versions.length === 0) throw new Error('PostgreSQL not found under /usr/lib/postgresql: run scripts/test-deps.sh');
  versions.sort((a, b) => Number(b) - Number(a));
  return path.join(root, versions[0], 'bin');
}

const asRoot = process.getuid?.() === 0;
/** argv run as the postgres user when we are root. */
const asPostgres = (argv: string[]) => (asRoot ? ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', ...argv] : argv);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** /proc/<pid>/stat after the command name, which may itself hold spaces and parentheses: "state ppid ...". */
function statFields(pid: number): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e) && Number(statFields(Number(e))?.[1]) === pid)
    .map(Number);
}

/** Running, i.e. neither gone nor a zombie waiting for its new parent to reap it. */
const alive = (pid: number) => {
  const f = statFields(pid);
  return f !== null && f[0] !== 'Z';
};

export async function startPostgres(): Promise<Postgres> {
  const bin = binDir();
  const dir = tempDir('fleetlm-pg-');
  const data = path.join(dir, 'data');
  if (asRoot) spawnSync('chown', ['-R', 'postgres:postgres', dir]);
  const initdb = asPostgres([path.join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', 'fleetlm', '--no-sync', '-E', 'UTF8']);
  const init = spawnSync(initdb[0], initdb.slice(1), { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const url = `postgres://fleetlm@127.0.0.1:${port}/postgres`;
  let proc: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const start = async () => {
    const argv = asPostgres([path.join(bin, 'postgres'), '-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`]);
    // Detached: the test runner's terminal signals stay out of it; the tests stop it themselves.
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc = p;
    exited = new Promise((resolve) => p.once('exit', () => resolve()));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end().catch(() => {});
      }
      if (p.exitCode !== null || Date.now() > deadline) {
        p.kill('SIGKILL');
        throw new Error(`postgres did not start: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const signal = async (sig: NodeJS.Signals) => {
    const pid = proc?.pid;
    if (pid !== undefined) {
      // Every backend calls setsid(), so a process-group kill reaches only the
      // postmaster. An outage SIGKILLs the backends too: left alone they linger
      // until they notice, and restart() would be refused while they hold the
      // old shared memory.
      const backends = sig === 'SIGKILL' ? childrenOf(pid) : [];
      for (const p of [pid, ...backends]) {
        try {
          process.kill(p, sig);
        } catch {
          /* already gone */
        }
      }
      await exited;
      const deadline = Date.now() + 5000;
      while (backends.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    }
    proc = null;
  };
  await start();
  return {
    url,
    port,
    kill: () => signal('SIGKILL'),
    restart: async () => {
      // The killed server's lock file names a dead PID; PostgreSQL recovers from its WAL on start.
      await start();
    },
    stop: async () => {
      await signal('SIGINT'); // fast shutdown
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
