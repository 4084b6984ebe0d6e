// skip_parts results shared by every context of a worker: per context, what
// each message it has read maps to (unchanged with its tokens, dropped, or
// rewritten and recounted), so repeated window reads neither re-scan nor
// re-ask the main thread for token counts. Contexts are evicted least
// recently read first, so memory stays within a byte bound however many
// contexts are read.
import type { MemoEntry, WindowMemo } from '../actors/context.js';

/** Map bookkeeping per item, on top of a rewritten text. */
const ITEM_OVERHEAD_BYTES = 48;

interface ContextMemo {
  signature: string;
  items: Map<number, MemoEntry>;
  bytes: number;
}

export class WindowMemoCache {
  private readonly contexts = new Map<string, ContextMemo>();
  private bytes = 0;

  constructor(private readonly bytesMax: number) {}

  /** The memo of one context under one policy signature (actors/context.ts memoSignature). */
  view(id: string, signature: string): WindowMemo {
    let memo = this.contexts.get(id);
    if (memo !== undefined) {
      this.contexts.delete(id);
      if (memo.signature !== signature) {
        this.bytes -= memo.bytes;
        memo = undefined;
      }
    }
    const m = memo ?? { signature, items: new Map<number, MemoEntry>(), bytes: 0 };
    this.contexts.set(id, m); // most recently read last
    return {
      get: (key) => m.items.get(key),
      set: (key, entry) => {
        const size = ITEM_OVERHEAD_BYTES + (entry === null || typeof entry === 'number' ? 0 : entry.text.length);
        m.items.set(key, entry);
        m.bytes += size;
        this.bytes += size;
        this.evict(m);
      },
    };
  }

  private evict(current: ContextMemo): void {
    for (const [id, memo] of this.contexts) {
      if (this.bytes <= this.bytesMax) return;
      if (memo === current) continue;
      this.contexts.delete(id);
      this.bytes -= memo.bytes;
    }
    if (this.bytes > this.bytesMax) {
      // One context larger than the whole bound: start it over.
      this.bytes -= current.bytes;
      current.items.clear();
      current.bytes = 0;
    }
  }
}
