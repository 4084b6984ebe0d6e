// storage/archive/db.ts against a real PostgreSQL started by the test: the
// committed migrations create the tables the archiver writes, migrating again
// is a no-op, re-inserting a row is absorbed by ON CONFLICT DO NOTHING, and an
// unreachable database fails fast with one line.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { eq, sql } from 'drizzle-orm';
import { openArchive, type Archive } from '../../storage/archive/db.js';
import { messages } from '../../storage/archive/schema.js';
import { startPostgres, type Postgres } from './postgres.js';

let pgServer: Postgres;
let archive: Archive;

before(async () => {
  pgServer = await startPostgres();
  archive = await openArchive(pgServer.url, 2);
  await archive.migrate();
});
after(async () => {
  await archive?.close();
  await pgServer?.stop();
});

async function columns(table: string): Promise<Record<string, { type: string; nullable: string; dflt: string | null }>> {
  const r = await archive.pool.query(
    `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
     WHERE table_schema = 'public' AND table_name = $1`,
    [table],
  );
  return Object.fromEntries(r.rows.map((c) => [c.column_name, { type: c.data_type, nullable: c.is_nullable, dflt: c.column_default }]));
}

async function primaryKey(table: string): Promise<string[]> {
  const r = await archive.pool.query(
    `SELECT k.column_name FROM information_schema.table_constraints t
     JOIN information_schema.key_column_usage k ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema
     WHERE t.table_schema = 'public' AND t.table_name = $1 AND t.constraint_type = 'PRIMARY KEY'
     ORDER BY k.ordinal_position`,
    [table],
  );
  return r.rows.map((x) => x.column_name);
}

const TSTZ = 'timestamp with time zone';

describe('archive db', () => {
  test('migrate creates messages with its columns, primary key and index', async () => {
    assert.deepEqual(await columns('messages'), {
      conversation_id: { type: 'text', nullable: 'NO', dflt: null },
      seq: { type: 'bigint', nullable: 'NO', dflt: null },
      role: { type: 'text', nullable: 'NO', dflt: null },
      parts: { type: 'jsonb', nullable: 'NO', dflt: null },
      metadata: { type: 'jsonb', nullable: 'NO', dflt: "'{}'::jsonb" },
      token_count: { type: 'integer', nullable: 'NO', dflt: null },
      inserted_at: { type: TSTZ, nullable: 'NO', dflt: null },
    });
    assert.deepEqual(await primaryKey('messages'), ['conversation_id', 'seq']);
    const idx = await archive.pool.query(`SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = 'messages_conversation_inserted_at_idx'`);
    assert.equal(idx.rows.length, 1);
    assert.match(idx.rows[0].indexdef, /ON public\.messages USING btree \(conversation_id, inserted_at\)/);
  });

  test('migrate creates conversations with its columns and primary key', async () => {
    assert.deepEqual(await columns('conversations'), {
      id: { type: 'text', nullable: 'NO', dflt: null },
      metadata: { type: 'jsonb', nullable: 'NO', dflt: "'{}'::jsonb" },
      version: { type: 'bigint', nullable: 'NO', dflt: null },
      tombstoned: { type: 'boolean', nullable: 'NO', dflt: 'false' },
      last_seq: { type: 'bigint', nullable: 'NO', dflt: null },
      archived_seq: { type: 'bigint', nullable: 'NO', dflt: null },
      created_at: { type: TSTZ, nullable: 'NO', dflt: null },
      updated_at: { type: TSTZ, nullable: 'NO', dflt: null },
    });
    assert.deepEqual(await primaryKey('conversations'), ['id']);
  });

  test('running migrate again is a no-op', async () => {
    const applied = async () => Number((await archive.pool.query('SELECT count(*) AS n FROM drizzle.__drizzle_migrations')).rows[0].n);
    const before = await applied();
    assert.equal(before, 1);
    await archive.migrate();
    // A second pool (as a restarted node would open) sees the same state.
    const again = await openArchive(pgServer.url, 1);
    try {
      await again.migrate();
    } finally {
      await again.close();
    }
    assert.equal(await applied(), before);
  });

  test('inserting the same message twice with onConflictDoNothing keeps one row', async () => {
    const row = {
      conversationId: 'db-1',
      seq: 1,
      role: 'user',
      parts: [{ type: 'text', text: 'hi' }],
      metadata: { n: 1 },
      tokenCount: 3,
      insertedAt: new Date('2026-01-02T03:04:05.678Z'),
    };
    await archive.db.insert(messages).values(row).onConflictDoNothing();
    await archive.db.insert(messages).values({ ...row, role: 'assistant' }).onConflictDoNothing();
    const rows = await archive.db.select().from(messages).where(eq(messages.conversationId, 'db-1'));
    assert.equal(rows.length, 1);
    assert.deepEqual(rows[0], row);
    // metadata defaults to {} when omitted.
    await archive.db.insert(messages).values({ ...row, seq: 2, metadata: undefined }).onConflictDoNothing();
    const [m] = await archive.db.select({ metadata: messages.metadata }).from(messages).where(sql`${messages.conversationId} = 'db-1' AND ${messages.seq} = 2`);
    assert.deepEqual(m.metadata, {});
  });

  test('openArchive on a closed port rejects quickly with one line', async () => {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
      s.on('error', reject);
    });
    const t0 = Date.now();
    await assert.rejects(openArchive(`postgres://fleetlm@127.0.0.1:${port}/postgres`, 2), (err: Error) => {
      assert.match(err.message, /ECONNREFUSED 127\.0\.0\.1:\d+/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
    assert.ok(Date.now() - t0 < 6000, `took ${Date.now() - t0} ms`);
  });
});
