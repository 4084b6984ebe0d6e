// Counters of one simulated run, summed over seeds by the test and the campaign.
//
// A step is one event the simulation injects or the system reacts to: a
// packet between nodes delivered or dropped (one packet carries a turn's Raft
// messages for one peer, or is a keepalive), a node tick, a client request
// sent, or a fault (crash, wipe, restart, partition, heal, pause, resume). Work
// that follows from a step (Ready turns, fsync completions, applies, replies,
// checkpoints) is not counted.

export interface SimStats {
  seeds: number;
  steps: number;
  virtualMs: number;
  packetsDelivered: number;
  packetsDropped: number;
  packetsDuplicated: number;
  raftMessages: number;
  ticks: number;
  clientRequests: number;
  faults: number;
  crashes: number;
  walBatchesLost: number;
  stateBatchesLost: number;
  partitions: number;
  pauses: number;
  /** Nodes that crashed and lost their disks, back as a new incarnation. */
  wipes: number;
  /** Coordinator rounds that planned at least one step. */
  coordinatorRounds: number;
  /** Membership changes the coordinator asked a leader for. */
  confChangesRequested: number;
  /** Refused by the leader: its voters were not the ones the coordinator saw. */
  confChangesStale: number;
  /** Refused otherwise (not the leader, a change pending, no replica). */
  confChangesRefused: number;
  confChangesProposed: number;
  /** ConfChange entries applied (counted once per group and index). */
  confChangesApplied: number;
  /** Refused by the leader: a remaining voter had not caught up. */
  confChangesLagging: number;
  /** Leadership transfers a leader started for the coordinator (planLeaderMoves). */
  leaderMoves: number;
  /** Replicas started on a node by a leader's first message. */
  replicasStarted: number;
  /** Replicas that applied their own removal and were retired (state deleted). */
  retirements: number;
  /** Member changes: a node joined, a node left. */
  joins: number;
  leaves: number;
  /** At the end: replicas hosted on nodes outside their group's placement (removed but never retired). */
  lingering: number;
  /** Groups the driver stopped on a failed assertion (the supervisor restarts the node). */
  groupsStopped: number;
  leadersElected: number;
  /** Times an idle group's leader quiesced. */
  quiesces: number;
  snapshotsInstalled: number;
  /** Client operations (one logical append/put/read/tombstone, retries included). */
  ops: number;
  acked: number;
  failed: number;
  indeterminate: number;
  /** Acknowledged appends verified against the final replicas. */
  writesChecked: number;
  readsChecked: number;
  /** Acknowledged appends missing or changed in the final state (any is a failure). */
  lossesFound: number;
}

export function emptyStats(): SimStats {
  return {
    seeds: 0,
    steps: 0,
    virtualMs: 0,
    packetsDelivered: 0,
    packetsDropped: 0,
    packetsDuplicated: 0,
    raftMessages: 0,
    ticks: 0,
    clientRequests: 0,
    faults: 0,
    crashes: 0,
    walBatchesLost: 0,
    stateBatchesLost: 0,
    partitions: 0,
    pauses: 0,
    wipes: 0,
    coordinatorRounds: 0,
    confChangesRequested: 0,
    confChangesStale: 0,
    confChangesRefused: 0,
    leaderMoves: 0,
    confChangesProposed: 0,
    confChangesApplied: 0,
    confChangesLagging: 0,
    replicasStarted: 0,
    retirements: 0,
    joins: 0,
    leaves: 0,
    lingering: 0,
    groupsStopped: 0,
    leadersElected: 0,
    quiesces: 0,
    snapshotsInstalled: 0,
    ops: 0,
    acked: 0,
    failed: 0,
    indeterminate: 0,
    writesChecked: 0,
    readsChecked: 0,
    lossesFound: 0,
  };
}

export function addStats(into: SimStats, s: SimStats): void {
  for (const k of Object.keys(into) as (keyof SimStats)[]) into[k] += s[k];
}
