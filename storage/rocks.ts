// Thin promise wrapper over the `rocksdb` binding: one instance per storage
// partition. Values that hold data carry a CRC32C (seal/unseal); a mismatch
// throws ChecksumError so corrupt bytes are never served.
import { createRequire } from 'node:module';
import { crc32c } from './crc32c.js';

const require = createRequire(import.meta.url);
const rocksdb = require('rocksdb') as (location: string) => RocksBinding;

interface RocksIterator {
  next(cb: (err: Error | null, key?: Buffer, value?: Buffer) => void): void;
  end(cb: (err?: Error | null) => void): void;
}
interface RocksBinding {
  open(opts: object, cb: (err?: Error | null) => void): void;
  close(cb: (err?: Error | null) => void): void;
  get(key: Buffer, opts: object, cb: (err: Error | null, value?: Buffer) => void): void;
  getMany(keys: Buffer[], opts: object, cb: (err: Error | null, values?: (Buffer | undefined)[]) => void): void;
  batch(ops: BatchOp[], opts: object, cb: (err?: Error | null) => void): void;
  iterator(opts: object): RocksIterator;
}

export type BatchOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

export class ChecksumError extends Error {
  constructor(readonly key: Buffer) {
    super(`checksum mismatch at key ${key.toString('hex')}`);
    this.name = 'ChecksumError';
  }
}

export function seal(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + payload.length);
  payload.copy(out, 4);
  out.writeUInt32BE(crc32c(payload), 0);
  return out;
}

/** seal(Buffer.from(text)) without the intermediate buffer (hot: two per append). */
export function sealText(text: string): Buffer {
  const out = Buffer.allocUnsafe(4 + Buffer.byteLength(text));
  out.write(text, 4);
  out.writeUInt32BE(crc32c(out, 4), 0);
  return out;
}

export function unseal(key: Buffer, value: Buffer): Buffer {
  if (value.length < 4) throw new ChecksumError(key);
  const body = value.subarray(4);
  if (crc32c(body) !== value.readUInt32BE(0)) throw new ChecksumError(key);
  return body;
}

export interface ScanOptions {
  gte?: Buffer;
  gt?: Buffer;
  lt?: Buffer;
  lte?: Buffer;
  limit?: number;
  reverse?: boolean;
}

export class RocksPartition {
  private constructor(
    readonly location: string,
    private readonly db: RocksBinding,
  ) {}

  static open(location: string): Promise<RocksPartition> {
    const db = rocksdb(location);
    return new Promise((resolve, reject) => {
      // Small memtables and block cache keep RSS bounded (two memtables of
      // 8 MiB per instance at most); hot reads come from the worker's caches.
      const opts = { createIfMissing: true, writeBufferSize: 8 << 20, cacheSize: 8 << 20, maxOpenFiles: 512 };
      db.open(opts, (err) => (err ? reject(err) : resolve(new RocksPartition(location, db))));
    });
  }

  write(ops: BatchOp[], sync: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.db.batch(ops, { sync }, (err) => (err ? reject(err) : resolve()));
    });
  }

  get(key: Buffer): Promise<Buffer | null> {
    return new Promise((resolve, reject) => {
      this.db.get(key, { asBuffer: true, fillCache: true }, (err, value) => {
        if (err) {
          if (/NotFound/i.test(err.message)) resolve(null);
          else reject(err);
        } else resolve(value ?? null);
      });
    });
  }

  async getSealed(key: Buffer): Promise<Buffer | null> {
    const v = await this.get(key);
    return v === null ? null : unseal(key, v);
  }

  scan(opts: ScanOptions): Promise<[Buffer, Buffer][]> {
    const it = this.db.iterator({ ...opts, limit: opts.limit ?? -1, keyAsBuffer: true, valueAsBuffer: true });
    const out: [Buffer, Buffer][] = [];
    return new Promise((resolve, reject) => {
      const step = (err: Error | null, key?: Buffer, value?: Buffer): void => {
        if (err || key === undefined) {
          it.end(() => (err ? reject(err) : resolve(out)));
          return;
        }
        out.push([key, value as Buffer]);
        it.next(step);
      };
      it.next(step);
    });
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}
