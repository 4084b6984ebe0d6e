// The independent observer of the Raft layer. The simulated drivers report
// what their cores did; the observer keeps the global history and throws a
// SafetyViolation the moment one of these fails:
//  - election safety: at most one leader per term per group;
//  - committed entries never change: every replica that learns index i is
//    committed has the same entry at i;
//  - leader completeness: a leader of term T holds every entry committed in
//    an earlier term;
//  - state machine safety: every replica applies the same entry at each
//    index and reaches the same state (a hash chain, snapshots included);
//  - one value per (conversation, seq) across replicas and time;
//  - log matching (checkLogMatching, on demand): two logs that agree on the
//    term at an index agree on every entry up to it.
// Replicas are named by their replica ids (runtime/membership.ts): a node
// back as a new incarnation has new replicas, and the histories are per
// group and index, so they hold across membership changes.
import type { MemoryStorage } from '../../runtime/raft/log.js';
import { EntryType, type Entry, type NodeId } from '../../runtime/raft/types.js';
import { entryKey, type StateBatch } from './machine.js';

export class SafetyViolation extends Error {
  override readonly name = 'SafetyViolation';
}

interface Committed {
  key: string;
  /** A term >= the one in which the entry was committed (the reporting replica's term). */
  term: number;
}

interface GroupHistory {
  leaders: Map<number, NodeId>;
  committed: Committed[];
  maxCommitted: number;
  applied: string[];
  chains: number[];
}

export class RaftObserver {
  private readonly groups = new Map<number, GroupHistory>();
  /** conversation → message JSON by seq - 1, the first value any replica wrote. */
  private readonly messageValues = new Map<string, string[]>();
  leadersElected = 0;
  /** ConfChange entries applied, once per group and index. */
  confChangesApplied = 0;

  /**
   * `node` leads `group` in `term`. `entryAt` reads its log at that moment;
   * below `firstIndex` the log is compacted (covered by the applied state).
   */
  leaderElected(group: number, node: NodeId, term: number, firstIndex: number, entryAt: (index: number) => Entry | undefined): void {
    const h = this.history(group);
    const prev = h.leaders.get(term);
    if (prev !== undefined && prev !== node) throw new SafetyViolation(`election safety: group ${group} term ${term} has two leaders, ${prev} and ${node}`);
    if (prev !== undefined) return;
    h.leaders.set(term, node);
    this.leadersElected++;
    for (let i = Math.max(firstIndex, 1); i <= h.maxCommitted; i++) {
      const c = h.committed[i];
      if (c === undefined || c.term >= term) continue;
      const e = entryAt(i);
      if (e === undefined || entryKey(e) !== c.key) {
        throw new SafetyViolation(`leader completeness: ${node} leads group ${group} in term ${term} without committed entry ${i} (${c.key}); has ${e === undefined ? 'nothing' : entryKey(e)}`);
      }
    }
  }

  /** `node`, in `term`, knows (commitFrom, commitTo] of `group` are committed; `storage` holds its log. */
  committed(group: number, node: NodeId, term: number, storage: MemoryStorage, commitFrom: number, commitTo: number): void {
    const lo = Math.max(commitFrom + 1, storage.firstIndex());
    if (lo > commitTo) return;
    if (commitTo > storage.lastIndex()) throw new SafetyViolation(`${node} group ${group}: commit ${commitTo} beyond its log (last ${storage.lastIndex()})`);
    const h = this.history(group);
    const ents = storage.entries(lo, commitTo + 1, Number.POSITIVE_INFINITY);
    for (const e of ents) {
      const key = entryKey(e);
      const c = h.committed[e.index];
      if (c === undefined) h.committed[e.index] = { key, term };
      else if (c.key !== key) throw new SafetyViolation(`committed entry changed: group ${group} index ${e.index} was ${c.key}, ${node} has ${key}`);
    }
    if (commitTo > h.maxCommitted) h.maxCommitted = commitTo;
  }

  /** `node` applied `e` and its state chain became `chain`. */
  applied(group: number, node: NodeId, e: Entry, chain: number): void {
    const h = this.history(group);
    const key = entryKey(e);
    const prev = h.applied[e.index];
    if (prev === undefined) {
      h.applied[e.index] = key;
      if (e.type === EntryType.ConfChange) this.confChangesApplied++;
    } else if (prev !== key) throw new SafetyViolation(`state machine safety: ${node} applied ${key} at group ${group} index ${e.index}, another replica applied ${prev}`);
    const c = h.committed[e.index];
    if (c !== undefined && c.key !== key) throw new SafetyViolation(`${node} applied ${key} at group ${group} index ${e.index}, where ${c.key} is committed`);
    this.chainAt(group, node, e.index, chain);
  }

  /** `node` installed a snapshot: its state at `index` is `chain`. */
  installed(group: number, node: NodeId, index: number, chain: number): void {
    this.chainAt(group, node, index, chain);
  }

  /** Every message a replica writes must be the one value of its (conversation, seq). */
  stateWritten(node: NodeId, batch: StateBatch): void {
    for (const op of batch.ops) {
      if (op.kind !== 'message') continue;
      let values = this.messageValues.get(op.id);
      if (values === undefined) this.messageValues.set(op.id, (values = []));
      const prev = values[op.seq - 1];
      if (prev === undefined) values[op.seq - 1] = op.json;
      else if (prev !== op.json) throw new SafetyViolation(`two values for ${op.id} seq ${op.seq}: ${node} wrote ${op.json}, another replica ${prev}`);
    }
  }

  /** Log matching over the logs of a group's live replicas. */
  checkLogMatching(group: number, logs: readonly { node: NodeId; storage: MemoryStorage }[]): void {
    for (let a = 0; a < logs.length; a++) {
      for (let b = a + 1; b < logs.length; b++) checkPair(group, logs[a], logs[b]);
    }
  }

  private chainAt(group: number, node: NodeId, index: number, chain: number): void {
    const h = this.history(group);
    const prev = h.chains[index];
    if (prev === undefined) h.chains[index] = chain;
    else if (prev !== chain) throw new SafetyViolation(`state machine safety: ${node} group ${group} state at ${index} diverges from another replica's`);
  }

  private history(group: number): GroupHistory {
    let h = this.groups.get(group);
    if (h === undefined) this.groups.set(group, (h = { leaders: new Map(), committed: [], maxCommitted: 0, applied: [], chains: [] }));
    return h;
  }
}

function checkPair(group: number, a: { node: NodeId; storage: MemoryStorage }, b: { node: NodeId; storage: MemoryStorage }): void {
  const sa = a.storage;
  const sb = b.storage;
  // The snapshot point of a log has a known term but no entry.
  const lo = Math.max(sa.firstIndex() - 1, sb.firstIndex() - 1);
  const hi = Math.min(sa.lastIndex(), sb.lastIndex());
  let agreed = false;
  for (let i = hi; i >= lo && i >= 1; i--) {
    const same = sa.term(i) === sb.term(i);
    if (!same) {
      if (agreed) throw new SafetyViolation(`log matching: group ${group} ${a.node}/${b.node} agree above index ${i} but not at it`);
      continue;
    }
    agreed = true;
    if (i >= sa.firstIndex() && i >= sb.firstIndex()) {
      const ka = entryKey(sa.entries(i, i + 1, 0)[0]);
      const kb = entryKey(sb.entries(i, i + 1, 0)[0]);
      if (ka !== kb) throw new SafetyViolation(`log matching: group ${group} ${a.node}/${b.node} differ at index ${i} in one term: ${ka} vs ${kb}`);
    }
  }
}
