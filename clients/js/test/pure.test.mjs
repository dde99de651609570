// The pure parts, from messages alone: the client rules (router), filter matching, backoff, a
// transaction's status. The scenarios against the real server are in conformance.test.mjs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChangeRouter, compileFilter, filterKey, fullJitterDelay, matches, TransactionState } from "../dist/index.js";
import { newRoutedSubscription } from "../dist/router.js";

const event = (cursor, extra = {}) => ({ id: cursor, cursor, canonical: true, contract_id: "SP1.a", event_type: "print_event",
  tx_hash: "0xAB", network: "testnet", affected_addresses: ["SP2"], asset_identifier: null, success: true, ...extra });

function routed(filter = {}, last = null) {
  const delivered = [];
  const router = new ChangeRouter((sub, kind, change) => delivered.push([sub.name, kind, change.cursor]));
  const add = (name, f = filter, l = last) => {
    const sub = Object.assign(newRoutedSubscription(compileFilter(f), l), { name });
    router.add(sub);
    return sub;
  };
  return { router, delivered, add };
}

test("replay at once, live held until eose, then in cursor order, each cursor once", () => {
  const { router, delivered, add } = routed();
  const a = add("a");
  router.onChange("event", event(12)); // live, before the ack: held
  router.acknowledged(a, "sub-1", 10, 0);
  router.onChange("event", { ...event(11), subscription: "sub-1" }); // live above the ack, tagged: held
  router.onChange("event", { ...event(9), subscription: "sub-1" }); // replay: at once
  router.onChange("event", event(13));
  assert.deepEqual(delivered, [["a", "event", 9]]);
  router.onEose({ id: "sub-1", cursor: 11 });
  router.onChange("event", event(12)); // a repeat
  router.onChange("rollback", { ...event(14), canonical: false });
  assert.deepEqual(delivered.map(([, , c]) => c), [9, 11, 12, 13, 14]);
  assert.equal(delivered.at(-1)[1], "rollback");
  assert.equal(a.lastCursor, 14);
});

test("tagged changes and an eose that come before the ack are kept for it", () => {
  const { router, delivered, add } = routed();
  const a = add("a");
  router.onBatch({ subscription: "sub-2", changes: [event(3), event(4)] });
  router.onEose({ id: "sub-2", cursor: 4 });
  assert.deepEqual(delivered, []);
  router.acknowledged(a, "sub-2", 4, 0);
  assert.deepEqual(delivered, [["a", "event", 3], ["a", "event", 4]]);
  assert.equal(a.live, true);
});

test("a change for several subscriptions goes to each it names; live ones only to matches", () => {
  const { router, delivered, add } = routed();
  const a = add("a", {});
  const b = add("b", { contract: "SP1.b" });
  router.acknowledged(a, "s-a", 5, 0);
  router.acknowledged(b, "s-b", 5, 0);
  router.onChange("event", { ...event(2), subscriptions: ["s-a", "s-b"] });
  router.onEose({ id: "s-a", cursor: 5 });
  router.onEose({ id: "s-b", cursor: 5 });
  router.onChange("event", event(6)); // contract SP1.a: only a
  router.onChange("block", { topic: "block", id: 1, cursor: 7, canonical: true, network: "testnet" }); // neither
  assert.deepEqual(delivered, [["a", "event", 2], ["b", "event", 2], ["a", "event", 6]]);
});

test("a new connection forgets server ids and liveness, not the delivered cursor", () => {
  const { router, delivered, add } = routed();
  const a = add("a");
  router.acknowledged(a, "s-1", 5, 5); // since "now": it starts at the ack cursor
  router.onEose({ id: "s-1", cursor: 5 });
  router.onChange("event", event(6));
  router.newConnection();
  assert.deepEqual([a.serverId, a.live, a.lastCursor], [null, false, 6]);
  router.onChange("event", event(7)); // held: not subscribed on this connection yet
  router.acknowledged(a, "s-9", 8, 6);
  router.onChange("event", { ...event(6), subscription: "s-9" }); // already delivered
  router.onChange("event", { ...event(7), subscription: "s-9" }); // the replay carries the held one
  router.onChange("event", { ...event(8), subscription: "s-9" });
  router.onEose({ id: "s-9", cursor: 8 });
  assert.deepEqual(delivered.map(([, , c]) => c), [6, 7, 8]);
});

test("filters match as the server does: seed forms, lists, lower-cased tx_hash and network, blocks", () => {
  const seed = compileFilter({ type: "user", address: "SP2" });
  assert.ok(matches(seed, event(1)));
  assert.ok(!matches(seed, event(1, { affected_addresses: ["SP3"] })));
  assert.ok(matches(compileFilter({ type: "contract", contractId: "SP1.a" }), event(1)));
  assert.ok(matches(compileFilter({ type: "event-type", eventType: "print_event" }), event(1)));
  assert.ok(matches(compileFilter({ tx_hash: "0xab", network: ["MainNet", "TESTNET"] }), event(1)));
  assert.ok(!matches(compileFilter({ contract: "SP1.a", event_type: "nft_mint_event" }), event(1)));
  const block = { topic: "block", id: 1, cursor: 2, canonical: true, network: "testnet" };
  assert.ok(!matches(compileFilter({}), block));
  assert.ok(matches(compileFilter({ topic: "blocks", network: "testnet" }), block));
  assert.ok(!matches(compileFilter({ topic: "blocks" }), event(1)));
  assert.throws(() => compileFilter({ type: "wallet", address: "SP2" }), /unknown subscription type/);
  assert.equal(filterKey({ event_type: "x", contract: "c" }), filterKey({ contract: "c", event_type: "x" }));
  assert.equal(filterKey({ type: "contract", contractId: "c" }), filterKey({ contract: "c" }));
});

test("full jitter: between 0 and the exponential cap, never above the maximum", () => {
  const backoff = { initialMs: 100, maxMs: 1000 };
  assert.equal(fullJitterDelay(backoff, 0, () => 0), 0);
  assert.equal(fullJitterDelay(backoff, 0, () => 0.999), 99);
  assert.equal(fullJitterDelay(backoff, 3, () => 0.5), 400);
  assert.equal(fullJitterDelay(backoff, 50, () => 0.999), 999);
});

test("a transaction's status follows its changes", () => {
  const tx = new TransactionState();
  assert.equal(tx.status, "pending");
  tx.apply("event", event(1));
  tx.apply("event", event(2));
  assert.equal(tx.status, "confirmed");
  tx.apply("rollback", { ...event(3), id: 1, canonical: false });
  assert.equal(tx.status, "confirmed"); // one of its events is still canonical
  tx.apply("rollback", { ...event(4), id: 2, canonical: false });
  assert.equal(tx.status, "rolled_back");
  assert.deepEqual(tx.events, []);
  tx.apply("event", { ...event(5), id: 1 });
  assert.equal(tx.status, "confirmed");
  const failed = new TransactionState();
  failed.apply("event", event(1, { success: false }));
  assert.equal(failed.status, "failed");
});
