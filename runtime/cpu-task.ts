// Piscina task module for the CPU pool (runtime/cpu-pool.ts): stateless,
// CPU-heavy work off the main thread. Compiled to dist/runtime/cpu-task.js and
// loaded by piscina in each pool thread; the estimator (vocabularies) loads
// when the thread starts, not on the first task. No top-level await: piscina
// may load this file with require().
import { workerData } from 'piscina';
import { createEstimator } from '../actors/tokens.js';

export interface CpuTaskInit {
  estimatorSpec: string;
}

export type CpuTask = { op: 'countTokens'; texts: string[] };

export type CpuTaskResult = Uint32Array;

const init = workerData as CpuTaskInit;
const estimator = createEstimator(init.estimatorSpec);

export default function run(task: CpuTask): CpuTaskResult {
  switch (task.op) {
    case 'countTokens': {
      const out = new Uint32Array(task.texts.length);
      for (let i = 0; i < task.texts.length; i++) out[i] = estimator.countText(task.texts[i]);
      return out;
    }
    default:
      throw new Error(`cpu-task: unknown op ${(task as { op?: unknown }).op as string}`);
  }
}
