// Runs every compiled test file (dist/test/**/*.test.js) with node's test
// runner. Unit tests first in parallel, then process-level suites one at a
// time (they start real nodes and must not fight over the two cores).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dist = path.join(root, 'dist', 'test');

function find(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return find(p);
    return e.name.endsWith('.test.js') ? [p] : [];
  });
}

const only = process.argv.slice(2);
const all = find(dist).filter((f) => only.length === 0 || only.some((o) => f.includes(o))).sort();
const serial = all.filter((f) => /[/\\](integration|faults)[/\\]/.test(f));
const parallel = all.filter((f) => !serial.includes(f));
if (all.length === 0) {
  console.error('no test files found under dist/test (did the build run?)');
  process.exit(1);
}

let failed = false;
for (const [files, concurrency] of [[parallel, 2], [serial, 1]]) {
  if (files.length === 0) continue;
  if (files === serial) {
    // Process-level tests start real services (nats-server): install what is missing.
    const deps = spawnSync('bash', [path.join(root, 'scripts', 'test-deps.sh')], { stdio: 'inherit', cwd: root });
    if (deps.status !== 0) process.exit(1);
  }
  const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...files], {
    stdio: 'inherit',
    cwd: root,
  });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
