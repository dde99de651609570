// Optimistic updates on top of watchTransaction: a value shown under a key while its transaction is
// pending, dropped when the transaction settles, with a callback saying which way.

import type { TimebankClient } from "./client.js";
import type { ChainhookEvent } from "./messages.js";
import type { TransactionStatus } from "./transactions.js";
import type { TransactionWatch } from "./watch.js";

export type RevertReason = "send_failed" | "failed" | "rolled_back";

export interface OptimisticManager<T> {
  /** Holds `optimisticValue` under `key`, calls `send` (which broadcasts and answers the tx hash), then
   * watches the transaction until it settles: onConfirmed(events) when its events are canonical,
   * onReverted(reason) when send throws, the transaction failed, or it was rolled back. Answers the
   * settled status ("failed" when send threw). */
  executeWithOptimistic(key: string, optimisticValue: T, send: () => Promise<string>,
                        onConfirmed?: (events: ChainhookEvent[]) => void,
                        onReverted?: (reason: RevertReason, error?: unknown) => void): Promise<TransactionStatus>;
  get(key: string): T | undefined;
  pending(): ReadonlyMap<string, T>;
  onChange(listener: () => void): () => void;
}

/** The first status other than pending, read once the transaction's stored history is in (so that an
 * apply and its rollback, both stored before the watch began, settle as rolled_back). */
export function settled(watch: TransactionWatch): Promise<TransactionStatus> {
  return new Promise((resolve, reject) => {
    let historyRead = false;
    const settle = () => {
      if (historyRead && watch.status !== "pending") {
        stop();
        resolve(watch.status);
      }
    };
    const stop = watch.onChange(settle);
    watch.ready.then(() => {
      historyRead = true;
      settle();
    }, (error: unknown) => {
      stop();
      reject(error);
    });
  });
}

export function createOptimisticManager<T>(client: TimebankClient): OptimisticManager<T> {
  // Each call's own entry, so that a call settling after a newer one under its key leaves that one
  // alone (even when both hold equal values).
  const entries = new Map<string, { value: T }>();
  let snapshot: ReadonlyMap<string, T> = new Map();
  const listeners = new Set<() => void>();
  const changed = () => {
    // A new map on each change, the same one between: a UI can compare snapshots by identity.
    snapshot = new Map([...entries].map(([key, entry]) => [key, entry.value]));
    for (const listener of [...listeners]) listener();
  };
  const hold = (key: string, value: T) => {
    const entry = { value };
    entries.set(key, entry);
    changed();
    return () => {
      if (entries.get(key) !== entry) return;
      entries.delete(key);
      changed();
    };
  };

  return {
    async executeWithOptimistic(key, optimisticValue, send, onConfirmed, onReverted) {
      const drop = hold(key, optimisticValue);
      let txHash: string;
      try {
        txHash = await send();
      } catch (error) {
        drop();
        onReverted?.("send_failed", error);
        return "failed";
      }
      const watch = client.watchTransaction(txHash);
      let status: TransactionStatus;
      try {
        status = await settled(watch);
      } catch (error) {
        drop();
        onReverted?.("failed", error);
        return "failed";
      } finally {
        void watch.stop();
      }
      drop();
      if (status === "confirmed") onConfirmed?.(watch.events);
      else onReverted?.(status === "rolled_back" ? "rolled_back" : "failed");
      return status;
    },
    get: (key) => entries.get(key)?.value,
    pending: () => snapshot,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
