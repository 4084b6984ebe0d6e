// Prometheus metrics of the gateway (SPEC §7). Label values come from closed
// sets so a client cannot blow up cardinality.
import client from 'prom-client';

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const KNOWN_ROLES = new Set(['user', 'assistant', 'system', 'tool', 'developer', 'function']);
export const roleLabel = (role: string) => (KNOWN_ROLES.has(role) ? role : 'other');

export const metrics = {
  raftLeaders: new client.Gauge({
    name: 'fleet_lm_raft_leaders',
    help: 'Raft groups this node leads',
    registers: [registry],
  }),
  raftReplicas: new client.Gauge({
    name: 'fleet_lm_raft_replicas',
    help: 'Raft groups with a replica on this node',
    registers: [registry],
  }),
  clusterReplicasToReplace: new client.Gauge({
    name: 'fleet_lm_cluster_replicas_to_replace',
    help: 'Coordinator only: groups whose voters need a membership change (a replica of a lost incarnation, or a missing one)',
    registers: [registry],
  }),
  clusterLeadersToMove: new client.Gauge({
    name: 'fleet_lm_cluster_leaders_to_move',
    help: 'Coordinator only: groups led from another node than the placement prefers (moved a batch per round)',
    registers: [registry],
  }),
  raftGroupsWithoutLeader: new client.Gauge({
    name: 'fleet_lm_raft_groups_without_leader',
    help: 'Raft groups with no leader known to this node',
    registers: [registry],
  }),
  raftTermChanges: new client.Counter({
    name: 'fleet_lm_raft_term_changes_total',
    help: 'Leader term changes seen by this node, over all groups',
    registers: [registry],
  }),
  raftPendingFlush: new client.Gauge({
    name: 'fleet_lm_raft_pending_flush_messages',
    help: 'Raft messages queued for peer nodes, not yet handed to NATS',
    registers: [registry],
  }),
  raftBatchesSent: new client.Counter({
    name: 'fleet_lm_raft_batches_sent_total',
    help: 'NATS messages carrying Raft traffic sent to peers (one per peer per turn, more when split by max payload)',
    registers: [registry],
  }),
  raftSendFailures: new client.Counter({
    name: 'fleet_lm_raft_send_failures_total',
    help: 'Raft batches NATS refused (Raft resends)',
    registers: [registry],
  }),
  raftMessagesReceived: new client.Counter({
    name: 'fleet_lm_raft_messages_received_total',
    help: 'Raft messages received from peers, by type (app, heartbeat, quiesce, ...)',
    labelNames: ['type'],
    registers: [registry],
  }),
  raftMessagesDropped: new client.Counter({
    name: 'fleet_lm_raft_messages_dropped_total',
    help: 'Inbound Raft traffic dropped: malformed, or from a node outside the membership',
    registers: [registry],
  }),
  raftForwardFailures: new client.Counter({
    name: 'fleet_lm_raft_forward_failures_total',
    help: 'Requests forwarded to a leader node that did not answer',
    registers: [registry],
  }),
  raftCommitLatency: new client.Histogram({
    name: 'fleet_lm_raft_commit_latency_ms',
    help: 'Proposal to commit and apply on the leader, per entry',
    buckets: [0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 500, 1000],
    registers: [registry],
  }),
  appendTotal: new client.Counter({
    name: 'fleet_lm_messages_append_total',
    help: 'Messages appended (acknowledged), by role and API surface',
    labelNames: ['role', 'source'] as const,
    registers: [registry],
  }),
  tokenCount: new client.Histogram({
    name: 'fleet_lm_messages_token_count',
    help: 'Token count of appended messages',
    buckets: [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144],
    registers: [registry],
  }),
  appendLatency: new client.Histogram({
    name: 'fleet_lm_append_latency_ms',
    help: 'Append latency inside the node, from a complete request body to the durable acknowledgement',
    buckets: [0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 500, 1000, 5000],
    registers: [registry],
  }),
  windowLatency: new client.Histogram({
    name: 'fleet_lm_window_latency_ms',
    help: 'Context window reads (GET /v1/contexts/:id/context) inside the node',
    buckets: [0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 500, 1000],
    registers: [registry],
  }),
  compactionRequests: new client.Counter({
    name: 'fleet_lm_compaction_requests_total',
    help: 'Compaction requests by outcome: ok, conflict (if_version mismatch), rejected (any other error)',
    labelNames: ['result'] as const,
    registers: [registry],
  }),
  snapshotTokenCount: new client.Histogram({
    name: 'fleet_lm_snapshot_token_count',
    help: 'used_tokens of the context windows returned by reads',
    buckets: [16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576],
    registers: [registry],
  }),
  streamConnections: new client.Gauge({
    name: 'fleet_lm_stream_connections',
    help: 'Open stream connections by kind (phoenix, raw, sse)',
    labelNames: ['kind'] as const,
    registers: [registry],
  }),
  streamDeliveries: new client.Counter({
    name: 'fleet_lm_stream_deliveries_total',
    help: 'Events delivered to stream subscribers, by kind',
    labelNames: ['kind'] as const,
    registers: [registry],
  }),
  streamDrops: new client.Counter({
    name: 'fleet_lm_stream_drops_total',
    help: 'Stream connections closed by the node, by reason (slow_consumer, pong_timeout, heartbeat_timeout, flood, malformed)',
    labelNames: ['reason'] as const,
    registers: [registry],
  }),
  streamLag: new client.Histogram({
    name: 'fleet_lm_stream_lag_ms',
    help: 'From a message being appended (inserted_at) to its event being published to live subscribers',
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000],
    registers: [registry],
  }),
  archivePendingRows: new client.Gauge({
    name: 'fleet_lm_archive_pending_rows',
    help: 'Messages the archive lacks, over the conversations the last flush looked at (a lower bound when the batch was full)',
    registers: [registry],
  }),
  archivePendingConversations: new client.Gauge({
    name: 'fleet_lm_archive_pending_conversations',
    help: 'Conversations with messages the archive lacks (from the on-disk pending marks)',
    registers: [registry],
  }),
  archiveFlushDuration: new client.Histogram({
    name: 'fleet_lm_archive_flush_duration_ms',
    help: 'One archive flush: read the backlog, insert, acknowledge through Raft',
    buckets: [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
    registers: [registry],
  }),
  archiveAttempted: new client.Counter({ name: 'fleet_lm_archive_attempted_total', help: 'Message rows sent to Postgres', registers: [registry] }),
  archiveInserted: new client.Counter({ name: 'fleet_lm_archive_inserted_total', help: 'Message rows Postgres inserted (duplicates excluded)', registers: [registry] }),
  archiveBytesAttempted: new client.Counter({ name: 'fleet_lm_archive_bytes_attempted_total', help: 'JSON bytes of the rows sent', registers: [registry] }),
  archiveBytesInserted: new client.Counter({ name: 'fleet_lm_archive_bytes_inserted_total', help: 'JSON bytes of the rows inserted (pro rata)', registers: [registry] }),
  archiveLag: new client.Histogram({
    name: 'fleet_lm_archive_lag',
    help: 'Messages of a conversation still unarchived right after its flush acknowledged (0 = caught up)',
    buckets: [0, 1, 10, 100, 1000, 10000, 100000],
    registers: [registry],
  }),
  archiveTailSize: new client.Histogram({
    name: 'fleet_lm_archive_tail_size',
    help: 'Messages a conversation keeps in the hot tier after a flush',
    buckets: [10, 100, 1000, 10000, 100000, 1000000],
    registers: [registry],
  }),
  archiveTrimmed: new client.Counter({ name: 'fleet_lm_archive_trimmed_total', help: 'Messages removed from the hot tier after archiving', registers: [registry] }),
  archiveLlmTokens: new client.Counter({ name: 'fleet_lm_archive_llm_token_count', help: 'Tokens of the messages sent to the archive', registers: [registry] }),
  natsPublished: new client.Counter({ name: 'fleet_lm_nats_events_published_total', help: 'Stream events published to NATS', registers: [registry] }),
  natsPublishFailures: new client.Counter({ name: 'fleet_lm_nats_publish_failures_total', help: 'Stream events NATS refused (connection closed)', registers: [registry] }),
  httpRequests: new client.Counter({
    name: 'fleet_lm_http_requests_total',
    help: 'HTTP requests answered, by status class',
    labelNames: ['status'] as const,
    registers: [registry],
  }),
  inFlight: new client.Gauge({
    name: 'fleet_lm_requests_in_flight',
    help: 'Requests waiting for a shard worker',
    registers: [registry],
  }),
};
