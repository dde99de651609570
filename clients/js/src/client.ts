// The socket side: one Socket.IO connection, renewed with backoff, on which every subscription is
// (re)sent with `since` = its last delivered cursor. The rules for what reaches a handler live in
// router.ts; this module only moves messages between the socket, the router and the storage.

import { io, type Socket } from "socket.io-client";

import { fullJitterDelay } from "./backoff.js";
import { compileFilter, filterKey, type CompiledFilter, type SubscriptionFilter } from "./filters.js";
import type { BatchFrame, ChangeKind, ChangeMessage, Eose, Heartbeat, Resync, Since, SubscribeReply,
  TaggedChange, UnsubscribeReply } from "./messages.js";
import { ChangeRouter, type RoutedSubscription } from "./router.js";
import { CursorWriter, defaultStorage, type CursorStorage } from "./storage.js";
import { watchTransaction, type TransactionWatch } from "./watch.js";

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

export type ChangeHandler = (kind: ChangeKind, change: ChangeMessage) => void;

export interface ClientOptions {
  url: string;
  /** A client token (docs/protocol.md, "Client authentication"), or a function asked at each connect. */
  token?: string | (() => string | Promise<string>);
  /** Where each subscription's cursor is kept; default: localStorage where it exists, else memory. */
  storage?: CursorStorage;
  /** Prefix of the storage keys: `${storagePrefix}:${subscription key}`. */
  storagePrefix?: string;
  transports?: ("websocket" | "polling")[];
  /** Ask for chainhook:batch frames (one per delivery instead of a message per change). */
  batch?: boolean;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Failures that have no caller to reject: a handler that threw, a refused resubscription, a lost link. */
  onError?: (error: Error) => void;
  onHeartbeat?: (beat: Heartbeat) => void;
}

export interface SubscribeOptions {
  /** Names the stored cursor; default: the filter's fields as JSON, in key order. */
  key?: string;
  /** Where to start when nothing is stored under the key; default "now". A stored cursor wins. */
  since?: Since;
  /** Keep the cursor in the storage (default true); false: start from `since` on every new subscribe. */
  persist?: boolean;
}

export interface Subscription {
  readonly key: string;
  readonly filter: SubscriptionFilter;
  /** The last cursor handed to the handler (or the start, once the server took it). */
  readonly lastCursor: number | null;
  /** The cursor of the server's latest ack: the replay ends there and live changes start after it;
   *  null while the server has not taken the subscription on the current connection. */
  readonly ackCursor: number | null;
}

/** The server refused a subscription: `code` is its error code (docs/protocol.md, "Errors"). */
export class SubscriptionRefused extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "SubscriptionRefused";
    this.code = code;
  }
}

export interface TimebankClient {
  readonly state: ConnectionState;
  onStateChange(listener: (state: ConnectionState) => void): () => void;
  subscribe(filter: SubscriptionFilter, handler: ChangeHandler, options?: SubscribeOptions): Promise<Subscription>;
  unsubscribe(subscription: Subscription): Promise<void>;
  watchTransaction(txHash: string): TransactionWatch;
  /** Closes the connection for good; resolves once every cursor handed over is in the storage (await
   * it before another client opens the same storage, or that one may get those changes again). */
  close(): Promise<void>;
}

// Refusals that pass: asked again a second later, up to 5 times, as the Python client does.
const RETRYABLE = new Set(["rate_limited", "unavailable", "not_connected"]);
const ATTEMPTS = 5;
const RETRY_MS = 1000;
const ACK_TIMEOUT_MS = 20_000;

class ClientSubscription implements RoutedSubscription, Subscription {
  readonly filter: SubscriptionFilter;
  readonly compiled: CompiledFilter;
  lastCursor: number | null;
  serverId: string | null = null;
  ackCursor: number | null = null;
  live = false;
  held: [ChangeKind, ChangeMessage][] = [];
  /** The server's resync position, when it gave one: the next subscribe starts no later than this. */
  resyncCursor: number | null = null;
  acknowledgedOnce = false;
  readonly firstAck: Promise<void>;
  settleFirstAck!: (error?: Error) => void;

  constructor(readonly key: string, filter: SubscriptionFilter, readonly handler: ChangeHandler,
              readonly since: Since, readonly storageKey: string | null, stored: number | null,
              readonly wentLive: () => void) {
    this.filter = filter;
    this.compiled = compileFilter(filter);
    this.lastCursor = stored;
    this.firstAck = new Promise<void>((resolve, reject) => {
      this.settleFirstAck = (error) => (error ? reject(error) : resolve());
    });
  }

  /** The `since` of the next subscribe: the last delivered cursor, capped by a resync position. */
  resumeFrom(): Since {
    const own = this.lastCursor ?? this.since;
    if (this.resyncCursor === null) return own;
    return own === "now" ? this.resyncCursor : Math.min(own, this.resyncCursor);
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function createClient(options: ClientOptions): TimebankClient {
  return new SocketClient(options);
}

export class SocketClient implements TimebankClient {
  state: ConnectionState = "connecting";
  private readonly socket: Socket;
  private readonly router: ChangeRouter<ClientSubscription>;
  private readonly storage: CursorStorage;
  private readonly writer: CursorWriter;
  private readonly prefix: string;
  private readonly listeners = new Set<(state: ConnectionState) => void>();
  private readonly onError: (error: Error) => void;
  private closed = false;
  private failures = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  // Which connection this is: work left from an older one (a retry, a late ack) stops.
  private link = 0;

  constructor(private readonly options: ClientOptions) {
    this.onError = options.onError ?? ((error) => console.error("timebank-realtime:", error));
    this.storage = options.storage ?? defaultStorage();
    this.writer = new CursorWriter(this.storage, this.onError);
    this.prefix = options.storagePrefix ?? "timebank-realtime";
    this.router = new ChangeRouter(
      (subscription, kind, change) => this.deliver(subscription, kind, change),
      (subscription) => subscription.wentLive());
    this.socket = io(options.url, {
      transports: options.transports ?? ["websocket", "polling"],
      // Reconnects are ours (full jitter, and after "io server disconnect" too, which socket.io-client
      // leaves alone): see scheduleReconnect.
      reconnection: false,
      auth: (callback) => void this.auth().then(callback),
    });
    this.listen();
  }

  private async auth(): Promise<Record<string, unknown>> {
    const auth: Record<string, unknown> = { batch: this.options.batch ?? true };
    try {
      const token = typeof this.options.token === "function" ? await this.options.token() : this.options.token;
      if (token) auth.token = token;
    } catch (error) {
      this.onError(asError(error));
    }
    return auth;
  }

  private listen(): void {
    const socket = this.socket;
    const onChange = (kind: ChangeKind) => (change: TaggedChange) => this.router.onChange(kind, change);
    socket.on("chainhook:event", onChange("event"));
    socket.on("chainhook:rollback", onChange("rollback"));
    socket.on("chainhook:block", onChange("block"));
    socket.on("chainhook:block_rollback", onChange("block_rollback"));
    socket.on("chainhook:batch", (frame: BatchFrame) => this.router.onBatch(frame));
    socket.on("chainhook:eose", (eose: Eose) => this.router.onEose(eose));
    socket.on("chainhook:heartbeat", (beat: Heartbeat) => this.options.onHeartbeat?.(beat));
    socket.on("chainhook:resync", (resync: Resync) => this.onResync(resync));
    socket.on("connect", () => void this.onConnect());
    socket.on("disconnect", (reason) => this.onDisconnect(reason));
    socket.on("connect_error", (error) => this.onConnectError(error));
  }

  private setState(state: ConnectionState): void {
    if (this.state === state || this.state === "closed") return;
    this.state = state;
    for (const listener of [...this.listeners]) {
      try {
        listener(state);
      } catch (error) {
        this.onError(asError(error)); // one listener's bug must not stop the reconnect that follows
      }
    }
  }

  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private subscriptions(): ClientSubscription[] {
    return [...this.router.all()];
  }

  private async onConnect(): Promise<void> {
    const mine = ++this.link;
    this.failures = 0;
    this.router.newConnection();
    this.setState("connected");
    for (const subscription of [...this.subscriptions()]) await this.send(subscription, mine);
  }

  private onResync(resync: Resync): void {
    // The server disconnects us next, after everything queued before this; where it says a
    // subscription can resume is where its next subscribe starts, at the latest.
    for (const subscription of this.subscriptions()) {
      const position = subscription.serverId === null ? undefined : resync.subscriptions?.[subscription.serverId];
      if (typeof position === "number") subscription.resyncCursor = position;
    }
  }

  private onDisconnect(reason: Socket.DisconnectReason): void {
    this.link++;
    if (this.closed || reason === "io client disconnect") return;
    this.setState("disconnected");
    this.scheduleReconnect();
  }

  private onConnectError(error: Error): void {
    if (this.closed) return;
    this.onError(error);
    this.setState("disconnected");
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    const delay = fullJitterDelay({ initialMs: this.options.backoffInitialMs ?? 500,
      maxMs: this.options.backoffMaxMs ?? 15_000 }, this.failures++);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.closed || this.socket.connected) return;
      this.setState("connecting");
      this.socket.connect();
    }, delay);
  }

  async subscribe(filter: SubscriptionFilter, handler: ChangeHandler, options: SubscribeOptions = {}):
      Promise<Subscription> {
    return this.register(filter, handler, options, () => {});
  }

  /** subscribe, plus a callback for each time its replay is over (watchTransaction waits for it). */
  async register(filter: SubscriptionFilter, handler: ChangeHandler, options: SubscribeOptions,
                 wentLive: () => void): Promise<Subscription> {
    if (this.closed) throw new Error("timebank-realtime: the client is closed");
    const key = options.key ?? filterKey(filter);
    const storageKey = options.persist === false ? null : `${this.prefix}:${key}`;
    const stored = storageKey === null ? null : await this.storage.get(storageKey);
    const subscription = new ClientSubscription(key, filter, handler, options.since ?? "now", storageKey,
      stored === null || stored === "" || Number.isNaN(Number(stored)) ? null : Number(stored), wentLive);
    this.router.add(subscription);
    if (this.socket.connected) void this.send(subscription, this.link);
    await subscription.firstAck;
    return subscription;
  }

  async unsubscribe(subscription: Subscription): Promise<void> {
    const mine = subscription as ClientSubscription;
    if (!this.router.has(mine)) return;
    this.router.remove(mine);
    mine.settleFirstAck(new Error("timebank-realtime: unsubscribed before the server took it"));
    if (mine.serverId !== null && this.socket.connected) await this.release(mine.serverId);
  }

  private async release(serverId: string): Promise<void> {
    try {
      const reply: UnsubscribeReply = await this.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("unsubscribe", { id: serverId });
      if (!reply.ok && reply.error.code !== "unknown_subscription") {
        this.onError(new SubscriptionRefused(reply.error.code, reply.error.message));
      }
    } catch (error) {
      if (this.socket.connected) this.onError(asError(error));
    }
  }

  /** Sends one subscription's subscribe on connection `mine`, asking again when refused for now. */
  private async send(subscription: ClientSubscription, mine: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (mine !== this.link || !this.router.has(subscription) || !this.socket.connected) return;
      this.router.reset(subscription);
      const since = subscription.resumeFrom();
      const reply = await this.ask(subscription, since);
      if (mine !== this.link) return; // the connection this was for is gone; the next one resubscribes
      if (!this.router.has(subscription)) {
        if (reply.ok) await this.release(reply.id); // unsubscribed while we waited
        return;
      }
      if (reply.ok) return this.acknowledged(subscription, reply.id, reply.cursor, since);
      if (!RETRYABLE.has(reply.error.code) || attempt === ATTEMPTS) {
        return this.refused(subscription, new SubscriptionRefused(reply.error.code, reply.error.message));
      }
      await sleep(RETRY_MS);
    }
  }

  private async ask(subscription: ClientSubscription, since: Since): Promise<SubscribeReply> {
    try {
      return await this.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("subscribe", { ...subscription.filter, since });
    } catch (error) {
      return { ok: false, error: { code: "not_connected", message: asError(error).message } };
    }
  }

  private acknowledged(subscription: ClientSubscription, serverId: string, ackCursor: number, since: Since): void {
    const hadCursor = subscription.lastCursor !== null;
    this.router.acknowledged(subscription, serverId, ackCursor, since === "now" ? ackCursor : since);
    subscription.resyncCursor = null;
    // Where a subscription that has delivered nothing yet resumes after a reload: the ack, not "now".
    if (!hadCursor && subscription.storageKey !== null && subscription.lastCursor !== null) {
      this.writer.write(subscription.storageKey, String(subscription.lastCursor));
    }
    subscription.acknowledgedOnce = true;
    subscription.settleFirstAck();
  }

  private refused(subscription: ClientSubscription, error: SubscriptionRefused): void {
    if (subscription.acknowledgedOnce) {
      this.onError(error); // a resubscription: nobody waits for it; the next connection tries again
      return;
    }
    this.router.remove(subscription);
    subscription.settleFirstAck(error);
  }

  // The handler first, then the cursor: a crash in between hands the change over again after a reload
  // (at least once), never loses it.
  private deliver(subscription: ClientSubscription, kind: ChangeKind, change: ChangeMessage): void {
    try {
      subscription.handler(kind, change);
    } catch (error) {
      this.onError(asError(error));
    }
    if (subscription.storageKey !== null) this.writer.write(subscription.storageKey, String(change.cursor));
  }

  watchTransaction(txHash: string): TransactionWatch {
    return watchTransaction(this, txHash, this.onError);
  }

  close(): Promise<void> {
    if (this.closed) return this.writer.flush();
    this.closed = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    for (const subscription of this.subscriptions()) {
      subscription.settleFirstAck(new Error("timebank-realtime: the client was closed"));
    }
    this.socket.close();
    this.setState("closed");
    return this.writer.flush();
  }
}
