// Cluster membership, pure: who owns which Raft replica, how a cluster is
// founded, and what the coordinator changes when a node comes back without
// its data (SPEC §6). No I/O; runtime/cluster.ts feeds it.
//
// Replica ids. A replica id names one replica's whole life: once it has
// voted or acknowledged entries, nothing else may ever speak under it. A
// node that loses its data dir (or finds it damaged) therefore cannot take
// its old replicas back; it starts over under a new *incarnation* (random,
// chosen when its data dir is created) and gets new replicas:
//   founding replicas:   `<node>`                (the incarnation in the founding record)
//   replicas added later: `<node>#<incarnation>`
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
// one single-server step: drop a voter of a dead incarnation of a live node
// (the group keeps a majority of the rest), then add that node's current
// incarnation. Removing first keeps the group writable: adding first would
// make a group with a dead voter need the new, empty replica in its quorum
// before it has caught up.
import { replicasOf } from './placement.js';

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

export function nodeOf(replica: string): string {
  const at = replica.indexOf(SEP);
  return at < 0 ? replica : replica.slice(0, at);
}

export function replicaIdOf(node: string, incarnation: string): string {
  return `${node}${SEP}${incarnation}`;
}

/** The incarnation a replica belongs to (founding replicas: the founding record's). */
export function incarnationOf(replica: string, founding: Founding): string | null {
  const at = replica.indexOf(SEP);
  if (at >= 0) return replica.slice(at + 1);
  return founding.find((m) => m.name === replica)?.incarnation ?? null;
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
 * `live`: live node → its current incarnation.
 */
export function planSteps(groups: readonly GroupView[], live: ReadonlyMap<string, string>, founding: Founding, max: number): ConfStep[] {
  const steps: ConfStep[] = [];
  for (const g of groups) {
    if (steps.length >= max) break;
    const stale = g.voters.find((v) => {
      const current = live.get(nodeOf(v));
      return current !== undefined && incarnationOf(v, founding) !== current;
    });
    if (stale !== undefined) {
      // The rest must still be a majority of the old set, or the change could not commit anyway.
      if (g.voters.length - 1 >= Math.floor(g.voters.length / 2) + 1) {
        steps.push({ group: g.group, voters: g.voters.filter((v) => v !== stale), why: `${stale} belongs to a lost incarnation` });
      }
      continue;
    }
    const want = foundingVoters(g.group, founding);
    const hosted = new Set(g.voters.map(nodeOf));
    const missing = want.find((n) => !hosted.has(n) && live.has(n));
    if (missing !== undefined && g.voters.length < want.length) {
      steps.push({ group: g.group, voters: [...g.voters, replicaIdOf(missing, live.get(missing)!)], why: `${missing} has no replica` });
    }
  }
  return steps;
}

/** The coordinator: the lowest-named live node. */
export function coordinatorOf(live: Iterable<string>): string | null {
  let low: string | null = null;
  for (const n of live) if (low === null || n < low) low = n;
  return low;
}
