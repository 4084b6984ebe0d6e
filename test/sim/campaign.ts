// A longer simulation campaign than `npm test` runs: many more seeds (from
// 1,000,000 on, so it explores seeds the test does not), for a time budget.
//   npm run sim                       5 minutes of seeds
//   SIM_SECONDS=3600 npm run sim      an hour
//   SIM_SEEDS=10000 npm run sim       a fixed number of seeds
//   SIM_SEED=123 SIM_STEPS=10000 npm run sim   replay one seed
// Exits non-zero on the first failing seed, after printing it.
import { planFromEnv, runSeeds } from './runner.js';

const SECONDS_DEFAULT = 300;

const seconds = Number(process.env.SIM_SECONDS ?? SECONDS_DEFAULT);
if (!(seconds > 0)) throw new RangeError(`SIM_SECONDS must be a positive number, got ${process.env.SIM_SECONDS}`);
const plan = planFromEnv({ firstSeed: 1_000_000, count: Number.POSITIVE_INFINITY, steps: 10_000 });
const budgetMs = plan.count === Number.POSITIVE_INFINITY ? seconds * 1000 : Number.POSITIVE_INFINITY;
try {
  const totals = runSeeds(plan, (line) => console.log(line), budgetMs);
  if (totals.groupsStopped > 0) {
    console.error(`${totals.groupsStopped} groups stopped by a driver assertion`);
    process.exit(1);
  }
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
}
