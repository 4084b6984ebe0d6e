// DNS cluster discovery: the pure name mapping, then DnsDiscovery against a
// loopback DNS server whose records the tests change between polls.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { DnsDiscovery, nodeNamesFromAddresses } from '../../runtime/discovery.js';
import { type DnsServer, startDnsServer } from '../integration/dns-server.js';

const QUERY = 'fleetlm-headless.default.svc.cluster.local';
const INTERVAL_MS = 50;

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Lets `polls` more lookups reach the server, so a test can check what they did not do. */
async function letPoll(server: DnsServer, polls: number): Promise<void> {
  const target = server.queries + polls;
  await waitFor(`${polls} more lookups`, () => server.queries >= target);
}

/** A DNS server and a discovery pointed at it, both stopped when the test ends. */
async function setup(t: TestContext, basename = 'fleetlm'): Promise<{ server: DnsServer; discovery: DnsDiscovery }> {
  const server = await startDnsServer();
  t.after(() => server.stop());
  const discovery = new DnsDiscovery({ query: QUERY, basename, intervalMs: INTERVAL_MS, servers: [`127.0.0.1:${server.port}`] });
  t.after(() => discovery.stop());
  return { server, discovery };
}

/** The dns_discovery_failed warnings logged while fn runs; other output passes through. */
async function captureWarnings(fn: () => Promise<void>): Promise<Array<Record<string, unknown>>> {
  const warnings: Array<Record<string, unknown>> = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    if (typeof chunk === 'string' && chunk.includes('"dns_discovery_failed"')) {
      warnings.push(JSON.parse(chunk) as Record<string, unknown>);
      return true;
    }
    return (write as (...args: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
  }) as typeof process.stdout.write;
  try {
    await fn();
  } finally {
    process.stdout.write = write;
  }
  return warnings;
}

test('discovery - node names are basename@ipv4, sorted and deduplicated; non-IPv4 addresses are dropped', () => {
  assert.deepEqual(
    nodeNamesFromAddresses('fleetlm', ['10.0.0.9', '10.0.0.10', '10.0.0.9', '::1', 'fe80::1', 'node-a', '256.1.1.1', '10.0.0', '010.0.0.1', '']),
    ['fleetlm@10.0.0.10', 'fleetlm@10.0.0.9'],
  );
  assert.deepEqual(nodeNamesFromAddresses('app', []), []);
  // Every name fits the node name rule, even for the longest basename and address.
  const longest = nodeNamesFromAddresses('b'.repeat(48), ['255.255.255.255']);
  assert.match(longest[0], /^[A-Za-z0-9_.@:-]{1,64}$/);
});

test('discovery - a basename that would make invalid node names is refused', () => {
  for (const basename of ['', 'a@b', 'has space', 'b'.repeat(49)]) {
    assert.throws(() => new DnsDiscovery({ query: QUERY, basename, intervalMs: INTERVAL_MS }), /basename/, basename);
  }
});

test('discovery - resolveOnce returns the node names of the A records and throws when there are none', async (t) => {
  const { server, discovery } = await setup(t, 'chat');
  server.setA(QUERY, ['10.1.0.7', '10.1.0.3', '10.1.0.7']);
  assert.deepEqual(await discovery.resolveOnce(), ['chat@10.1.0.3', 'chat@10.1.0.7']);
  server.setA(QUERY, ['10.1.0.4']);
  assert.deepEqual(await discovery.resolveOnce(), ['chat@10.1.0.4']);
  server.setA(QUERY, []);
  await assert.rejects(discovery.resolveOnce(), { code: 'ENODATA' });
  server.unset(QUERY);
  await assert.rejects(discovery.resolveOnce(), { code: 'ENOTFOUND' });
});

test('discovery - a started discovery reports the first list and then each change exactly once', async (t) => {
  const { server, discovery } = await setup(t);
  server.setA(QUERY, ['10.0.0.2', '10.0.0.1']);
  const calls: string[][] = [];
  discovery.start((names) => calls.push(names));
  await waitFor('the first list', () => calls.length === 1);
  assert.deepEqual(calls[0], ['fleetlm@10.0.0.1', 'fleetlm@10.0.0.2']);
  await letPoll(server, 3);
  assert.equal(calls.length, 1, 'an unchanged list is not reported again');

  // The same set in another order and with a duplicate is no change.
  server.setA(QUERY, ['10.0.0.1', '10.0.0.2', '10.0.0.1']);
  await letPoll(server, 3);
  assert.equal(calls.length, 1);

  server.setA(QUERY, ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
  await waitFor('the grown list', () => calls.length === 2);
  assert.deepEqual(calls[1], ['fleetlm@10.0.0.1', 'fleetlm@10.0.0.2', 'fleetlm@10.0.0.3']);
  await letPoll(server, 3);
  assert.equal(calls.length, 2);

  server.setA(QUERY, ['10.0.0.3']);
  await waitFor('the shrunk list', () => calls.length === 3);
  assert.deepEqual(calls[2], ['fleetlm@10.0.0.3']);
  await letPoll(server, 3);
  assert.equal(calls.length, 3);
});

test('discovery - NXDOMAIN and empty answers keep the last list and warn once per error until a lookup succeeds', async (t) => {
  const { server, discovery } = await setup(t);
  server.setA(QUERY, ['10.0.0.1', '10.0.0.2']);
  const calls: string[][] = [];
  const warnings = await captureWarnings(async () => {
    discovery.start((names) => calls.push(names));
    await waitFor('the first list', () => calls.length === 1);

    server.setA(QUERY, []);
    await letPoll(server, 4);
    server.unset(QUERY);
    await letPoll(server, 4);
    // Back to the same records: a success, but no change to report.
    server.setA(QUERY, ['10.0.0.2', '10.0.0.1']);
    await letPoll(server, 3);
    // The success re-arms the warning for an error already seen.
    server.setA(QUERY, []);
    await letPoll(server, 4);
  });
  assert.deepEqual(calls, [['fleetlm@10.0.0.1', 'fleetlm@10.0.0.2']], 'failures never shrink the list');
  assert.deepEqual(
    warnings.map((w) => [w.level, w.query, w.error]),
    [
      ['warn', QUERY, `queryA ENODATA ${QUERY}`],
      ['warn', QUERY, `queryA ENOTFOUND ${QUERY}`],
      ['warn', QUERY, `queryA ENODATA ${QUERY}`],
    ],
  );
  assert.deepEqual(warnings[0].nodes, calls[0]);
});

test('discovery - a cluster that never resolved reports nothing until its name appears', async (t) => {
  const { server, discovery } = await setup(t);
  const calls: string[][] = [];
  await captureWarnings(async () => {
    discovery.start((names) => calls.push(names));
    await letPoll(server, 3);
    assert.equal(calls.length, 0);
    server.setA(QUERY, ['10.0.0.5']);
    await waitFor('the first list', () => calls.length === 1);
  });
  assert.deepEqual(calls, [['fleetlm@10.0.0.5']]);
});

test('discovery - stop between polls: no more lookups and no more reports', async (t) => {
  const { server, discovery } = await setup(t);
  server.setA(QUERY, ['10.0.0.1']);
  const calls: string[][] = [];
  let queriesAtStop = -1;
  // onChange runs after the lookup settled and the next poll was scheduled.
  discovery.start((names) => {
    calls.push(names);
    queriesAtStop = server.queries;
    discovery.stop();
  });
  await waitFor('the first list', () => calls.length === 1);
  server.setA(QUERY, ['10.0.0.1', '10.0.0.2']);
  await new Promise((r) => setTimeout(r, INTERVAL_MS * 5));
  assert.equal(server.queries, queriesAtStop);
  assert.equal(calls.length, 1);
});

test('discovery - stop during a lookup abandons it: no report, no warning, no more lookups', async (t) => {
  const { server, discovery } = await setup(t);
  server.setA(QUERY, ['10.0.0.1']);
  const calls: string[][] = [];
  const warnings = await captureWarnings(async () => {
    // The first lookup is on the wire when start returns; its answer cannot arrive before stop.
    discovery.start((names) => calls.push(names));
    discovery.stop();
    await new Promise((r) => setTimeout(r, INTERVAL_MS * 5));
  });
  assert.ok(server.queries <= 1, `${server.queries} lookups`);
  assert.deepEqual(calls, []);
  assert.deepEqual(warnings, []);
});

test('discovery - stop cancels lookups in flight rather than waiting out a slow DNS server', async (t) => {
  const { server, discovery } = await setup(t);
  server.setA(QUERY, ['10.0.0.1']);
  const lookup = discovery.resolveOnce();
  discovery.stop();
  await assert.rejects(lookup, { code: 'ECANCELLED' });
});

test('discovery - start twice is refused', async (t) => {
  const { server, discovery } = await setup(t);
  server.setA(QUERY, ['10.0.0.1']);
  discovery.start(() => {});
  assert.throws(() => discovery.start(() => {}), /twice/);
});
