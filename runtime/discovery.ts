// DNS cluster discovery (DNS_CLUSTER_QUERY): the A records of one name (e.g.
// a Kubernetes headless service) are the cluster's nodes, each named
// `<basename>@<ipv4>` as Elixir's dns_cluster does.
import { isIPv4 } from 'node:net';
import { Resolver } from 'node:dns/promises';
import { log } from './log.js';

// No '@', so a node name splits unambiguously at its one '@'; at most 48
// chars, so `basename@255.255.255.255` still fits the 64-char node name limit.
export const BASENAME_RE = /^[A-Za-z0-9_.:-]{1,48}$/;

// A lookup gives up after LOOKUP_TRIES * LOOKUP_TIMEOUT_MS; the next poll is
// scheduled only after it settles, so lookups never pile up.
const LOOKUP_TIMEOUT_MS = 1000;
const LOOKUP_TRIES = 2;

/** Sorted, deduplicated `basename@ip` node names of the IPv4 addresses; anything else is ignored. */
export function nodeNamesFromAddresses(basename: string, addresses: string[]): string[] {
  const names = new Set(addresses.filter((a) => isIPv4(a)).map((a) => `${basename}@${a}`));
  return [...names].sort();
}

export interface DnsDiscoveryOptions {
  query: string;
  basename: string;
  intervalMs: number;
  /** `host:port` DNS servers instead of the system's (tests point this at a loopback server). */
  servers?: string[];
}

export class DnsDiscovery {
  private readonly query: string;
  private readonly basename: string;
  private readonly intervalMs: number;
  private readonly resolver: Resolver;
  private names: string[] = [];
  // Failure messages already logged since the last good lookup: a DNS outage
  // polled every few seconds must not flood the log.
  private readonly warned = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;

  constructor(opts: DnsDiscoveryOptions) {
    if (!BASENAME_RE.test(opts.basename)) {
      throw new Error(`DNS cluster node basename must be 1-48 chars of [A-Za-z0-9_.:-], got ${JSON.stringify(opts.basename)}`);
    }
    this.query = opts.query;
    this.basename = opts.basename;
    this.intervalMs = opts.intervalMs;
    this.resolver = new Resolver({ timeout: LOOKUP_TIMEOUT_MS, tries: LOOKUP_TRIES });
    if (opts.servers) this.resolver.setServers(opts.servers);
  }

  /** The node names the query resolves to now; throws on DNS failure (including NXDOMAIN and no A records). */
  async resolveOnce(): Promise<string[]> {
    return nodeNamesFromAddresses(this.basename, await this.resolver.resolve4(this.query));
  }

  /** Looks up now and then every intervalMs; onChange gets the sorted node list whenever it differs from the last one. */
  start(onChange: (names: string[]) => void): void {
    if (this.started) throw new Error('DnsDiscovery.start called twice');
    this.started = true;
    void this.poll(onChange);
  }

  /** Stops polling and abandons a lookup in flight; onChange is not called again. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.resolver.cancel();
  }

  private async poll(onChange: (names: string[]) => void): Promise<void> {
    const outcome = await this.resolveOnce().catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.poll(onChange), this.intervalMs).unref();
    // A failed lookup keeps the last list: a DNS hiccup must not shrink the
    // cluster. An answer without addresses fails too (resolve4's ENODATA).
    if (outcome instanceof Error) return this.warnOnce(outcome.message);
    this.warned.clear();
    if (sameList(outcome, this.names)) return;
    this.names = outcome;
    onChange(outcome);
  }

  private warnOnce(error: string): void {
    if (this.warned.has(error)) return;
    this.warned.add(error);
    log('warn', 'dns_discovery_failed', 'DNS cluster lookup failed; keeping the last node list', {
      query: this.query,
      error,
      nodes: this.names,
    });
  }
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
