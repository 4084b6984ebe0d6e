// Runs seeds of the simulator and sums their stats; shared by the test and
// the campaign. Environment knobs:
//   SIM_SEED=n     run only seed n (to replay a failure)
//   SIM_SEEDS=n    how many seeds (from SIM_FIRST_SEED on)
//   SIM_STEPS=n    steps per seed before the liveness phase
//   SIM_TRACE=1    print each seed's notable events (faults, leader changes) as they happen
import { runSeed } from './simulation.js';
import { addStats, emptyStats, type SimStats } from './stats.js';

export interface SeedPlan {
  firstSeed: number;
  /** Seeds to run; Infinity: until the caller's time budget runs out. */
  count: number;
  steps: number;
  /** Set when SIM_SEED picked one seed. */
  single: number | null;
}

function envInt(name: string): number | null {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return null;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}

export function planFromEnv(defaults: { firstSeed: number; count: number; steps: number }): SeedPlan {
  const single = envInt('SIM_SEED');
  const steps = envInt('SIM_STEPS') ?? defaults.steps;
  if (single !== null) return { firstSeed: single, count: 1, steps, single };
  return { firstSeed: envInt('SIM_FIRST_SEED') ?? defaults.firstSeed, count: envInt('SIM_SEEDS') ?? defaults.count, steps, single: null };
}

/**
 * Runs the plan's seeds in order until done or `budgetMs` of wall time is
 * spent; `progress` gets a line now and then. A failing seed throws (its
 * message carries the replay command).
 */
export function runSeeds(plan: SeedPlan, progress: (line: string) => void, budgetMs = Number.POSITIVE_INFINITY): SimStats {
  const totals = emptyStats();
  const started = performance.now();
  let lastReport = started;
  for (let k = 0; k < plan.count; k++) {
    const seed = plan.firstSeed + k;
    const stats = runSeed(seed, plan.steps, process.env.SIM_TRACE ? progress : null);
    if (stats.groupsStopped > 0) progress(`sim: seed ${seed} stopped ${stats.groupsStopped} groups by a driver assertion; replay: SIM_SEED=${seed} SIM_STEPS=${plan.steps} SIM_TRACE=1 npm run sim`);
    addStats(totals, stats);
    const now = performance.now();
    if (now - lastReport > 10_000) {
      progress(`sim: ${totals.seeds} seeds, ${totals.steps} steps, ${((now - started) / 1000).toFixed(0)} s`);
      lastReport = now;
    }
    if (now - started > budgetMs) break;
  }
  progress(summary(totals, performance.now() - started));
  return totals;
}

function summary(t: SimStats, wallMs: number): string {
  return [
    `sim: ${t.seeds} seeds, ${t.steps} steps in ${(wallMs / 1000).toFixed(1)} s (${Math.round(t.steps / (wallMs / 1000))} steps/s), ${(t.virtualMs / 1000).toFixed(0)} s of virtual time`,
    `  network: ${t.packetsDelivered} packets delivered, ${t.packetsDropped} dropped, ${t.packetsDuplicated} duplicated, ${t.raftMessages} Raft messages; ${t.ticks} ticks`,
    `  faults injected: ${t.faults} (${t.crashes} crashes losing ${t.walBatchesLost} WAL and ${t.stateBatchesLost} state batches, ${t.wipes} wipes, ${t.partitions} partitions, ${t.pauses} pauses, restarts/heals/resumes)`,
    `  membership: ${t.wipes} wipes, ${t.joins} joins, ${t.leaves} leaves; coordinator: ${t.coordinatorRounds} rounds with steps, ${t.confChangesRequested} changes requested (${t.confChangesStale} stale, ${t.confChangesLagging} lagging, ${t.confChangesRefused} refused), ${t.confChangesProposed} proposed, ${t.confChangesApplied} applied, ${t.leaderMoves} leadership moves; ${t.replicasStarted} replicas started, ${t.retirements} retired, ${t.lingering} lingering at the end`,
    `  raft: ${t.leadersElected} leaders elected, ${t.snapshotsInstalled} snapshots installed, ${t.quiesces} quiesces, ${t.groupsStopped} groups stopped by a driver assertion`,
    `  clients: ${t.ops} ops (${t.clientRequests} requests): ${t.acked} acked, ${t.failed} refused, ${t.indeterminate} indeterminate`,
    `  checked: ${t.writesChecked} acknowledged writes, ${t.readsChecked} reads; losses found: ${t.lossesFound}`,
  ].join('\n');
}
