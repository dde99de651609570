// watchTransaction: a {tx_hash} subscription from cursor 0 (so that events stored before the watch began
// count), folded into a status by TransactionState.

import type { ChangeHandler, SubscribeOptions, Subscription } from "./client.js";
import type { SubscriptionFilter } from "./filters.js";
import type { ChainhookEvent } from "./messages.js";
import { TransactionState, type TransactionStatus } from "./transactions.js";

export interface TransactionWatch {
  readonly txHash: string;
  readonly status: TransactionStatus;
  /** Its canonical events so far, in cursor order. */
  readonly events: ChainhookEvent[];
  /** The refusal of its subscription (an invalid hash, say), if the server refused it. */
  readonly error: Error | null;
  /** Settles once the stored history of the transaction has been read: `status` is then up to date. */
  readonly ready: Promise<void>;
  /** Called on each change of the transaction (its status, or its events). */
  onChange(listener: (status: TransactionStatus, watch: TransactionWatch) => void): () => void;
  stop(): Promise<void>;
}

/** What a watch needs of the client. */
export interface WatchHost {
  register(filter: SubscriptionFilter, handler: ChangeHandler, options: SubscribeOptions,
           wentLive: () => void): Promise<Subscription>;
  unsubscribe(subscription: Subscription): Promise<void>;
}

export function watchTransaction(host: WatchHost, txHash: string, onError: (error: Error) => void): TransactionWatch {
  const state = new TransactionState();
  const listeners = new Set<(status: TransactionStatus, watch: TransactionWatch) => void>();
  let error: Error | null = null;
  let stopped = false;
  let markReady: () => void = () => {};
  let markRefused: (refusal: unknown) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    markRefused = reject;
  });

  const handler: ChangeHandler = (kind, change) => {
    if (stopped) return;
    state.apply(kind, change);
    for (const listener of [...listeners]) {
      try {
        listener(state.status, watch);
      } catch (failure) {
        onError(failure instanceof Error ? failure : new Error(String(failure)));
      }
    }
  };
  // Not persisted: watching the same transaction again must read its history again.
  const subscription = host.register({ tx_hash: txHash }, handler, { since: 0, persist: false, key: `tx:${txHash}` },
    () => markReady());
  subscription.catch((refusal: unknown) => {
    error = refusal instanceof Error ? refusal : new Error(String(refusal));
    markRefused(error);
  });
  ready.catch(() => {}); // a refusal is also in `error`; an unobserved `ready` must not crash the process

  const watch: TransactionWatch = {
    txHash,
    get status() {
      return state.status;
    },
    get events() {
      return state.events;
    },
    get error() {
      return error;
    },
    ready,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      listeners.clear();
      try {
        await host.unsubscribe(await subscription);
      } catch {
        // Refused or closed: there is nothing to release.
      }
    },
  };
  return watch;
}
