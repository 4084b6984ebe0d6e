// Load generator for the JetStream peer of bench/cluster: `--concurrency`
// publishes in flight to `conv.<n>` (a subject per conversation) on one
// server, each answered by JetStream's PubAck once the R3 stream has it.
// Replies come to one wildcard inbox subscription, matched by a counter, so
// the generator spends little per request (no per-request subscription or
// error object). Prints one JSON object: acknowledged, errors, rate, latency.
//
//   node dist/bench/js-publisher.js --server=nats://127.0.0.1:P --seconds=15 --concurrency=21
import { connect } from '@nats-io/transport-node';
import { DEFAULT_TEXT, partsJson, percentileSorted } from './lib.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const server = args.get('server') ?? 'nats://127.0.0.1:4222';
const seconds = Number(args.get('seconds') ?? 15);
const concurrency = Number(args.get('concurrency') ?? 21);
const conversations = Number(args.get('conversations') ?? 1000);

const nc = await connect({ servers: server, noEcho: true });
const inbox = `_INBOX.bench.${process.pid}`;
const waiting = new Map<number, (ok: boolean) => void>();
nc.subscribe(`${inbox}.*`, {
  callback: (err, m) => {
    if (err !== null) return;
    const id = Number(m.subject.slice(inbox.length + 1));
    const done = waiting.get(id);
    if (done === undefined) return;
    waiting.delete(id);
    const text = new TextDecoder().decode(m.data);
    done(text.includes('"seq"') && !text.includes('"error"'));
  },
});
const body = new TextEncoder().encode(`{"role":"user","parts":${partsJson(DEFAULT_TEXT)},"metadata":{}}`);
let next = 1;
const latencies: number[] = [];
let acked = 0;
let errors = 0;
const t0 = performance.now();
const end = t0 + seconds * 1000;

async function loop(): Promise<void> {
  while (performance.now() < end) {
    const id = next++;
    const started = performance.now();
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        resolve(false);
      }, 10_000);
      waiting.set(id, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
      nc.publish(`conv.${Math.floor(Math.random() * conversations)}`, body, { reply: `${inbox}.${id}` });
    });
    if (ok) {
      acked++;
      latencies.push(performance.now() - started);
    } else errors++;
  }
}

await Promise.all(Array.from({ length: concurrency }, loop));
const wallS = (performance.now() - t0) / 1000;
latencies.sort((a, b) => a - b);
const cpu = process.cpuUsage();
process.stdout.write(
  JSON.stringify({
    acked,
    errors,
    rate: acked / wallS,
    p50Ms: percentileSorted(latencies, 50),
    p99Ms: percentileSorted(latencies, 99),
    cpuS: (cpu.user + cpu.system) / 1e6,
    wallS,
  }) + '\n',
);
await nc.close();
