// EventList (src/event-list.ts), the pure part of useRealtimeEvents: changes in, the list a hook shows out.
// No server: the orders here are those two subscriptions of one list can produce (docs/protocol.md,
// "Several subscriptions on one socket"), each in cursor order on its own.

import assert from "node:assert/strict";
import { test } from "node:test";

import { EventList } from "../dist/event-list.js";

const event = (id, cursor) => ({ id, cursor, canonical: true, event_type: "print_event" });
const rollback = (id, cursor) => ({ id, cursor, canonical: false, event_type: "print_event" });
const shown = (list) => list.events.map((e) => [e.id, e.cursor]);

test("a change that two subscriptions bring counts once", () => {
  const list = new EventList();
  assert.equal(list.apply("event", event(1, 10)), true);
  assert.equal(list.apply("event", event(1, 10)), false);
  assert.deepEqual(shown(list), [[1, 10]]);
});

test("a rollback removes its event and a re-apply brings it back at its new cursor", () => {
  const list = new EventList();
  list.apply("event", event(1, 10));
  list.apply("event", event(2, 11));
  assert.equal(list.apply("rollback", rollback(1, 12)), true);
  assert.deepEqual(shown(list), [[2, 11]]);
  assert.equal(list.apply("event", event(1, 13)), true);
  assert.deepEqual(shown(list), [[2, 11], [1, 13]]);
});

test("a replay behind another subscription neither revives a rolled-back event nor shows one twice", () => {
  const list = new EventList();
  // The live subscription saw the apply and the rollback of 1, and the apply of 2 ...
  list.apply("event", event(1, 10));
  list.apply("rollback", rollback(1, 12));
  list.apply("event", event(2, 14));
  // ... then the other one's replay brings the older changes again, and one the first never matched.
  assert.equal(list.apply("event", event(1, 10)), false);
  assert.equal(list.apply("event", event(3, 11)), true);
  assert.equal(list.apply("rollback", rollback(1, 12)), false);
  assert.deepEqual(shown(list), [[3, 11], [2, 14]], "in cursor order, whatever order they came in");
});

test("a limit keeps the newest; a smaller limit trims at once", () => {
  const list = new EventList(2);
  for (const [id, cursor] of [[1, 1], [2, 2], [3, 3]]) list.apply("event", event(id, cursor));
  assert.deepEqual(shown(list), [[2, 2], [3, 3]]);
  assert.equal(list.apply("event", event(9, 0)), false, "older than all it keeps: not shown");
  assert.equal(list.setLimit(1), true);
  assert.deepEqual(shown(list), [[3, 3]]);
  assert.equal(list.setLimit(undefined), false);
});

test("blocks are not events; the array changes only when the list does", () => {
  const list = new EventList();
  list.apply("event", event(1, 1));
  const before = list.events;
  assert.equal(list.apply("block", { topic: "block", id: 1, cursor: 2, canonical: true }), false);
  assert.equal(list.events, before);
  list.apply("event", event(2, 3));
  assert.notEqual(list.events, before);
  assert.deepEqual(shown({ events: before }), [[1, 1]], "a snapshot already rendered is never mutated");
});
