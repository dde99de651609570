// The client rules of docs/protocol.md ("Client rules") applied to what one connection receives: which of
// our subscriptions a change is for, what waits for an eose, and what was delivered already. Pure: no
// I/O; what a subscription's handler is to get goes to `deliver`, in cursor order, each cursor once.

import { matches, type CompiledFilter } from "./filters.js";
import { changeKind, tagsOf, untagged, type BatchFrame, type ChangeKind, type ChangeMessage, type Eose,
  type TaggedChange } from "./messages.js";

/** A subscription as the router sees it; it outlives any one connection. */
export interface RoutedSubscription {
  readonly compiled: CompiledFilter;
  /** The last cursor handed to `deliver`: nothing at or below it is handed over again. */
  lastCursor: number | null;
  /** The server's id and ack cursor on the current connection; null until acknowledged. */
  serverId: string | null;
  ackCursor: number | null;
  /** Past its eose on the current connection: changes go out as they come. */
  live: boolean;
  /** Changes newer than the replay, held until eose puts them in cursor order. */
  held: [ChangeKind, ChangeMessage][];
}

export function newRoutedSubscription(compiled: CompiledFilter, lastCursor: number | null): RoutedSubscription {
  return { compiled, lastCursor, serverId: null, ackCursor: null, live: false, held: [] };
}

export type Deliver<S extends RoutedSubscription> = (subscription: S, kind: ChangeKind, change: ChangeMessage) => void;

export class ChangeRouter<S extends RoutedSubscription> {
  private readonly subscriptions: S[] = [];
  // Tagged changes and eoses for a server id whose ack we have not handled yet: socket.io-client runs an
  // ack callback after the messages that came with it.
  private unclaimed = new Map<string, [ChangeKind, ChangeMessage][]>();
  private earlyEose = new Set<string>();

  /** `deliver` gets each change a subscription is to hand to its handler; `wentLive` is told when a
   * subscription's replay is over on this connection (its eose, and what was held, are handled). */
  constructor(private readonly deliver: Deliver<S>, private readonly wentLive: (subscription: S) => void = () => {}) {}

  /** Register before sending its subscribe, so that live changes sent meanwhile are held for it. */
  add(subscription: S): void {
    if (!this.subscriptions.includes(subscription)) this.subscriptions.push(subscription);
  }

  remove(subscription: S): void {
    const index = this.subscriptions.indexOf(subscription);
    if (index >= 0) this.subscriptions.splice(index, 1);
  }

  has(subscription: S): boolean {
    return this.subscriptions.includes(subscription);
  }

  all(): readonly S[] {
    return this.subscriptions;
  }

  /** A new connection: forget the old one for every subscription before any of them resubscribes, or
   * one still marked live would take changes meant for the others' replays. */
  newConnection(): void {
    this.unclaimed.clear();
    this.earlyEose.clear();
    for (const subscription of this.subscriptions) this.reset(subscription);
  }

  /** About to (re)send one subscription's subscribe on the current connection. */
  reset(subscription: S): void {
    subscription.serverId = null;
    subscription.ackCursor = null;
    subscription.live = false;
    subscription.held = [];
  }

  /** The server took the subscription: route what came for it before the ack was handled. `start` is
   * the cursor it was asked to resume after (the ack's for "now"): a subscription that never delivered
   * anything resumes from there on the next connection, not from "now" again. */
  acknowledged(subscription: S, serverId: string, ackCursor: number, start: number): void {
    subscription.serverId = serverId;
    subscription.ackCursor = ackCursor;
    if (subscription.lastCursor === null) subscription.lastCursor = start;
    const waiting = subscription.held;
    subscription.held = [];
    for (const [kind, change] of waiting) this.route(subscription, kind, change, false);
    for (const [kind, change] of this.unclaimed.get(serverId) ?? []) this.route(subscription, kind, change, true);
    this.unclaimed.delete(serverId);
    if (this.earlyEose.delete(serverId)) this.goLive(subscription);
  }

  onChange(kind: ChangeKind, message: TaggedChange): void {
    const tags = tagsOf(message);
    const change = untagged(message);
    for (const tag of tags) {
      const owner = this.subscriptions.find((s) => s.serverId === tag);
      if (owner) this.route(owner, kind, change, true);
      else this.unclaimed.set(tag, [...(this.unclaimed.get(tag) ?? []), [kind, change]]);
    }
    if (tags.length > 0) return;
    for (const subscription of [...this.subscriptions]) {
      if (matches(subscription.compiled, change)) this.route(subscription, kind, change, false);
    }
  }

  onBatch(frame: BatchFrame): void {
    const tags = { subscription: frame.subscription, subscriptions: frame.subscriptions };
    for (const change of frame.changes) this.onChange(changeKind(change), { ...change, ...tags });
  }

  onEose(eose: Eose): void {
    const subscription = this.subscriptions.find((s) => s.serverId === eose.id);
    if (subscription) this.goLive(subscription);
    else this.earlyEose.add(eose.id);
  }

  // Replayed history (tagged for it, at most its ack cursor) comes in order and goes straight out;
  // anything newer that arrives before eose waits, so that it can be put in cursor order.
  private route(subscription: S, kind: ChangeKind, change: ChangeMessage, replayed: boolean): void {
    const history = replayed && subscription.ackCursor !== null && change.cursor <= subscription.ackCursor;
    if (subscription.live || history) this.handOver(subscription, kind, change);
    else subscription.held.push([kind, change]);
  }

  private goLive(subscription: S): void {
    const waiting = subscription.held.sort((a, b) => a[1].cursor - b[1].cursor);
    subscription.held = [];
    for (const [kind, change] of waiting) this.handOver(subscription, kind, change);
    subscription.live = true;
    this.wentLive(subscription);
  }

  private handOver(subscription: S, kind: ChangeKind, change: ChangeMessage): void {
    if (subscription.lastCursor !== null && change.cursor <= subscription.lastCursor) return;
    subscription.lastCursor = change.cursor;
    this.deliver(subscription, kind, change);
  }
}
