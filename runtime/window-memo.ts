// skip_parts results (messages that lost parts, recounted; or dropped) shared
// by every context of a worker, LRU within a byte bound, so repeated window
// reads neither re-parse nor re-ask the main thread for token counts, and
// memory stays bounded however many contexts are read.
import type { Mapped, WindowMemo } from '../actors/context.js';

/** Map bookkeeping per entry, on top of the text itself. */
const ENTRY_OVERHEAD_BYTES = 64;

export class WindowMemoCache {
  private readonly items = new Map<string, Mapped>();
  private bytes = 0;

  constructor(private readonly bytesMax: number) {}

  /** The memo of one context under one policy signature (actors/context.ts memoSignature). */
  view(id: string, signature: string): WindowMemo {
    const prefix = `${id}\u0000${signature}\u0000`;
    return {
      get: (key) => {
        const k = prefix + key;
        const m = this.items.get(k);
        if (m !== undefined) {
          this.items.delete(k);
          this.items.set(k, m);
        }
        return m;
      },
      set: (key, m) => {
        const k = prefix + key;
        const old = this.items.get(k);
        if (old !== undefined) this.bytes -= sizeOf(k, old);
        this.items.delete(k);
        this.items.set(k, m);
        this.bytes += sizeOf(k, m);
        for (const [victim, v] of this.items) {
          if (this.bytes <= this.bytesMax) break;
          this.items.delete(victim);
          this.bytes -= sizeOf(victim, v);
        }
      },
    };
  }
}

const sizeOf = (key: string, m: Mapped) => ENTRY_OVERHEAD_BYTES + key.length + (m === null ? 0 : m.text.length);
