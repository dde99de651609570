// The delivery promise as a property: the REAL client (dist/index.js) against the real server, driven by a
// seeded random sequence of steps (deliveries, rollbacks and re-applies, forced disconnects and resyncs,
// overlapping subscriptions with since 0 / "now" / a past cursor, stalled handlers, batch and plain
// clients over websocket and polling, clean reloads), checked against a reference model of the change log.
//
// The model: deliveries are posted one at a time, so the cursors a delivery took are (previous last
// cursor, its answer's `cursor`]; right after it, the history API's rows above the previous cursor are
// exactly that delivery's event changes (an event's cursor is its newest change), with the fields filters
// match on and `canonical` (event or rollback); the other cursors of the range are its block changes.
// At the end every subscription must have handed its handler exactly the logged changes matching its
// filter above its start, once each, in ascending order, with the right kind; across a clean close and
// reopen with the same storage and key too (docs/js-client.md: "a new client ... resumes after it and
// gets only what the first one had not delivered"; at-least-once is only for a crash).
//
// MODEL_SEED (default: random) and MODEL_STEPS (default 40; the pytest wrapper asks 80) come from the environment; a failure names
// the seed: MODEL_SEED=<seed> node --test test/model.test.mjs (through tests/test_js_model.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { createClient, memoryStorage } from "../dist/index.js";
import { CONTROL, FREDDIE, head, history, MONSTERS, SENDER, sleep, until, URL_ } from "./helpers.mjs";

const SEED = Number(process.env.MODEL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const STEPS = Number(process.env.MODEL_STEPS ?? 40);

/** mulberry32: a small seeded PRNG, enough to replay a run from its seed. */
function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)); // inclusive
  const pick = (list) => list[Math.floor(next() * list.length)];
  const chance = (p) => next() < p;
  return { next, int, pick, chance };
}

// Filters with overlaps: a contract, both, the sender (every synthetic row), everything, a type, a seed form,
// and blocks.
const FILTERS = [
  { contract: MONSTERS },
  { contract: FREDDIE },
  { contract: [MONSTERS, FREDDIE] },
  { address: SENDER },
  {},
  { event_type: "print_event" },
  { type: "contract", contractId: FREDDIE },
  { topic: "blocks" },
];

/** Whether a logged change is for a filter, as docs/protocol.md "Filters" says (the fields used here). */
function wants(filter, change) {
  if (filter.topic === "blocks") return change.block;
  if (change.block) return false;
  const any = (value, actual) => (Array.isArray(value) ? value : [value]).includes(actual);
  if (filter.type === "contract") return change.contract_id === filter.contractId;
  if (filter.contract !== undefined && !any(filter.contract, change.contract_id)) return false;
  if (filter.address !== undefined && !(change.affected_addresses ?? []).includes(filter.address)) return false;
  if (filter.event_type !== undefined && !any(filter.event_type, change.event_type)) return false;
  return true;
}

/** An asynchronous storage: each get and set lands 0-15 ms later, in the order they were asked. */
function slowStorage(rng) {
  const values = new Map();
  let queue = Promise.resolve();
  const later = (work) => {
    const delay = rng.int(0, 15);
    const done = queue.then(() => sleep(delay)).then(work);
    queue = done.catch(() => {});
    return done;
  };
  return {
    get: (key) => later(() => values.get(key) ?? null),
    set: (key, value) => later(() => { values.set(key, value); }),
  };
}

async function control(path, body) {
  const response = await fetch(CONTROL + path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}),
  });
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  return response.json();
}

test(`model: seed ${SEED}, ${STEPS} steps`, { timeout: 600_000 }, async () => {
  const rng = prng(SEED);
  const trace = [];
  const note = (line) => trace.push(line);
  const fail = (message) => assert.fail(`MODEL_SEED=${SEED} MODEL_STEPS=${STEPS}: ${message}\ntrace:\n${trace.join("\n")}`);

  // ---- the reference change log ----
  const log = new Map(); // cursor -> { kind, block, contract_id, affected_addresses, event_type }
  let last = await head();
  const startHead = last;
  const heights = new Map(); // synthetic height -> { contract, events, applied }
  let nextHeight = 1000;
  let nextNft = 1;

  async function post(request, what) {
    const answer = await control("/deliver", request);
    if (answer.status !== 200) fail(`${what}: webhook answered ${answer.status} ${JSON.stringify(answer.body)}`);
    const top = answer.body.cursor;
    if (top === null) {
      note(`${what}: nothing changed`);
      return;
    }
    if (top <= last) fail(`${what}: cursor ${top} not above ${last}`);
    const rows = await history({ after: String(last), include_rolled_back: "true" });
    const rolledBack = request.rollback === true;
    for (let cursor = last + 1; cursor <= top; cursor++) log.set(cursor, { kind: rolledBack ? "block_rollback" : "block", block: true });
    for (const row of rows) {
      if (row.cursor > top) fail(`${what}: history has cursor ${row.cursor} beyond the delivery's ${top}`);
      log.set(row.cursor, {
        kind: row.canonical ? "event" : "rollback", block: false, contract_id: row.contract_id,
        affected_addresses: row.affected_addresses, event_type: row.event_type,
      });
    }
    note(`${what}: cursors ${last + 1}..${top} (${rows.length} event changes)`);
    last = top;
  }

  // ---- clients and subscriptions ----
  // Shared: a reload resumes from it. Synchronous (memory, localStorage) or asynchronous (IndexedDB, a
  // server-side store): here a map whose reads and writes land a few ms later.
  const asyncStorage = rng.chance(0.5);
  // Its delays draw from a generator of their own: how many writes there are depends on timing, and the
  // steps must be the same for a seed whatever the timing.
  const storage = asyncStorage ? slowStorage(prng(SEED ^ 0x5eed)) : memoryStorage();
  note(`storage: ${asyncStorage ? "asynchronous" : "memory"}`);
  const clients = []; // { id, client, batch, transport, subs: [logical] }
  const subs = []; // logical subscriptions: { name, filter, since, start, seen: [[kind, cursor]], stall, clientId }
  const errors = [];
  let clientSeq = 0;
  let subSeq = 0;

  function open(batch, transport, id = clientSeq++) {
    const client = createClient({
      url: URL_, storage, backoffInitialMs: 30, backoffMaxMs: 300, batch, transports: [transport],
      onError: (error) => errors.push(`client ${id}: ${error.message}`),
    });
    return { id, client, batch, transport, subs: [] };
  }

  const handlerOf = (logical) => (kind, change) => {
    logical.seen.push([kind, change.cursor]);
    if (logical.stall > 0) { // a slow handler: the event loop does nothing else meanwhile
      logical.stall--;
      const until_ = Date.now() + logical.stallMs;
      while (Date.now() < until_);
    }
  };

  async function subscribeOn(entry, logical) {
    const subscription = await entry.client.subscribe(logical.filter, handlerOf(logical),
      { key: logical.name, since: logical.since });
    logical.subscription = subscription;
    return subscription;
  }

  // ---- steps ----
  const actions = [
    [30, "deliver"], [5, "nft"], [10, "rollback"], [8, "reapply"], [3, "duplicate"], [8, "disconnect"],
    [6, "resync"], [12, "subscribe"], [6, "reload"], [4, "client"], [5, "stall"], [5, "busy"], [4, "pause"],
    [4, "burst"],
  ];
  const total = actions.reduce((sum, [weight]) => sum + weight, 0);
  const choose = () => {
    let roll = rng.next() * total;
    for (const [weight, name] of actions) if ((roll -= weight) < 0) return name;
    return "deliver";
  };

  async function deliverNew() {
    const height = nextHeight++;
    const contract = rng.pick([MONSTERS, MONSTERS, FREDDIE]);
    const events = rng.int(1, 3);
    heights.set(height, { contract, events, applied: true });
    await post({ kind: "synthetic", height, events, contract }, `apply ${height} (${events} of ${contract === MONSTERS ? "monsters" : "freddie"})`);
  }

  async function newSubscription(entry) {
    const filter = rng.pick(FILTERS);
    const now = await head();
    const since = rng.pick([0, "now", "past"]) === "past" ? rng.int(0, now) : rng.pick([0, "now"]);
    const logical = { name: `s${subSeq++}`, filter, since, start: null, seen: [], stall: 0, stallMs: 0, clientId: entry.id };
    const subscription = await subscribeOn(entry, logical);
    logical.start = since === "now" ? subscription.ackCursor : since;
    if (typeof logical.start !== "number") fail(`${logical.name}: no start (ack ${subscription.ackCursor})`);
    entry.subs.push(logical);
    subs.push(logical);
    note(`subscribe ${logical.name} on client ${entry.id} ${JSON.stringify(filter)} since ${since} -> start ${logical.start}`);
  }

  clients.push(open(true, "websocket"));
  clients.push(open(false, "polling"));
  for (const entry of clients) await newSubscription(entry);

  for (let step = 0; step < STEPS; step++) {
    const action = choose();
    switch (action) {
      case "deliver":
        await deliverNew();
        break;
      case "nft": {
        const number = nextNft++;
        await post({ kind: "nft", number }, `nft ${number}`);
        break;
      }
      case "rollback": {
        const applied = [...heights].filter(([, h]) => h.applied);
        if (applied.length === 0) { await deliverNew(); break; }
        const [height, h] = rng.pick(applied);
        h.applied = false;
        await post({ kind: "synthetic", height, events: h.events, contract: h.contract, rollback: true }, `rollback ${height}`);
        break;
      }
      case "reapply": {
        const gone = [...heights].filter(([, h]) => !h.applied);
        if (gone.length === 0) { await deliverNew(); break; }
        const [height, h] = rng.pick(gone);
        h.applied = true;
        await post({ kind: "synthetic", height, events: h.events, contract: h.contract }, `reapply ${height}`);
        break;
      }
      case "duplicate": {
        const applied = [...heights].filter(([, h]) => h.applied);
        if (applied.length === 0) { await deliverNew(); break; }
        const [height, h] = rng.pick(applied);
        await post({ kind: "synthetic", height, events: h.events, contract: h.contract }, `duplicate ${height}`);
        break;
      }
      case "burst": { // deliveries back to back, while the clients are still taking the previous ones
        const count = rng.int(2, 5);
        for (let i = 0; i < count; i++) await deliverNew();
        break;
      }
      case "disconnect":
        note(`disconnect: ${JSON.stringify(await control("/disconnect"))}`);
        break;
      case "resync":
        note(`resync: ${JSON.stringify(await control("/resync"))}`);
        break;
      case "subscribe": {
        const entry = rng.pick(clients);
        if (entry.subs.length >= 6) break;
        await newSubscription(entry);
        break;
      }
      case "client": {
        if (clients.length >= 4) break;
        const entry = open(rng.chance(0.5), rng.pick(["websocket", "polling"]));
        clients.push(entry);
        note(`client ${entry.id}: batch ${entry.batch}, ${entry.transport}`);
        await newSubscription(entry);
        break;
      }
      case "reload": { // a clean close, then a new client with the same storage and keys
        const index = rng.int(0, clients.length - 1);
        const old = clients[index];
        await old.client.close(); // clean: its cursors are stored before the new client reads them
        const fresh = open(rng.chance(0.5), rng.pick(["websocket", "polling"]), old.id);
        fresh.subs = old.subs;
        clients[index] = fresh;
        note(`reload client ${old.id}: batch ${fresh.batch}, ${fresh.transport}, ${fresh.subs.map((s) => s.name)}`);
        for (const logical of fresh.subs) await subscribeOn(fresh, logical);
        break;
      }
      case "stall": { // a slow handler for its next few changes
        const logical = rng.pick(subs);
        logical.stall = rng.int(1, 5);
        logical.stallMs = rng.int(20, 200);
        note(`stall ${logical.name}: ${logical.stall} x ${logical.stallMs} ms`);
        break;
      }
      case "busy": { // the whole process stalls (the event loop blocked) while the server keeps sending
        const ms = rng.int(50, 400);
        note(`busy ${ms} ms`);
        const end = Date.now() + ms;
        while (Date.now() < end);
        break;
      }
      case "pause": {
        const ms = rng.int(0, 300);
        note(`pause ${ms} ms`);
        await sleep(ms);
        break;
      }
      default:
        fail(`unknown action ${action}`);
    }
    if (rng.chance(0.3)) await sleep(rng.int(0, 60));
  }

  // ---- the check ----
  note(`end: log ${startHead + 1}..${last}`);
  const expectedOf = (logical) => {
    const out = [];
    for (let cursor = logical.start + 1; cursor <= last; cursor++) {
      const change = log.get(cursor);
      if (change === undefined) fail(`cursor ${cursor} missing from the model`);
      if (wants(logical.filter, change)) out.push([change.kind, cursor]);
    }
    return out;
  };
  try {
    await until(() => subs.every((logical) => logical.seen.length >= expectedOf(logical).length),
      () => subs.map((s) => `${s.name}: ${s.seen.length}/${expectedOf(s).length}`).join(", "), 30_000);
  } catch (error) {
    // fall through to the exact comparison, which says what is missing
  }
  await sleep(500); // a repeat would come now
  for (const logical of subs) {
    const expected = expectedOf(logical);
    const seen = logical.seen;
    const cursors = seen.map(([, cursor]) => cursor);
    for (let i = 1; i < cursors.length; i++) {
      if (cursors[i] <= cursors[i - 1]) fail(`${logical.name} ${JSON.stringify(logical.filter)}: cursor ${cursors[i]} after ${cursors[i - 1]}`);
    }
    const want = new Set(expected.map(([, cursor]) => cursor));
    const got = new Set(cursors);
    const missing = [...want].filter((cursor) => !got.has(cursor));
    const extra = [...got].filter((cursor) => !want.has(cursor));
    if (missing.length || extra.length) {
      fail(`${logical.name} ${JSON.stringify(logical.filter)} since ${logical.since} (start ${logical.start}): ` +
        `missing ${missing}, extra ${extra}`);
    }
    try {
      assert.deepEqual(seen, expected);
    } catch {
      fail(`${logical.name}: kinds differ: ${JSON.stringify(seen)} vs ${JSON.stringify(expected)}`);
    }
  }
  await Promise.all(clients.map((entry) => entry.client.close()));
  const handlerErrors = errors.filter((message) => !/connect|xhr|websocket|timeout|transport/i.test(message));
  if (handlerErrors.length) fail(`errors: ${handlerErrors.join("; ")}`);
  const total_ = subs.reduce((sum, logical) => sum + logical.seen.length, 0);
  console.log(`model seed ${SEED}: ${STEPS} steps, ${last - startHead} changes, ${subs.length} subscriptions, ` +
    `${total_} deliveries to handlers, ${errors.length} connection errors`);
});
