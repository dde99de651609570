// timebank-realtime-client: every change of a timebank-realtime server exactly once, in cursor order,
// across reconnects, resyncs and page reloads. See docs/js-client.md.

export { createClient, SubscriptionRefused } from "./client.js";
export type { ChangeHandler, ClientOptions, ConnectionState, SubscribeOptions, Subscription,
  TimebankClient } from "./client.js";
export { fullJitterDelay } from "./backoff.js";
export type { Backoff } from "./backoff.js";
export { compileFilter, fieldFilterOf, filterKey, isSeedFilter, matches } from "./filters.js";
export type { CompiledFilter, FieldFilter, SeedFilter, SubscriptionFilter } from "./filters.js";
export { changeKind } from "./messages.js";
export type { BatchFrame, Block, BlockRollback, ChainhookEvent, ChainTip, ChangeKind, ChangeMessage, ChangeTags,
  Eose, Heartbeat, Resync, Rollback, ServerError, Since, SubscribeAck, SubscribeError, SubscribeReply,
  TaggedChange, UnsubscribeAck, UnsubscribeReply } from "./messages.js";
export { createOptimisticManager } from "./optimistic.js";
export type { OptimisticManager, RevertReason } from "./optimistic.js";
export { ChangeRouter } from "./router.js";
export type { RoutedSubscription } from "./router.js";
export { indexedDbStorage, localStorageStorage, memoryStorage } from "./storage.js";
export type { CursorStorage } from "./storage.js";
export { TransactionState } from "./transactions.js";
export type { TransactionStatus } from "./transactions.js";
export type { TransactionWatch } from "./watch.js";
