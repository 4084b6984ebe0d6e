// The archive's tables (drizzle-orm). Migrations are generated from this file
// by drizzle-kit into storage/archive/migrations and committed.
import { bigint, boolean, index, integer, jsonb, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';

export const messages = pgTable(
  'messages',
  {
    conversationId: text('conversation_id').notNull(),
    seq: bigint('seq', { mode: 'number' }).notNull(),
    role: text('role').notNull(),
    parts: jsonb('parts').notNull(),
    metadata: jsonb('metadata').notNull().default({}),
    tokenCount: integer('token_count').notNull(),
    insertedAt: timestamp('inserted_at', { withTimezone: true, mode: 'date', precision: 3 }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.conversationId, t.seq] }), index('messages_conversation_inserted_at_idx').on(t.conversationId, t.insertedAt)],
);

/** The conversation record, mirrored for BI queries. */
export const conversations = pgTable('conversations', {
  id: text('id').primaryKey(),
  metadata: jsonb('metadata').notNull().default({}),
  version: bigint('version', { mode: 'number' }).notNull(),
  tombstoned: boolean('tombstoned').notNull().default(false),
  lastSeq: bigint('last_seq', { mode: 'number' }).notNull(),
  archivedSeq: bigint('archived_seq', { mode: 'number' }).notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date', precision: 3 }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date', precision: 3 }).notNull(),
});
