// The server's messages and the client's requests, one type each (docs/protocol.md, "Server messages").

/** What a change is, as its own message would have been named: chainhook:event, chainhook:rollback, … */
export type ChangeKind = "event" | "rollback" | "block" | "block_rollback";

/** Where a subscription starts: after this cursor (0: everything stored), or "now" (live only). */
export type Since = number | "now";

/** A stored event (chainhook:event): on insert, and again when a rolled-back row is restored. */
export interface ChainhookEvent {
  id: number;
  cursor: number;
  tx_hash: string;
  block_height: number;
  block_hash: string;
  tx_index: number;
  event_index: number;
  contract_id: string | null;
  event_type: string;
  event_data: Record<string, unknown>;
  affected_addresses: string[];
  success: boolean;
  timestamp: string | null;
  network: string;
  chainhook_uuid: string;
  asset_identifier: string | null;
  canonical: true;
  topic?: undefined;
}

/** A row that left the canonical chain (chainhook:rollback): the fields filters match on. */
export interface Rollback {
  id: number;
  cursor: number;
  block_hash: string;
  block_height: number;
  tx_hash: string;
  event_index: number;
  contract_id: string | null;
  event_type: string;
  affected_addresses: string[];
  network: string;
  asset_identifier: string | null;
  canonical: false;
  topic?: undefined;
}

interface BlockFields {
  topic: "block";
  id: number;
  cursor: number;
  network: string;
  block_height: number;
  block_hash: string;
  timestamp: string | null;
  /** The transactions Chainhook sent in the delivery that first applied the block. */
  transactions: number;
  /** Their stored events. */
  events: number;
}

/** A block applied or restored (chainhook:block), for {topic: "blocks"} subscriptions. */
export interface Block extends BlockFields { canonical: true }

/** A block rolled back (chainhook:block_rollback). */
export interface BlockRollback extends BlockFields { canonical: false }

/** Any change a subscription's handler gets. */
export type ChangeMessage = ChainhookEvent | Rollback | Block | BlockRollback;

/** The tags a replayed (or held) change carries: the subscription(s) of this socket it is for. */
export interface ChangeTags {
  subscription?: string;
  subscriptions?: string[];
}

/** A change as it arrives on the wire, tags included. */
export type TaggedChange = ChangeMessage & ChangeTags;

/** chainhook:batch: several changes in cursor order, tagged as a whole. */
export interface BatchFrame extends ChangeTags {
  changes: ChangeMessage[];
}

/** chainhook:eose: the end of a subscription's replay. */
export interface Eose {
  id: string;
  cursor: number;
}

export interface ChainTip {
  block_height: number;
  block_hash: string;
  last_delivery_at?: string | null;
}

/** chainhook:heartbeat, every HEARTBEAT_SECONDS to every socket. */
export interface Heartbeat {
  cursor: number;
  tip: ChainTip | null;
  tips: Record<string, ChainTip>;
  server_time: string;
}

/** chainhook:resync: the server drops this socket next; each subscription may resume from its cursor. */
export interface Resync {
  cursor: number;
  subscriptions: Record<string, number>;
  reason: string;
}

export interface ServerError {
  code: string;
  message: string;
}

/** The server took a subscription: it replays up to `cursor`, then sends its eose. */
export interface SubscribeAck {
  ok: true;
  id: string;
  cursor: number;
  filter: Record<string, unknown>;
}

export interface SubscribeError {
  ok: false;
  error: ServerError;
}

export type SubscribeReply = SubscribeAck | SubscribeError;

export interface UnsubscribeAck {
  ok: true;
  id: string;
}

export type UnsubscribeReply = UnsubscribeAck | SubscribeError;

/** The kind a change in a batch frame would have had as a message of its own. */
export function changeKind(change: ChangeMessage): ChangeKind {
  if (change.topic === "block") return change.canonical ? "block" : "block_rollback";
  return change.canonical ? "event" : "rollback";
}

/** The change without its wire tags, so that a handler sees the same shape however it came. */
export function untagged(change: TaggedChange): ChangeMessage {
  const { subscription: _one, subscriptions: _several, ...rest } = change;
  return rest as ChangeMessage;
}

/** The subscriptions a replayed or held change is for; a live change names none. */
export function tagsOf(change: ChangeTags): string[] {
  if (Array.isArray(change.subscriptions)) return change.subscriptions;
  return typeof change.subscription === "string" ? [change.subscription] : [];
}
