// A transaction's fate from the changes of a {tx_hash} subscription. Pure: no I/O.

import type { ChainhookEvent, ChangeKind, ChangeMessage } from "./messages.js";

/** pending: none of its events seen yet; confirmed: its events are canonical; failed: they are stored
 * with success false; rolled_back: a rollback named it and none of its events is canonical any more. */
export type TransactionStatus = "pending" | "confirmed" | "rolled_back" | "failed";

export class TransactionState {
  status: TransactionStatus = "pending";
  // Its canonical events by id, in the order they (re)arrived.
  private readonly canonical = new Map<number, ChainhookEvent>();

  get events(): ChainhookEvent[] {
    return [...this.canonical.values()].sort((a, b) => a.cursor - b.cursor);
  }

  /** Takes one change of the transaction's subscription; answers whether the status changed. */
  apply(kind: ChangeKind, change: ChangeMessage): boolean {
    const before = this.status;
    if (kind === "event") {
      const event = change as ChainhookEvent;
      this.canonical.set(event.id, event);
      this.status = this.events.some((e) => e.success === false) ? "failed" : "confirmed";
    } else if (kind === "rollback") {
      this.canonical.delete(change.id);
      if (this.canonical.size === 0) this.status = "rolled_back";
    }
    return this.status !== before;
  }
}
