// The scenarios of clients/conformance.json, one test each, against the real server of a fresh harness
// (tests/test_js_package.py runs each by name). Expected sequences come from the history API, the log
// the server pushes from; deliveries, drops and resyncs go through the harness's control plane.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { memoryStorage, SubscriptionRefused } from "../dist/index.js";
import {
  assertOnceInOrder, assertSameCursors, deliver, disconnectAll, FREDDIE, history, MONSTERS, openClient, recorder,
  head, resyncAll, SENDER, sleep, txHashOf, until,
} from "./helpers.mjs";

const SCENARIOS = JSON.parse(readFileSync(new URL("../../conformance.json", import.meta.url), "utf8")).scenarios;
const TIMEOUT = { timeout: 45_000 };
const cursorsOf = (rows) => rows.map((row) => row.cursor);
const implemented = [];
const scenario = (id, body) => {
  implemented.push(id);
  test(id, TIMEOUT, body);
};

scenario("live-exactly-once", async (t) => {
  await deliver(1); // stored before the subscription: "now" must not replay it
  const { client, errors } = openClient(t);
  const record = recorder();
  const subscription = await client.subscribe({ contract: MONSTERS }, record.handler, { since: "now" });
  const start = subscription.lastCursor;
  assert.equal(typeof start, "number");
  for (let height = 2; height <= 5; height++) {
    await deliver(height);
    await deliver(100 + height, { contract: FREDDIE }); // another contract: not for this subscription
  }
  const expected = cursorsOf(await history({ contract: MONSTERS, after: String(start) }));
  assert.equal(expected.length, 12);
  await assertSameCursors(record, expected, "live");
  assert.ok(record.seen.every(({ kind, change }) => kind === "event" && change.contract_id === MONSTERS));
  assert.equal(subscription.lastCursor, expected.at(-1));
  assert.deepEqual(errors, []);
});

scenario("replay-then-live", async (t) => {
  for (let height = 1; height <= 3; height++) await deliver(height, { events: 3 });
  const { client, errors } = openClient(t);
  const record = recorder();
  // Deliveries while the replay runs, and after it.
  const subscribing = client.subscribe({ contract: MONSTERS }, record.handler, { since: 0 });
  const during = Promise.all([deliver(4), deliver(5)]);
  await subscribing;
  await during;
  await deliver(6);
  const rows = await history({ contract: MONSTERS });
  await assertSameCursors(record, cursorsOf(rows), "replay then live");
  // The same rows as the history API, not just the same cursors.
  assert.deepEqual(record.seen.map(({ change }) => [change.id, change.tx_hash, change.event_type]),
    rows.map((row) => [row.id, row.tx_hash, row.event_type]));
  assert.deepEqual(errors, []);
});

scenario("seed-forms", async (t) => {
  await deliver(1);
  await deliver(2, { contract: FREDDIE });
  const forms = [
    [{ type: "contract", contractId: MONSTERS }, { contract: MONSTERS }, { contract: MONSTERS }],
    [{ type: "user", address: SENDER }, { address: SENDER }, { address: SENDER }],
    [{ type: "event-type", eventType: "print_event" }, { event_type: "print_event" }, { event_type: "print_event" }],
  ];
  // Seed forms on one client, field forms on another: both the server's replay and the client's own
  // matching of live changes are exercised.
  const seeds = openClient(t);
  const fields = openClient(t);
  const records = [];
  for (const [seed, field] of forms) {
    const pair = [recorder(), recorder()];
    await seeds.client.subscribe(seed, pair[0].handler, { since: 0 });
    await fields.client.subscribe(field, pair[1].handler, { since: 0 });
    records.push(pair);
  }
  await deliver(3);
  await deliver(4, { contract: FREDDIE });
  for (const [index, [, , query]] of forms.entries()) {
    const expected = cursorsOf(await history(query));
    assert.ok(expected.length > 0);
    await assertSameCursors(records[index][0], expected, `seed ${JSON.stringify(forms[index][0])}`);
    await assertSameCursors(records[index][1], expected, `field ${JSON.stringify(forms[index][1])}`);
  }
  // The forms differ: the contract one has no FREDDIE events, the event-type one no contract calls.
  assert.ok(records[0][0].seen.every(({ change }) => change.contract_id === MONSTERS));
  assert.ok(records[2][0].seen.every(({ change }) => change.event_type === "print_event"));
  assert.deepEqual([...seeds.errors, ...fields.errors], []);
});

scenario("overlapping-subscriptions", async (t) => {
  await deliver(1);
  await deliver(2, { contract: FREDDIE });
  const { client, errors } = openClient(t);
  const byContract = recorder();
  const byType = recorder();
  await client.subscribe({ contract: MONSTERS }, byContract.handler, { since: 0 });
  await deliver(3);
  await client.subscribe({ event_type: "print_event" }, byType.handler, { since: 0 });
  for (let height = 4; height <= 6; height++) {
    await deliver(height);
    await deliver(100 + height, { contract: FREDDIE });
  }
  const contractRows = cursorsOf(await history({ contract: MONSTERS }));
  const printRows = cursorsOf(await history({ event_type: "print_event" }));
  await assertSameCursors(byContract, contractRows, "contract");
  await assertSameCursors(byType, printRows, "print events");
  // They overlap: the monsters print events reached both.
  const both = contractRows.filter((cursor) => printRows.includes(cursor));
  assert.ok(both.length >= 10, `${both}`);
  assert.deepEqual(errors, []);
});

scenario("forced-disconnect", async (t) => {
  await deliver(1);
  const { client, errors, states } = openClient(t);
  const everything = recorder();
  const monsters = recorder();
  await client.subscribe({}, everything.handler, { since: 0 });
  const fromNow = await client.subscribe({ contract: MONSTERS }, monsters.handler, { since: "now" });
  const start = fromNow.lastCursor;
  for (let height = 2; height <= 13; height++) {
    await deliver(height, { contract: height % 2 ? MONSTERS : FREDDIE });
    if (height % 3 === 0) {
      await until(() => client.state === "connected", () => `${states}`); // back from the last drop
      const { dropped } = await disconnectAll();
      assert.equal(dropped, 1);
    }
    await sleep(20);
  }
  await assertSameCursors(everything, cursorsOf(await history()), "everything");
  const monsterRows = cursorsOf(await history({ contract: MONSTERS }));
  await assertSameCursors(monsters, monsterRows.filter((cursor) => cursor > start), "monsters, from now");
  // It came back by itself after each of the four drops.
  assert.ok(states.filter((state) => state === "connected").length >= 5, `${states}`);
  assert.ok(states.includes("disconnected"));
  assert.deepEqual(errors, []);
});

scenario("resync", async (t) => {
  for (let height = 1; height <= 3; height++) await deliver(height);
  const { client, errors, states } = openClient(t);
  const everything = recorder();
  const prints = recorder();
  await client.subscribe({}, everything.handler, { since: 0 });
  await client.subscribe({ event_type: "print_event" }, prints.handler, { since: 2 });
  await deliver(4);
  const { resynced } = await resyncAll();
  assert.equal(resynced, 1);
  for (let height = 5; height <= 6; height++) await deliver(height); // while the client is away or resuming
  await until(() => states.filter((state) => state === "connected").length === 2, () => `${states}`);
  assert.equal((await resyncAll()).resynced, 1); // once more, right after it came back
  for (let height = 7; height <= 8; height++) await deliver(height);
  await assertSameCursors(everything, cursorsOf(await history()), "everything");
  await assertSameCursors(prints, cursorsOf(await history({ event_type: "print_event", after: "2" })), "prints");
  assert.ok(states.filter((state) => state === "connected").length >= 3, `${states}`);
  assert.deepEqual(errors, []);
});

scenario("rollback", async (t) => {
  const { client, errors } = openClient(t);
  const record = recorder();
  await client.subscribe({ contract: MONSTERS }, record.handler, { since: "now" });
  await deliver(7, { events: 2 });
  await until(() => record.seen.length === 3, () => JSON.stringify(record.cursors()));
  await deliver(7, { events: 2, rollback: true });
  await until(() => record.seen.length === 6, () => JSON.stringify(record.cursors()));
  await deliver(7, { events: 2 }); // the block comes back
  await until(() => record.seen.length === 9, () => JSON.stringify(record.cursors()));
  await sleep(300);
  assert.equal(record.seen.length, 9);
  assertOnceInOrder(record.cursors());
  const [applied, rolledBack, restored] = [record.seen.slice(0, 3), record.seen.slice(3, 6), record.seen.slice(6)];
  assert.deepEqual(applied.map((entry) => entry.kind), ["event", "event", "event"]);
  assert.deepEqual(rolledBack.map((entry) => entry.kind), ["rollback", "rollback", "rollback"]);
  assert.deepEqual(restored.map((entry) => entry.kind), ["event", "event", "event"]);
  const ids = (entries) => entries.map((entry) => entry.change.id).sort();
  assert.deepEqual(ids(rolledBack), ids(applied)); // each rollback names an event it had applied...
  assert.deepEqual(ids(restored), ids(applied));
  for (const rollback of rolledBack) {
    const event = applied.find((entry) => entry.change.id === rollback.change.id);
    assert.ok(rollback.cursor > event.cursor); // ...after it, with a higher cursor
    assert.equal(rollback.change.canonical, false);
    assert.equal(rollback.change.tx_hash, txHashOf(7));
  }
  assert.ok(restored.every(({ change }) => change.canonical === true && change.tx_hash === txHashOf(7)));
  // The log agrees: the events are canonical again, with their restore's cursor.
  assert.deepEqual(cursorsOf(await history({ contract: MONSTERS })), restored.map((entry) => entry.cursor));
  assert.deepEqual(errors, []);
});

scenario("reload-resume", async (t) => {
  const storage = memoryStorage(); // what survives the reload (localStorage in a page)
  await deliver(1);
  const first = openClient(t, { storage });
  const before = recorder();
  await first.client.subscribe({ contract: MONSTERS }, before.handler, { key: "wallet", since: 0 });
  await deliver(2);
  await assertSameCursors(before, cursorsOf(await history({ contract: MONSTERS })), "first page");
  first.client.close();
  await sleep(50);
  assert.equal(await storage.get("timebank-realtime:wallet"), String(before.cursors().at(-1)));
  for (let height = 3; height <= 5; height++) await deliver(height); // while no page is open

  const second = openClient(t, { storage });
  const after = recorder();
  // The same key: since 0 is only where a subscription starts that has nothing stored.
  const resumed = await second.client.subscribe({ contract: MONSTERS }, after.handler, { key: "wallet", since: 0 });
  await deliver(6);
  const all = cursorsOf(await history({ contract: MONSTERS }));
  await assertSameCursors(after, all.filter((cursor) => cursor > before.cursors().at(-1)), "after the reload");
  assert.deepEqual([...before.cursors(), ...after.cursors()], all); // together: each once
  assert.equal(resumed.lastCursor, all.at(-1));
  assert.deepEqual([...first.errors, ...second.errors], []);
});

scenario("batch-frames", async (t) => {
  await deliver(1);
  await deliver(2);
  await deliver(1, { rollback: true }); // a rollback in the replay...
  const batched = openClient(t, { batch: true });
  const single = openClient(t, { batch: false });
  const frames = recorder();
  const messages = recorder();
  await batched.client.subscribe({}, frames.handler, { since: 0 });
  await single.client.subscribe({}, messages.handler, { since: 0 });
  const blocksBatched = recorder();
  const blocksSingle = recorder();
  await batched.client.subscribe({ topic: "blocks" }, blocksBatched.handler, { since: 0 });
  await single.client.subscribe({ topic: "blocks" }, blocksSingle.handler, { since: 0 });
  for (let height = 3; height <= 5; height++) await deliver(height, { events: 4 });
  await deliver(4, { events: 4, rollback: true }); // ...and live
  await deliver(1); // a restore
  // The last event change is the newest cursor of the history; the last block change is the head.
  const lastEvent = Math.max(...cursorsOf(await history({ include_rolled_back: "true" })));
  const last = await head();
  await until(() => [frames, messages].every((record) => record.cursors().at(-1) === lastEvent)
    && [blocksBatched, blocksSingle].every((record) => record.cursors().at(-1) === last),
  () => `${frames.cursors().at(-1)}, ${messages.cursors().at(-1)} of ${lastEvent}; blocks of ${last}`);
  await sleep(300);
  const sequence = (record) => record.seen.map(({ kind, cursor }) => [kind, cursor]);
  assert.deepEqual(sequence(frames), sequence(messages));
  assert.deepEqual(sequence(blocksBatched), sequence(blocksSingle));
  const kinds = new Set([...sequence(frames), ...sequence(blocksBatched)].map(([kind]) => kind));
  assert.deepEqual([...kinds].sort(), ["block", "block_rollback", "event", "rollback"]);
  assertOnceInOrder(frames.cursors());
  // A change from a frame has no wire tags: the same shape as one that came on its own.
  assert.ok(frames.seen.every(({ change }) => !("subscription" in change) && !("subscriptions" in change)));
  assert.deepEqual([...batched.errors, ...single.errors], []);
});

scenario("blocks", async (t) => {
  await deliver(10);
  const { client, errors } = openClient(t);
  const blocks = recorder();
  const events = recorder();
  await client.subscribe({ topic: "blocks" }, blocks.handler, { since: 0 });
  await client.subscribe({}, events.handler, { since: 0 });
  await deliver(11, { events: 1 });
  await deliver(11, { events: 1, rollback: true });
  await deliver(12, { events: 3 });
  await until(() => blocks.seen.length >= 4, () => JSON.stringify(blocks.seen.map((s) => [s.kind, s.cursor])));
  await sleep(300);
  assert.deepEqual(blocks.seen.map(({ kind, change }) => [kind, change.block_height, change.canonical]),
    [["block", 10, true], ["block", 11, true], ["block_rollback", 11, false], ["block", 12, true]]);
  assert.ok(blocks.seen.every(({ change }) => change.topic === "block" && change.network === "testnet"));
  assert.deepEqual(blocks.seen.map(({ change }) => change.events), [2, 1, 1, 3]);
  assertOnceInOrder(blocks.cursors());
  // And an event subscription never gets a block: 3 + 2 events, 2 rollbacks, 4 events.
  await until(() => events.seen.length >= 11, () => `${events.cursors()}`);
  assert.equal(events.seen.length, 11);
  assert.ok(events.seen.every(({ kind, change }) => (kind === "event" || kind === "rollback") && change.topic === undefined));
  assert.ok(!events.cursors().some((cursor) => blocks.cursors().includes(cursor)));
  assert.deepEqual(errors, []);
});

scenario("refused-subscription", async (t) => {
  const { client, errors } = openClient(t);
  const kept = recorder();
  await client.subscribe({ contract: MONSTERS }, kept.handler, { since: "now" });
  const refused = recorder();
  await assert.rejects(client.subscribe({ event_type: "nope" }, refused.handler), (error) => {
    assert.ok(error instanceof SubscriptionRefused);
    assert.equal(error.code, "invalid_event_type");
    assert.match(error.message, /^invalid_event_type: .*nope/);
    return true;
  });
  await assert.rejects(client.subscribe({ topic: "blocks", contract: MONSTERS }, refused.handler),
    (error) => error instanceof SubscriptionRefused && error.code === "invalid_filter");
  await deliver(1);
  await deliver(2);
  await assertSameCursors(kept, cursorsOf(await history({ contract: MONSTERS })), "the other subscription");
  // After a reconnect the refused ones are not asked again: still one feed, and no errors.
  await disconnectAll();
  await deliver(3);
  await assertSameCursors(kept, cursorsOf(await history({ contract: MONSTERS })), "after a reconnect");
  assert.deepEqual(refused.seen, []);
  assert.deepEqual(errors, []);
});

scenario("transaction-watch", async (t) => {
  const { client, errors } = openClient(t);
  // Pending until its events arrive, then confirmed.
  const watch = client.watchTransaction(txHashOf(20));
  const statuses = [];
  watch.onChange((status) => statuses.push(status));
  await watch.ready;
  assert.equal(watch.status, "pending");
  assert.deepEqual(watch.events, []);
  await deliver(20, { events: 2 });
  await until(() => watch.events.length === 3, () => `${watch.status} ${watch.events.length}`);
  assert.equal(watch.status, "confirmed");
  const stored = await (await fetch(`${process.env.TIMEBANK_URL}/api/transactions/${txHashOf(20)}`)).json();
  assert.deepEqual(watch.events.map((event) => event.id), stored.events.map((event) => event.id).sort((a, b) => a - b));
  // Rolled back when a rollback names it.
  await deliver(20, { events: 2, rollback: true });
  await until(() => watch.status === "rolled_back", () => watch.status);
  assert.deepEqual(watch.events, []);
  assert.deepEqual([...new Set(statuses)], ["confirmed", "rolled_back"]);
  await watch.stop();

  // Failed when it is stored with success false; events stored before the watch began count.
  await deliver(21, { events: 1, success: false });
  const failed = client.watchTransaction(txHashOf(21));
  await failed.ready;
  assert.equal(failed.status, "failed");
  assert.equal(failed.events.length, 2);
  assert.ok(failed.events.every((event) => event.success === false));

  // A watch that starts after its apply and rollback were stored settles as rolled back.
  await deliver(22);
  await deliver(22, { rollback: true });
  const late = client.watchTransaction(txHashOf(22));
  await late.ready;
  assert.equal(late.status, "rolled_back");
  await Promise.all([failed.stop(), late.stop()]);
  assert.deepEqual(errors, []);
});

test("the scenario ids are those of clients/conformance.json", () => {
  assert.deepEqual([...implemented].sort(), SCENARIOS.map((s) => s.id).sort());
  assert.equal(new Set(implemented).size, implemented.length);
});
