// The canonical events several subscriptions bring, as one list: each event once, in cursor order. Pure:
// no I/O, no React; the React hooks (react.ts) feed it and render what it holds.

import type { ChainhookEvent, ChangeKind, ChangeMessage } from "./index.js";

/**
 * Each event id's state is decided by the newest change (highest cursor) that names it: an event shows
 * when that change is an apply, and not when it is a rollback. So a change that two subscriptions both
 * bring counts once, a rollback removes its event and a later re-apply brings it back, and an older
 * change that one subscription's replay brings after another subscription went past it changes nothing.
 * Blocks are not events: they are ignored.
 *
 * With a `limit`, the list keeps the newest `limit` events (by cursor) it has seen; a rollback can leave
 * it shorter, since the older events it dropped do not come back.
 */
export class EventList {
  // Every id seen, with the cursor of the newest change that named it (evicted and rolled back ids too).
  private readonly newestCursor = new Map<number, number>();
  // The events shown, ascending by cursor, and the same by id.
  private readonly ordered: ChainhookEvent[] = [];
  private readonly shown = new Map<number, ChainhookEvent>();
  private cached: ChainhookEvent[] | null = null;

  constructor(private limit: number = Infinity) {}

  /** Takes one change; answers whether the list changed. */
  apply(kind: ChangeKind, change: ChangeMessage): boolean {
    if (kind !== "event" && kind !== "rollback") return false;
    const seen = this.newestCursor.get(change.id);
    if (seen !== undefined && seen >= change.cursor) return false;
    this.newestCursor.set(change.id, change.cursor);
    const removed = this.remove(change.id);
    const added = kind === "event" && this.insert(change as ChainhookEvent);
    return this.changed(removed || added);
  }

  /** Keeps the newest `limit` events from now on (undefined: all); answers whether the list changed. */
  setLimit(limit: number | undefined): boolean {
    this.limit = limit ?? Infinity;
    return this.changed(this.trim());
  }

  /** The events shown, ascending by cursor; the same array until the list changes. */
  get events(): ChainhookEvent[] {
    this.cached ??= [...this.ordered];
    return this.cached;
  }

  private changed(changed: boolean): boolean {
    if (changed) this.cached = null;
    return changed;
  }

  private remove(id: number): boolean {
    const event = this.shown.get(id);
    if (event === undefined) return false;
    this.ordered.splice(this.indexAfter(event.cursor) - 1, 1);
    this.shown.delete(id);
    return true;
  }

  /** Inserts in cursor order (at the end, but for a replay that runs behind another subscription). */
  private insert(event: ChainhookEvent): boolean {
    this.ordered.splice(this.indexAfter(event.cursor), 0, event);
    this.shown.set(event.id, event);
    this.trim();
    return this.shown.has(event.id);
  }

  /** Drops the oldest events beyond the limit; answers whether it dropped any. */
  private trim(): boolean {
    const excess = this.ordered.length - this.limit;
    if (excess <= 0) return false;
    for (const event of this.ordered.splice(0, excess)) this.shown.delete(event.id);
    return true;
  }

  /** The index of the first event whose cursor is above `cursor` (binary search). */
  private indexAfter(cursor: number): number {
    let low = 0;
    let high = this.ordered.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.ordered[middle].cursor <= cursor) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}
