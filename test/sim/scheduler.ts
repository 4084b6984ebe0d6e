// Virtual time: a priority queue of callbacks ordered by (time, insertion).
// Nothing in the simulator reads a real clock; `now` moves only when the
// next event runs, so a seed replays identically.

interface Scheduled {
  at: number;
  order: number;
  run: () => void;
}

export class Scheduler {
  /** Virtual milliseconds since the start of the run. */
  now = 0;
  private readonly heap: Scheduled[] = [];
  private order = 0;

  after(delayMs: number, run: () => void): void {
    if (!(delayMs >= 0)) throw new RangeError(`negative or NaN delay ${delayMs}`);
    this.push({ at: this.now + delayMs, order: this.order++, run });
  }

  /** Runs the earliest event; false when none is left. */
  runNext(): boolean {
    const ev = this.pop();
    if (ev === undefined) return false;
    if (ev.at < this.now) throw new Error(`time went backwards: ${ev.at} < ${this.now}`);
    this.now = ev.at;
    ev.run();
    return true;
  }

  private before(a: Scheduled, b: Scheduled): boolean {
    return a.at < b.at || (a.at === b.at && a.order < b.order);
  }

  private push(ev: Scheduled): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }

  private pop(): Scheduled | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop() as Scheduled;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let min = i;
        if (l < h.length && this.before(h[l], h[min])) min = l;
        if (r < h.length && this.before(h[r], h[min])) min = r;
        if (min === i) break;
        [h[i], h[min]] = [h[min], h[i]];
        i = min;
      }
    }
    return top;
  }
}
