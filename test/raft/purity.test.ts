// runtime/raft/** must stay pure: no node:* imports, nothing from outside
// runtime/raft, no clocks, timers, global randomness or process access.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Compiled to dist/test/raft/purity.test.js: the repo root is three levels up.
// (Builds with another outDir fall back to the working directory.)
const fromFile = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const repoRoot = [fromFile, process.cwd()].find((d) => existsSync(join(d, 'runtime', 'raft', 'core.ts'))) ?? fromFile;
const raftDir = join(repoRoot, 'runtime', 'raft');

const FORBIDDEN: Array<[RegExp, string]> = [
  [/\bDate\./, 'Date.'],
  [/\bnew Date\b/, 'new Date'],
  [/\bMath\.random\b/, 'Math.random'],
  [/\bsetTimeout\b/, 'setTimeout'],
  [/\bsetInterval\b/, 'setInterval'],
  [/\bsetImmediate\b/, 'setImmediate'],
  [/\bprocess\b/, 'process'],
  [/\bperformance\b/, 'performance'],
  [/\brequire\s*\(/, 'require('],
];

function importSpecifiers(src: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"]+)\1/g;
  for (let m = re.exec(src); m !== null; m = re.exec(src)) out.push(m[2]);
  return out;
}

test('purity - runtime/raft sources import nothing impure', () => {
  const files = readdirSync(raftDir).filter((f) => f.endsWith('.ts'));
  assert.ok(files.includes('core.ts') && files.includes('types.ts'), `sources found in ${raftDir}`);
  const problems: string[] = [];
  for (const f of files) {
    const src = readFileSync(join(raftDir, f), 'utf8');
    for (const spec of importSpecifiers(src)) {
      if (spec.startsWith('node:')) problems.push(`${f}: imports ${spec}`);
      else if (!/^\.\/[\w.-]+\.js$/.test(spec)) problems.push(`${f}: imports ${spec} (only ./x.js siblings allowed)`);
    }
    for (const [re, name] of FORBIDDEN) if (re.test(src)) problems.push(`${f}: mentions ${name}`);
  }
  assert.deepEqual(problems, []);
});

test('purity - the scanner catches violations', () => {
  assert.deepEqual(importSpecifiers(`import { x } from 'node:fs';\nimport y from "../z.js";\nconst m = await import('./q.js');`), [
    'node:fs',
    '../z.js',
    './q.js',
  ]);
  const bad = 'const t = Date.now(); Math.random(); setTimeout(f, 1); process.exit(1);';
  assert.equal(FORBIDDEN.filter(([re]) => re.test(bad)).length, 4);
});
