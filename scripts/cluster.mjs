// `npm run cluster`: a local 3-node cluster plus a nats-server on loopback.
// Data lives in ./data/cluster/<node>; Ctrl-C stops every process it started.
// CLUSTER_BASE_PORT (default 4001) sets the first node's HTTP port.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const names = ['n1', 'n2', 'n3'];
const basePort = Number(process.env.CLUSTER_BASE_PORT ?? 4001);

function natsBinary() {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/sbin', '/usr/bin')) {
    const p = path.join(dir, 'nats-server');
    if (fs.existsSync(p)) return p;
  }
  console.error('cluster: nats-server not found; install it with: bash scripts/test-deps.sh');
  process.exit(1);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitReady(url, deadlineMs) {
  while (Date.now() < deadlineMs) {
    try {
      if ((await fetch(`${url}/health/ready`)).status === 200) return true;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const children = [];
const stopAll = () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
};
process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);

const natsPort = await freePort();
const nats = spawn(natsBinary(), ['-a', '127.0.0.1', '-p', String(natsPort)], { stdio: 'ignore' });
children.push(nats);
const natsUrl = `nats://127.0.0.1:${natsPort}`;
const urls = names.map((_, i) => `http://127.0.0.1:${basePort + i}`);
names.forEach((name, i) => {
  const dataDir = path.join(root, 'data', 'cluster', name);
  fs.mkdirSync(dataDir, { recursive: true });
  const logFile = fs.openSync(path.join(dataDir, 'node.log'), 'a');
  const child = spawn(process.execPath, ['--max-semi-space-size=4', path.join(root, 'dist', 'runtime', 'main.js')], {
    env: {
      ...process.env,
      NODE_NAME: name,
      CLUSTER_NODES: names.join(','),
      NATS_URL: natsUrl,
      PORT: String(basePort + i),
      HOST: '127.0.0.1',
      FLEETLM_RAFT_DATA_DIR: dataDir,
      // Three nodes share this machine: each runs its shard on its gateway thread (docs/DESIGN.md, "Worker count").
      FLEETLM_WORKERS: process.env.FLEETLM_WORKERS ?? '0',
    },
    stdio: ['ignore', logFile, logFile],
  });
  child.on('exit', (code, signal) => console.log(`${name} exited (${signal ?? code}); log: ${path.join(dataDir, 'node.log')}`));
  children.push(child);
});
const ok = await Promise.all(urls.map((u) => waitReady(u, Date.now() + 30_000)));
console.log(`NATS      ${natsUrl}`);
names.forEach((n, i) => console.log(`${n}        ${urls[i]}  ${ok[i] ? 'ready' : 'NOT READY (see its node.log)'}  data/cluster/${n}`));
console.log('Ctrl-C stops the cluster.');
await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.once('exit', r)))));
