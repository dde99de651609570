// React bindings ("timebank-realtime-client/react"): a provider for one client, and hooks that subscribe
// while a component is mounted. React >= 18 is a peer dependency of this entry only.
//
// Every hook keeps what it shows in a store of its own, read with useSyncExternalStore, and each run of its
// effect opens a fresh feed that ignores whatever arrives once the run is cleaned up. So StrictMode's
// second run starts from nothing (no event twice), a change that arrives after unmount renders nothing,
// and a subscription whose subscribe resolves after its cleanup is unsubscribed as soon as it resolves.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
  useSyncExternalStore,
  type ReactElement,
  type ReactNode,
} from "react";

import { EventList } from "./event-list.js";
import {
  createOptimisticManager,
  type ChainhookEvent,
  type ChangeHandler,
  type ConnectionState,
  type OptimisticManager,
  type Since,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionFilter,
  type TimebankClient,
  type TransactionStatus,
  type TransactionWatch,
} from "./index.js";

const ClientContext = createContext<TimebankClient | null>(null);

export interface TimebankProviderProps {
  client: TimebankClient;
  children?: ReactNode;
}

/** Makes `client` the one the hooks below it use. The provider does not own it: whoever created the
 * client closes it. */
export function TimebankProvider({ client, children }: TimebankProviderProps): ReactElement {
  return createElement(ClientContext.Provider, { value: client }, children);
}

/** The client of the nearest TimebankProvider. */
export function useTimebankClient(): TimebankClient {
  return useClient(undefined);
}

function useClient(explicit: TimebankClient | undefined): TimebankClient {
  const provided = useContext(ClientContext);
  const client = explicit ?? provided;
  if (client === null) {
    throw new Error("timebank-realtime-client/react: no client; put a <TimebankProvider client={…}> above "
      + "this component, or pass { client }");
  }
  return client;
}

/** The client's connection state, re-rendering when it changes. */
export function useConnectionState(client?: TimebankClient): ConnectionState {
  const resolved = useClient(client);
  const subscribe = useCallback((listener: () => void) => resolved.onStateChange(() => listener()), [resolved]);
  return useSyncExternalStore(subscribe, () => resolved.state);
}

// ---------------------------------------------------------------------------------------------------------
// Events

export interface EventsOptions {
  /** Where each subscription starts: a cursor (0: everything stored) or "now" (the client's default). */
  since?: Since;
  /** Names the stored cursors (one per filter: `${key}:${filter}`), so that a reload resumes from them. */
  key?: string;
  /** Keep only the newest `limit` events. */
  limit?: number;
  /** Instead of the provider's client. */
  client?: TimebankClient;
}

export interface RealtimeEventsOptions extends EventsOptions {
  subscriptions: SubscriptionFilter[];
}

export interface RealtimeEventsResult {
  /** The canonical events of all the subscriptions, each once, ascending by cursor. */
  events: ChainhookEvent[];
  state: ConnectionState;
  /** Why a subscription was refused (a SubscriptionRefused, with the server's code), else null. */
  error: Error | null;
}

/**
 * The canonical events the `subscriptions` bring, as one list: an event two filters match is there once,
 * a rollback removes its event and a re-apply brings it back. The subscriptions are made on mount and
 * unsubscribed on unmount; a change of the filters, `since` or `key` (compared by value, so an inline
 * array is fine) replaces them, and the list starts again.
 */
export function useRealtimeEvents(options: RealtimeEventsOptions): RealtimeEventsResult {
  const client = useClient(options.client);
  const state = useConnectionState(client);
  const { subscriptions, since, key, limit } = options;
  const identity = canonicalJson([subscriptions, since ?? null, key ?? null]);
  const [store] = useState(() => new EventsStore());
  const shown = useSyncExternalStore(store.subscribe, store.getSnapshot);

  useEffect(() => store.setLimit(limit), [store, limit]);
  useEffect(() => {
    // Read back from the identity, so that the feed is exactly the one the identity names.
    const [filters, from, storedAs] = JSON.parse(identity) as [SubscriptionFilter[], Since | null, string | null];
    return store.open(client, identity, filters, { since: from ?? undefined, key: storedAs ?? undefined });
  }, [store, client, identity]);

  // Until the effect has opened the new filters' feed, the old one's events are not theirs.
  const current = shown.identity === identity ? shown : NOTHING_SHOWN;
  return { events: current.events, state, error: current.error };
}

export type ContractEventsOptions = EventsOptions;
export type UserEventsOptions = EventsOptions;

/** The canonical events of one contract (`{ type: "contract", contractId }`). */
export function useContractEvents(contractId: string, options: ContractEventsOptions = {}): RealtimeEventsResult {
  return useRealtimeEvents({ ...options, subscriptions: [{ type: "contract", contractId }] });
}

/** The canonical events that affect one address (`{ type: "user", address }`). */
export function useUserEvents(address: string, options: UserEventsOptions = {}): RealtimeEventsResult {
  return useRealtimeEvents({ ...options, subscriptions: [{ type: "user", address }] });
}

interface ShownEvents {
  identity: string | null;
  events: ChainhookEvent[];
  error: Error | null;
}

const NOTHING_SHOWN: ShownEvents = { identity: null, events: [], error: null };

/** What one useRealtimeEvents shows: the events and error of its current feed, for useSyncExternalStore. */
class EventsStore {
  private readonly listeners = new Set<() => void>();
  private shown: ShownEvents = NOTHING_SHOWN;
  private list = new EventList();
  private limit: number | undefined;
  // Bumped by each open and close: a feed whose generation is past takes nothing any more.
  private generation = 0;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): ShownEvents => this.shown;

  setLimit(limit: number | undefined): void {
    this.limit = limit;
    if (this.list.setLimit(limit)) this.show({ events: this.list.events });
  }

  /** Subscribes to each filter; answers the cleanup that unsubscribes them. */
  open(client: TimebankClient, identity: string, filters: SubscriptionFilter[],
       options: { since: Since | undefined; key: string | undefined }): () => void {
    const generation = ++this.generation;
    const isCurrent = (): boolean => this.generation === generation;
    this.list = new EventList(this.limit);
    this.show({ identity, events: this.list.events, error: null });

    const handler: ChangeHandler = (kind, change) => {
      if (isCurrent() && this.list.apply(kind, change)) this.show({ events: this.list.events });
    };
    const made: Subscription[] = [];
    let closed = false;
    const subscribeAll = (): void => {
      if (closed) return;
      for (const filter of filters) {
        client.subscribe(filter, handler, subscribeOptions(filter, options)).then(
          (subscription) => {
            if (closed) quietly(client.unsubscribe(subscription));
            else made.push(subscription);
          },
          (error: unknown) => {
            if (isCurrent()) this.show({ error: error instanceof Error ? error : new Error(String(error)) });
          });
      }
    };
    // StrictMode cleans up and runs an effect again in the same task: a run it cleans up at once never
    // reaches the server (nor moves a stored cursor past changes its handler would have ignored).
    queueMicrotask(subscribeAll);
    return () => {
      closed = true;
      if (isCurrent()) this.generation += 1;
      for (const subscription of made.splice(0)) quietly(client.unsubscribe(subscription));
    };
  }

  private show(change: Partial<ShownEvents>): void {
    this.shown = { ...this.shown, ...change };
    for (const listener of [...this.listeners]) listener();
  }
}

/** Without a key, each mount starts from `since` (a list that starts empty must start from where it
 * says); with one, from the cursor stored under it, as the client's subscribe does. */
function subscribeOptions(filter: SubscriptionFilter,
                          { since, key }: { since: Since | undefined; key: string | undefined }): SubscribeOptions {
  return {
    ...(since === undefined ? {} : { since }),
    ...(key === undefined ? { persist: false } : { key: `${key}:${canonicalJson(filter)}` }),
  };
}

/** JSON with object keys sorted, so that filters equal by value give the same text. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_name, item: unknown) => {
    if (item === null || typeof item !== "object" || Array.isArray(item)) return item;
    const entries = Object.entries(item as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries);
  });
}

/** An unsubscribe nobody waits for: a client closed meanwhile is not an error to report. */
function quietly(promise: Promise<void>): void {
  promise.catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------------------
// Transactions

export interface TransactionResult {
  /** null when `txHash` is null; "pending" until the transaction's events arrive. */
  status: TransactionStatus | null;
  /** Its canonical events, in cursor order. */
  events: ChainhookEvent[];
  /** Why the watch's subscription was refused (an invalid hash, say), else null. */
  error: Error | null;
}

interface WatchedTransaction extends TransactionResult {
  txHash: string | null;
}

/** Watches a transaction (`client.watchTransaction`) while mounted; another hash replaces the watch. */
export function useTransaction(txHash: string | null, options: { client?: TimebankClient } = {}): TransactionResult {
  const client = useClient(options.client);
  const [watched, setWatched] = useState<WatchedTransaction>({ txHash: null, status: null, events: [], error: null });

  useEffect(() => {
    if (txHash === null) return undefined;
    let watching = true;
    let watch: TransactionWatch | null = null;
    let stopListening = (): void => {};
    // Begun in a microtask, as the events hooks subscribe: StrictMode's run that it cleans up at once
    // never watches.
    queueMicrotask(() => {
      if (!watching) return;
      const opened = client.watchTransaction(txHash);
      const show = (): void => {
        if (watching) {
          setWatched({ txHash, status: opened.status, events: opened.events, error: opened.error });
        }
      };
      stopListening = opened.onChange(show);
      opened.ready.then(show, show);  // a refusal settles `ready` and sets `error`, with no change to report
      show();
      watch = opened;
    });
    return () => {
      watching = false;
      stopListening();
      if (watch !== null) quietly(watch.stop());
    };
  }, [client, txHash]);

  if (txHash === null) return { status: null, events: [], error: null };
  // Until the watch of this hash reports, it is pending: nothing of it was seen yet.
  return watched.txHash === txHash
    ? { status: watched.status, events: watched.events, error: watched.error }
    : { status: "pending", events: [], error: null };
}

// ---------------------------------------------------------------------------------------------------------
// Optimistic updates

export interface OptimisticResult<T> {
  /** The manager's executeWithOptimistic. */
  execute: OptimisticManager<T>["executeWithOptimistic"];
  /** The optimistic values not settled yet, by key; re-renders when it changes. */
  pending: ReadonlyMap<string, T>;
  get(key: string): T | undefined;
  manager: OptimisticManager<T>;
}

/** An optimistic manager (createOptimisticManager) for this component, re-rendering when its pending
 * values change. */
export function useOptimistic<T>(options: { client?: TimebankClient } = {}): OptimisticResult<T> {
  const client = useClient(options.client);
  const manager = useMemo(() => createOptimisticManager<T>(client), [client]);
  const subscribe = useCallback((listener: () => void) => manager.onChange(listener), [manager]);
  // The manager's pending() is a new map at each change and the same one between: a snapshot as is.
  const pending = useSyncExternalStore(subscribe, () => manager.pending());
  const execute = useMemo(() => manager.executeWithOptimistic.bind(manager), [manager]);
  return { execute, pending, get: (key) => pending.get(key), manager };
}
