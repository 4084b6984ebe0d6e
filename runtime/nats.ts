// NATS for stream events (SPEC §5): every committed event of every
// conversation is published once on `<prefix>.conversations.<id>.events`,
// in apply order (one connection; NATS keeps a publisher's order). The Raft
// transport (runtime/cluster.ts) shares the connection.
import fs from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { StreamEvent } from '../actors/events.js';
import { ConfigError, type NatsConfig } from './config.js';
import { log } from './log.js';
import { metrics } from '../gateway/metrics.js';

/** How long boot waits for NATS before it stops with one line. */
const CONNECT_TIMEOUT_MS = 5000;

export const eventSubject = (prefix: string, id: string) => `${prefix}.conversations.${id}.events`;
/** Internal: a group leader's once-a-second "this conversation is at seq N", for gateways that stream it without a replica. */
const headSubject = (prefix: string, id: string) => `${prefix}.conversations.${id}.head`;

/** An event too large for the server's max payload goes out as this stub; readers fetch the body from the log. */
export function truncatedEvent(ev: StreamEvent): string {
  const version = /"version":([0-9]+)/.exec(ev.json)?.[1] ?? 'null';
  return `{"type":"message","seq":${ev.seq},"version":${version},"message":null,"truncated":true}`;
}

export class EventPublisher {
  private failed = 0;

  private constructor(
    /** Shared with the Raft transport (runtime/cluster.ts). */
    readonly nc: NatsConnection,
    readonly prefix: string,
  ) {}

  static async connect(cfg: NatsConfig, nodeName: string): Promise<EventPublisher> {
    const opts: NodeConnectionOptions = {
      servers: cfg.servers,
      name: `fleetlm-${nodeName}`,
      timeout: CONNECT_TIMEOUT_MS,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
    };
    if (cfg.user !== null) {
      opts.user = cfg.user;
      opts.pass = cfg.password ?? '';
    }
    if (cfg.token !== null) opts.token = cfg.token;
    if (cfg.credsFile !== null) opts.authenticator = credsAuthenticator(fs.readFileSync(cfg.credsFile));
    if (cfg.tls !== null) {
      opts.tls = {
        ...(cfg.tls.caFile ? { caFile: cfg.tls.caFile } : {}),
        ...(cfg.tls.certFile ? { certFile: cfg.tls.certFile } : {}),
        ...(cfg.tls.keyFile ? { keyFile: cfg.tls.keyFile } : {}),
      };
    }
    let nc: NatsConnection;
    try {
      nc = await connect(opts);
    } catch (err) {
      throw new ConfigError('NATS_URL', `cannot connect to ${cfg.servers.join(',')}: ${(err as Error).message}`);
    }
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect' || s.type === 'reconnect') log('warn', `nats_${s.type}`, `NATS ${s.type}`, { server: nc.getServer() });
      }
    })();
    log('info', 'nats_connected', 'connected to NATS', { server: nc.getServer(), max_payload: nc.info?.max_payload });
    return new EventPublisher(nc, cfg.subjectPrefix);
  }

  get connected(): boolean {
    return !this.nc.isClosed() && this.nc.info !== undefined && !this.nc.isDraining();
  }

  /** Never throws: a publish the client refuses (connection closed) is counted and logged, the node goes on. */
  publish(ev: StreamEvent): void {
    const max = this.nc.info?.max_payload ?? 1024 * 1024;
    try {
      if (ev.type === 'head') {
        this.nc.publish(headSubject(this.prefix, ev.id), String(ev.seq));
        return;
      }
      // Leave room for NATS's own framing; compare bytes, not UTF-16 units.
      const body = Buffer.byteLength(ev.json) + 256 > max ? truncatedEvent(ev) : ev.json;
      this.nc.publish(eventSubject(this.prefix, ev.id), body);
      metrics.natsPublished.inc();
    } catch (err) {
      metrics.natsPublishFailures.inc();
      if (this.failed++ % 1000 === 0) log('error', 'nats_publish_failed', 'NATS refused an event', { err: String(err), failed: this.failed });
    }
  }

  /**
   * The events (and leader heads) of one conversation as the group leader
   * publishes them, for a gateway without a local replica. A truncated
   * message is dropped: the hub heals it from the log when the next event or
   * head shows the hole. Returns the unsubscribe.
   */
  subscribe(id: string, onEvent: (ev: StreamEvent) => void): () => void {
    const sub = this.nc.subscribe(`${this.prefix}.conversations.${id}.*`, {
      callback: (err, m) => {
        if (err !== null) return;
        const ev = eventFromNats(id, m.subject.endsWith('.head'), m.string());
        if (ev !== null) onEvent(ev);
      },
    });
    return () => sub.unsubscribe();
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}

const EVENT_TYPES = new Set(['message', 'tombstone', 'gap', 'context', 'compaction']);

/** A published event back as the hub's StreamEvent; null for what the hub cannot use. */
export function eventFromNats(id: string, head: boolean, text: string): StreamEvent | null {
  if (head) {
    const seq = Number(text);
    return Number.isSafeInteger(seq) && seq > 0 ? { id, seq, type: 'head', json: '' } : null;
  }
  const type = /^\{"type":"([a-z]+)"/.exec(text)?.[1];
  if (type === undefined || !EVENT_TYPES.has(type)) return null;
  if (type !== 'message') return { id, seq: 0, type: type as StreamEvent['type'], json: text };
  if (text.includes('"truncated":true')) return null;
  const seq = Number(/^\{"type":"message","seq":([0-9]+),/.exec(text)?.[1]);
  return Number.isSafeInteger(seq) && seq > 0 ? { id, seq, type: 'message', json: text } : null;
}
