// RocksDB key layout of one storage partition: the state machine. (The Raft
// log and hard states live in the partition's WAL, storage/wal.ts.) Keys sort
// so that range scans serve the common reads:
//   'A' group:u16                applied index + term    value = crc:u32 | JSON
//   'C'                          checkpoint counter      value = u64 (synced writes)
//   'R' id                       conversation record     value = crc:u32 | JSON
//   'M' group:u16 len:u8 id seq:u64   message record     value = crc:u32 | JSON
//   'K' group:u16 len:u8 id key       idempotency record value = crc:u32 | JSON
//   'W' id                       context compactions     value = crc:u32 | JSON {replacement, seqs}
//   'P' group:u16 len:u8 id      archive pending         value = crc:u32 (messages the archive lacks)
//   'I' group:u16                replica hosted          value = crc:u32 | JSON {replica, retired} (groups whose
//                                replica here changed since founding; not part of a group snapshot: it names this node's copy)
// Ids are ASCII ([A-Za-z0-9_:-]), so 'R' keys sort in the id byte order the
// listing API promises.

export const PREFIX = { applied: 0x41, checkpoint: 0x43, record: 0x52, message: 0x4d, idem: 0x4b, compactions: 0x57, archivePending: 0x50, replica: 0x49 } as const;

export function groupKey(prefix: number, group: number): Buffer {
  const k = Buffer.allocUnsafe(3);
  k[0] = prefix;
  k.writeUInt16BE(group, 1);
  return k;
}

/** Key of a per-conversation value that is not group-scoped ('R', 'W'). */
export function idKey(prefix: number, id: string): Buffer {
  const k = Buffer.allocUnsafe(1 + id.length);
  k[0] = prefix;
  k.write(id, 1, 'latin1');
  return k;
}

export const recordKey = (id: string) => idKey(PREFIX.record, id);

export function recordIdOf(key: Buffer): string {
  return key.toString('latin1', 1);
}

/** Prefix shared by every message (or idempotency) key of one conversation. */
export function convPrefix(prefix: number, group: number, id: string): Buffer {
  const k = Buffer.allocUnsafe(4 + id.length);
  k[0] = prefix;
  k.writeUInt16BE(group, 1);
  k[3] = id.length;
  k.write(id, 4, 'latin1');
  return k;
}

export function messageKey(group: number, id: string, seq: number): Buffer {
  const k = Buffer.allocUnsafe(12 + id.length);
  k[0] = PREFIX.message;
  k.writeUInt16BE(group, 1);
  k[3] = id.length;
  k.write(id, 4, 'latin1');
  k.writeBigUInt64BE(BigInt(seq), 4 + id.length);
  return k;
}

export function idemKey(group: number, id: string, key: string): Buffer {
  const kb = Buffer.from(key, 'utf8');
  const k = Buffer.allocUnsafe(4 + id.length + kb.length);
  k[0] = PREFIX.idem;
  k.writeUInt16BE(group, 1);
  k[3] = id.length;
  k.write(id, 4, 'latin1');
  kb.copy(k, 4 + id.length);
  return k;
}

/** Smallest key greater than every key starting with `prefix`. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  throw new Error('prefix has no end');
}
