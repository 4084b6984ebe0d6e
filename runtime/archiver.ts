// Write-behind archive flusher (main thread). Every flush interval it asks
// each worker for messages the archive lacks (the workers keep the backlog on
// disk: the hot messages themselves plus a pending mark per conversation),
// writes them to Postgres in chunked multi-row INSERT … ON CONFLICT DO
// NOTHING (straight over the pg pool: the workers already encoded the JSON
// columns, so the gateway thread only passes text through), mirrors the
// conversation records (drizzle), and only then proposes
// ack_archived(conversation, upto) through Raft. A crash between insert and
// ack re-archives the same rows: duplicates are harmless. Postgres being
// down or slow never blocks appends; flushes back off with jitter and the
// backlog drains when it returns. A node only archives groups it leads
// (single node: all of them).
import { sql } from 'drizzle-orm';
import type { Archive } from '../storage/archive/db.js';
import { conversations, messages } from '../storage/archive/schema.js';
import type { ConversationRecord } from '../actors/conversation.js';
import { Op, encodeCommand } from '../actors/commands.js';
import type { ArchiveConfig } from './config.js';
import type { Dispatcher } from '../gateway/dispatch.js';
import { ReplyKind } from './replies.js';
import { ReqOp } from './wire.js';
import { groupOf } from './placement.js';
import { log } from './log.js';
import { metrics } from '../gateway/metrics.js';

/** Rows per INSERT: 7 parameters a row, far below Postgres's 65,535. */
const INSERT_CHUNK_ROWS = 1000;
const BACKOFF_MS = { first: 500, max: 30_000 };

/** [seq, role, parts JSON, metadata JSON, token_count, inserted_at] (runtime/worker.ts archiveRow). */
type Row = [number, string, string, string, number, string];

interface Batch {
  pending_conversations: number;
  batches: { record: ConversationRecord; rows: Row[] }[];
}

const COLUMNS = 7;

/** `INSERT … VALUES ($1,…,$7),(…) ON CONFLICT DO NOTHING` for `n` rows; JSON columns arrive as text. */
function insertSql(n: number): string {
  const tuples: string[] = [];
  for (let r = 0; r < n; r++) {
    const b = r * COLUMNS;
    tuples.push(`($${b + 1},$${b + 2},$${b + 3},$${b + 4}::jsonb,$${b + 5}::jsonb,$${b + 6},$${b + 7})`);
  }
  return `INSERT INTO messages (conversation_id, seq, role, parts, metadata, token_count, inserted_at) VALUES ${tuples.join(',')} ON CONFLICT DO NOTHING`;
}

export class Archiver {
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private stopped = false;
  private flushing: Promise<void> | null = null;

  constructor(
    private readonly archive: Archive,
    private readonly dispatcher: Dispatcher,
    private readonly workers: number,
    private readonly cfg: ArchiveConfig,
    private readonly tailKeep: number,
    private readonly random: () => number = Math.random,
  ) {}

  start(): void {
    this.schedule(this.cfg.flushIntervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.flushing;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.flushing = this.flushOnce().then(
        () => {
          this.failures = 0;
          this.schedule(this.cfg.flushIntervalMs);
        },
        (err: unknown) => {
          this.failures++;
          // Exponential backoff with full jitter, so a fleet does not retry in step.
          const cap = Math.min(BACKOFF_MS.max, BACKOFF_MS.first * 2 ** Math.min(this.failures, 16));
          const wait = Math.max(this.cfg.flushIntervalMs, Math.floor(this.random() * cap));
          log('warn', 'archive_flush_failed', 'archive flush failed; the backlog stays on disk', {
            err: String(err),
            retry_ms: wait,
            failures: this.failures,
          });
          this.schedule(wait);
        },
      );
    }, ms);
    this.timer.unref();
  }

  /** One flush: every worker's batch, inserted, then acknowledged through Raft. */
  async flushOnce(): Promise<void> {
    const started = performance.now();
    let pendingConversations = 0;
    let pendingRows = 0;
    const share = Math.max(1, Math.ceil(this.cfg.batchSize / this.workers));
    for (let w = 0; w < this.workers; w++) {
      const r = await this.dispatcher.request(ReqOp.ArchiveBatch, 0xffff, Buffer.from(JSON.stringify({ limit: share })), w);
      const text = Buffer.from(r.body).toString('utf8');
      if (r.kind === ReplyKind.Error) throw new Error(`worker ${w}: ${text}`);
      const batch = JSON.parse(text) as Batch;
      pendingConversations += batch.pending_conversations;
      for (const b of batch.batches) pendingRows += b.record.last_seq - b.record.archived_seq;
      await this.write(batch);
      await this.acknowledge(batch);
    }
    metrics.archivePendingConversations.set(pendingConversations);
    metrics.archivePendingRows.set(pendingRows);
    metrics.archiveFlushDuration.observe(performance.now() - started);
  }

  private async write(batch: Batch): Promise<void> {
    const rows: { id: string; row: Row }[] = batch.batches.flatMap((b) => b.rows.map((row) => ({ id: b.record.id, row })));
    for (let i = 0; i < rows.length; i += INSERT_CHUNK_ROWS) {
      const chunk = rows.slice(i, i + INSERT_CHUNK_ROWS);
      const params: unknown[] = [];
      let bytes = 0;
      let tokens = 0;
      for (const { id, row } of chunk) {
        params.push(id, ...row);
        bytes += row[1].length + row[2].length + row[3].length;
        tokens += row[4];
      }
      metrics.archiveAttempted.inc(chunk.length);
      metrics.archiveBytesAttempted.inc(bytes);
      metrics.archiveLlmTokens.inc(tokens);
      const res = await this.archive.pool.query(insertSql(chunk.length), params);
      const inserted = res.rowCount ?? 0;
      metrics.archiveInserted.inc(inserted);
      metrics.archiveBytesInserted.inc(Math.round((bytes * inserted) / chunk.length));
    }
    if (batch.batches.length === 0) return;
    const records = batch.batches.map(({ record: r, rows: ms }) => ({
      id: r.id,
      metadata: r.metadata,
      version: r.version,
      tombstoned: r.tombstoned,
      lastSeq: r.last_seq,
      archivedSeq: ms.length > 0 ? ms[ms.length - 1][0] : r.archived_seq,
      createdAt: new Date(r.created_at),
      updatedAt: new Date(r.updated_at),
    }));
    await this.archive.db
      .insert(conversations)
      .values(records)
      .onConflictDoUpdate({
        target: conversations.id,
        set: {
          metadata: sql`excluded.metadata`,
          version: sql`excluded.version`,
          tombstoned: sql`excluded.tombstoned`,
          lastSeq: sql`excluded.last_seq`,
          archivedSeq: sql`excluded.archived_seq`,
          updatedAt: sql`excluded.updated_at`,
        },
      });
  }

  /** Every row up to `upto` is in Postgres now: the hot tier may let them go. */
  private async acknowledge(batch: Batch): Promise<void> {
    await Promise.all(
      batch.batches.map(async ({ record, rows: ms }) => {
        if (ms.length === 0) return;
        const upto = ms[ms.length - 1][0];
        const cmd = encodeCommand({ op: Op.AckArchived, id: record.id, nowMs: 0, seq: upto, tailKeep: this.tailKeep });
        const r = await this.dispatcher.request(ReqOp.Propose, groupOf(record.id), cmd);
        if (r.kind !== ReplyKind.Ok) throw new Error(`ack_archived ${record.id}@${upto}: ${Buffer.from(r.body).toString('utf8')}`);
        const done = JSON.parse(Buffer.from(r.body).toString('utf8')) as { archived_seq: number; trimmed_seq: number };
        metrics.archiveTailSize.observe(record.last_seq - done.trimmed_seq);
        if (done.trimmed_seq > record.trimmed_seq) metrics.archiveTrimmed.inc(done.trimmed_seq - record.trimmed_seq);
        metrics.archiveLag.observe(record.last_seq - done.archived_seq);
      }),
    );
  }
}

/** Archived messages lo..hi of a conversation as stored message record texts (same members, same order). */
export async function readArchived(archive: Archive, id: string, lo: number, hi: number): Promise<string[]> {
  const rows = await archive.db
    .select()
    .from(messages)
    .where(sql`${messages.conversationId} = ${id} and ${messages.seq} between ${lo} and ${hi}`)
    .orderBy(messages.seq);
  return rows.map((r) =>
    JSON.stringify({
      seq: r.seq,
      role: r.role,
      parts: r.parts,
      metadata: r.metadata,
      token_count: r.tokenCount,
      inserted_at: r.insertedAt.toISOString(),
    }),
  );
}
