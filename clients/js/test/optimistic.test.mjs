// The optimistic manager against the real server: a value held while its transaction is pending, then
// dropped with onConfirmed or onReverted.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createOptimisticManager } from "../dist/index.js";
import { deliver, openClient, sleep, txHashOf } from "./helpers.mjs";

function track(manager) {
  const calls = [];
  manager.onChange(() => calls.push(new Map(manager.pending())));
  return calls;
}

test("confirmed: the value is held while pending, then onConfirmed gets the events", async (t) => {
  const { client, errors } = openClient(t);
  const manager = createOptimisticManager(client);
  const changes = track(manager);
  const confirmed = [];
  const reverted = [];
  // The transaction lands after the watch has started: the live path.
  const status = await manager.executeWithOptimistic("like:1", { likes: 11 }, async () => {
    assert.deepEqual(manager.get("like:1"), { likes: 11 });
    setTimeout(() => void deliver(30), 300);
    return txHashOf(30);
  }, (events) => confirmed.push(events), (reason) => reverted.push(reason));
  assert.equal(status, "confirmed");
  assert.equal(confirmed.length, 1);
  assert.deepEqual(confirmed[0].map((event) => event.event_type), ["contract_call", "print_event", "print_event"]);
  assert.ok(confirmed[0].every((event) => event.tx_hash === txHashOf(30) && event.canonical));
  assert.deepEqual(reverted, []);
  assert.equal(manager.get("like:1"), undefined);
  assert.deepEqual(changes.map((pending) => [...pending.keys()]), [["like:1"], []]);

  // Stored before the watch began: it still counts (the watch reads from cursor 0).
  const again = await manager.executeWithOptimistic("like:2", 12, async () => {
    await deliver(31);
    return txHashOf(31);
  });
  assert.equal(again, "confirmed");
  assert.deepEqual(errors, []);
});

test("failed: a transaction stored with success false reverts", async (t) => {
  const { client, errors } = openClient(t);
  const manager = createOptimisticManager(client);
  const reverted = [];
  const status = await manager.executeWithOptimistic("transfer", 5, async () => {
    await deliver(40, { success: false });
    return txHashOf(40);
  }, () => assert.fail("not confirmed"), (reason) => reverted.push(reason));
  assert.equal(status, "failed");
  assert.deepEqual(reverted, ["failed"]);
  assert.equal(manager.get("transfer"), undefined);
  assert.deepEqual(errors, []);
});

test("rolled back: an apply and its rollback settle as rolled_back, not confirmed", async (t) => {
  const { client, errors } = openClient(t);
  const manager = createOptimisticManager(client);
  const reverted = [];
  const status = await manager.executeWithOptimistic("mint", "pending-nft", async () => {
    await deliver(50);
    await deliver(50, { rollback: true });
    return txHashOf(50);
  }, () => assert.fail("not confirmed"), (reason) => reverted.push(reason));
  assert.equal(status, "rolled_back");
  assert.deepEqual(reverted, ["rolled_back"]);
  assert.equal(manager.get("mint"), undefined);
  assert.deepEqual(errors, []);
});

test("send throws: reverted at once with its error, nothing watched", async (t) => {
  const { client, errors } = openClient(t);
  const manager = createOptimisticManager(client);
  const changes = track(manager);
  const failure = new Error("wallet refused");
  const reverted = [];
  const status = await manager.executeWithOptimistic("k", 1, async () => {
    await sleep(10);
    throw failure;
  }, () => assert.fail("not confirmed"), (reason, error) => reverted.push([reason, error]));
  assert.equal(status, "failed");
  assert.deepEqual(reverted, [["send_failed", failure]]);
  assert.equal(manager.get("k"), undefined);
  assert.deepEqual(changes.map((pending) => [...pending.entries()]), [[["k", 1]], []]);

  // A newer call under the same key, with an equal value, is not dropped when the older one settles.
  const older = manager.executeWithOptimistic("k", 1, async () => { await sleep(50); throw failure; });
  const newer = manager.executeWithOptimistic("k", 1, async () => { await sleep(150); throw failure; });
  assert.equal(await older, "failed");
  assert.equal(manager.get("k"), 1);
  assert.equal(await newer, "failed");
  assert.equal(manager.get("k"), undefined);
  assert.deepEqual(errors, []);
});
