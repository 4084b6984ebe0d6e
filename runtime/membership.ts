// Cluster membership, pure: who owns which Raft replica, how a cluster is
// founded, and what the coordinator changes when a node comes back without
// its data (SPEC §6). No I/O; runtime/cluster.ts feeds it.
//
// Replica ids. A replica id names one replica's whole life: once it has
// voted or acknowledged entries, nothing else may ever speak under it. A
// node that loses its data dir (or finds it damaged) therefore cannot take
// its old replicas back; it starts over under a new *incarnation* (random,
// chosen when its data dir is created) and gets new replicas:
//   founding replicas:    `<node>`                        (the incarnation in the founding record)
//   replicas added later: `<node>#<incarnation>.<term>.<index>`
// The coordinator names the node and incarnation; the group leader appends
// the serial, its term and the log index of the conf change that adds it, so
// a replica removed from a node and added back later is a new one. Serials
// grow with the time of the proposal, across leaders too: a conf change takes
// effect when appended (raft/core.ts), so a new replica may start for an add
// that a later leader overwrites, and that leader's own add, perhaps at a
// lower index, must still name a newer replica. A node keeps, per group, the
// last replica it retired and never starts one at or below it.
// Node names never contain '#' (runtime/config.ts), so the node of any
// replica id is the part before it.
//
// Founding. Fresh nodes announce {name, incarnation, founding record or none}.
// A node that hears a founding record adopts it; a node that has heard every
// listed node, all without one, founds the cluster with all of them: every
// node computes the same record from the same announcements. A node whose
// incarnation is not the founding one (its data dir was lost) hosts no
// founding replica: the coordinator replaces them.
//
// Coordinator: the lowest-named live node. Each round it looks at every
// group's voters as their leaders report them and, per group, takes at most
// one single-server step towards the placement over the current members
// (rendezvous hash, placement.ts replicasOf), in this order:
//   1. drop a replica of a lost incarnation of a live node (its data is gone);
//   2. drop a replica on a node that left the membership and is down;
//   3. add a replica on a placed node that has none (its current incarnation)
//      when the group is short of replicas or all its voters are up;
//   4. drop a replica on a node that is no longer placed there, once the
//      group has more voters than its placement (the leader checks that the
//      rest have caught up before it proposes the change).
// A dead replica is removed before its replacement is added: adding first
// would make the group's quorum need the new, empty replica before it has
// caught up. A live one is replaced add-first, so the group never runs short.
// A removal needs a majority of the old voters to remain, or it could not
// commit anyway.
import { rankedNodes, replicasOf } from './placement.js';
import { majority } from './raft/quorum.js';
import type { RaftStatus } from './raft/core.js';

export interface FoundingMember {
  name: string;
  incarnation: string;
}

/** The founding record: the nodes and incarnations a cluster was created with. */
export type Founding = FoundingMember[];

export interface Announcement {
  name: string;
  incarnation: string;
  founding: Founding | null;
}

const SEP = '#';

/** When the leader added a replica: its term and the index of the conf change. */
interface Serial {
  term: number;
  index: number;
}

const FOUNDING_SERIAL: Serial = { term: 0, index: 0 };

/** A replica id's parts: incarnation null for a founding replica, serial null while the leader has not named it. */
function parse(replica: string): { node: string; incarnation: string | null; serial: Serial | null } {
  const at = replica.indexOf(SEP);
  if (at < 0) return { node: replica, incarnation: null, serial: FOUNDING_SERIAL };
  const dot = replica.indexOf('.', at);
  if (dot < 0) return { node: replica.slice(0, at), incarnation: replica.slice(at + 1), serial: null };
  const dot2 = replica.indexOf('.', dot + 1);
  return {
    node: replica.slice(0, at),
    incarnation: replica.slice(at + 1, dot),
    serial: { term: Number(replica.slice(dot + 1, dot2)), index: Number(replica.slice(dot2 + 1)) },
  };
}

export function nodeOf(replica: string): string {
  const at = replica.indexOf(SEP);
  return at < 0 ? replica : replica.slice(0, at);
}

/** A replica of `node`'s `incarnation` as the coordinator asks for it (the leader adds the serial: withSerial). */
export function replicaIdOf(node: string, incarnation: string): string {
  return `${node}${SEP}${incarnation}`;
}

/** The replica id with its serial (the leader's term, the conf change's index); `base` is replicaIdOf's. */
export function withSerial(base: string, term: number, index: number): string {
  return `${base}.${term}.${index}`;
}

/** A coordinator's id still waiting for its serial. */
export function needsSerial(replica: string): boolean {
  return parse(replica).serial === null;
}

/**
 * Does a conf change at `index` without `replica` remove it? Yes when it
 * comes after the change that added it (founding replicas: any): the older
 * ones a new replica applies while catching up never named it.
 */
export function removedBy(replica: string, index: number): boolean {
  return index > (parse(replica).serial ?? FOUNDING_SERIAL).index;
}

/** Raft ticks between two voters' campaign turns (campaignDelayTicks): several election round trips. */
const CAMPAIGN_TURN_TICKS = 2;

/**
 * When the leader's node is down, the voters still up campaign in turns, in
 * the placement's rank order (rankedNodes: every node computes the same
 * order, so no two campaign at once, and the first is the leader
 * planLeaderMoves would choose): the ticks `self` waits before its turn. One
 * with a shorter log than the next loses its turn to it.
 */
export function campaignDelayTicks(group: number, self: string, voters: readonly string[], down: ReadonlySet<string>): number {
  const turn = rankedNodes(group, voters.map(nodeOf).filter((n) => !down.has(n))).indexOf(nodeOf(self));
  return Math.max(turn, 0) * CAMPAIGN_TURN_TICKS;
}

/** Is `replica` the one of `voters` on the node the placement ranks first (planLeaderMoves' choice when all are up)? */
export function isPreferredLeader(group: number, replica: string, voters: readonly string[]): boolean {
  return campaignDelayTicks(group, replica, voters, new Set()) === 0;
}

/** A leader's voter this close to an index counts as caught up (entries in flight). */
const CAUGHT_UP_SLACK = 128;

/**
 * Does `replica` lag behind `upTo` in the leader's status? A removal must not
 * leave one in the quorum, nor a leadership move go to one. A replica that
 * never acknowledged anything lags, whatever the index.
 */
export function lags(st: RaftStatus, replica: string, upTo: number): boolean {
  const match = st.progress?.[replica]?.match ?? 0;
  return match === 0 || match + CAUGHT_UP_SLACK < upTo;
}

/** Was `replica` added after `than` (another replica of the same node; null: none, anything is newer)? */
export function isNewerReplica(replica: string, than: string | null): boolean {
  if (than === null) return true;
  const a = parse(replica).serial ?? FOUNDING_SERIAL;
  const b = parse(than).serial ?? FOUNDING_SERIAL;
  return a.term > b.term || (a.term === b.term && a.index > b.index);
}

/** The incarnation a replica belongs to (founding replicas: the founding record's). */
export function incarnationOf(replica: string, founding: Founding): string | null {
  const p = parse(replica);
  return p.incarnation ?? founding.find((m) => m.name === p.node)?.incarnation ?? null;
}

/**
 * This node's founding decision from what it has heard (its own announcement
 * among them): the record to adopt, or null to keep listening.
 */
export function decideFounding(listed: readonly string[], heard: ReadonlyMap<string, Announcement>): Founding | null {
  for (const a of heard.values()) if (a.founding !== null) return a.founding;
  if (!listed.every((n) => heard.has(n))) return null;
  return [...listed].sort().map((name) => ({ name, incarnation: heard.get(name)!.incarnation }));
}

/** Founding voters of a group: replica ids of its placement among the founding nodes. */
export function foundingVoters(group: number, founding: Founding): string[] {
  return replicasOf(
    group,
    founding.map((m) => m.name),
  );
}

/** The node hosts founding replicas only under the incarnation that founded the cluster. */
export function isFoundingIncarnation(name: string, incarnation: string, founding: Founding): boolean {
  return founding.some((m) => m.name === name && m.incarnation === incarnation);
}

/** What the coordinator knows of one group: its voters as its leader reported them. */
export interface GroupView {
  group: number;
  voters: readonly string[];
}

/** One single-server membership change for a group's leader to propose. */
export interface ConfStep {
  group: number;
  voters: string[];
  why: string;
}

/**
 * The coordinator's next steps: at most one per group, at most `max` in all
 * (each added replica is caught up by a snapshot; a burst of them is paced).
 * `live`: live node → its current incarnation; `members`: the cluster's
 * nodes now (CLUSTER_NODES or DNS), over which groups are placed.
 */
export function planSteps(
  groups: readonly GroupView[],
  live: ReadonlyMap<string, string>,
  founding: Founding,
  max: number,
  members: readonly string[] = founding.map((m) => m.name),
): ConfStep[] {
  const steps: ConfStep[] = [];
  const memberSet = new Set(members);
  for (const g of groups) {
    if (steps.length >= max) break;
    const step = planGroup(g, live, memberSet, members, founding);
    if (step !== null) steps.push(step);
  }
  return steps;
}

function planGroup(g: GroupView, live: ReadonlyMap<string, string>, memberSet: ReadonlySet<string>, members: readonly string[], founding: Founding): ConfStep | null {
  const v = g.voters;
  const remove = (victim: string, why: string): ConfStep | null =>
    v.length - 1 >= majority(v.length) ? { group: g.group, voters: v.filter((x) => x !== victim), why: `${victim} ${why}` } : null;
  const stale = v.find((r) => {
    const current = live.get(nodeOf(r));
    return current !== undefined && incarnationOf(r, founding) !== current;
  });
  if (stale !== undefined) return remove(stale, 'belongs to a lost incarnation');
  const gone = v.find((r) => !memberSet.has(nodeOf(r)) && !live.has(nodeOf(r)));
  if (gone !== undefined) return remove(gone, 'is on a node that left and is down');
  const want = replicasOf(g.group, members);
  const hosted = new Set(v.map(nodeOf));
  const missing = want.find((n) => !hosted.has(n) && live.has(n));
  if (missing !== undefined && (v.length < want.length || v.every((r) => live.has(nodeOf(r))))) {
    return { group: g.group, voters: [...v, replicaIdOf(missing, live.get(missing)!)], why: `${missing} is placed here and has no replica` };
  }
  const placed = new Set(want);
  const extra = v.find((r) => !placed.has(nodeOf(r)));
  if (extra !== undefined && v.length > want.length) return remove(extra, 'is no longer placed here');
  return null;
}

/** The coordinator: the lowest-named live node. */
/** What the coordinator knows of a group's leadership: its voters and the node its leader is on. */
export interface LeaderView {
  group: number;
  voters: readonly string[];
  leaderNode: string;
}

/** A leadership move: the group's leader hands over to `to` (one of its voters). */
export interface LeaderMove {
  group: number;
  to: string;
}

/**
 * Leaders back where the placement prefers them (rankedNodes: the first
 * member, live, hosting a voter of the group under its current incarnation),
 * at most `max`: after a restart a node leads nothing until moves give it its
 * share, and leaders elected at random are uneven (61/143/52 of 256 groups on
 * three fresh nodes here).
 */
export function planLeaderMoves(views: readonly LeaderView[], live: ReadonlyMap<string, string>, members: readonly string[], founding: Founding, max: number): LeaderMove[] {
  const moves: LeaderMove[] = [];
  for (const v of views) {
    if (moves.length >= max) break;
    for (const node of rankedNodes(v.group, members)) {
      const inc = live.get(node);
      const replica = inc === undefined ? undefined : v.voters.find((r) => nodeOf(r) === node && incarnationOf(r, founding) === inc);
      if (replica === undefined) continue;
      if (node !== v.leaderNode) moves.push({ group: v.group, to: replica });
      break;
    }
  }
  return moves;
}

export function coordinatorOf(live: Iterable<string>): string | null {
  let low: string | null = null;
  for (const n of live) if (low === null || n < low) low = n;
  return low;
}
