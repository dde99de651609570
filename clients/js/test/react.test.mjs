// The React entry against the real server: hooks rendered with react-test-renderer (no DOM) on a
// concurrent root, as React 18's createRoot renders, deliveries posted through the test control plane
// (tests/client_harness.py). Run by tests/test_js_react.py, which starts both and sets TIMEBANK_URL and
// TIMEBANK_CONTROL_URL; `npm run build` first (the package imports itself, through its exports map).

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { readFile } from "node:fs/promises";

import { transform } from "esbuild";
import React from "react";
import TestRenderer from "react-test-renderer";
import { createClient, memoryStorage } from "timebank-realtime-client";
import {
  TimebankProvider,
  useContractEvents,
  useOptimistic,
  useRealtimeEvents,
  useTimebankClient,
  useTransaction,
  useUserEvents,
} from "timebank-realtime-client/react";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act } = TestRenderer;
// Changes from the live server render whenever the network brings them: every wait below is inside act,
// but one can land between two waits. React's warning about it says nothing about the hooks: drop it.
const consoleError = console.error;
console.error = (...args) => {
  if (typeof args[0] === "string" && args[0].includes("not wrapped in act(")) return;
  consoleError(...args);
};
// Under ./strict-effects.mjs every tree is rendered in <StrictMode> and each effect run is set up twice.
const STRICT = globalThis.TIMEBANK_STRICT_EFFECTS === true;
const h = React.createElement;

const SERVICE = process.env.TIMEBANK_URL;
const CONTROL = process.env.TIMEBANK_CONTROL_URL;
assert.ok(SERVICE && CONTROL, "TIMEBANK_URL and TIMEBANK_CONTROL_URL must be set (tests/test_js_react.py sets them)");

// The sender of every synthetic delivery (tests/payloads.py), so a {type: "user"} filter matches them all.
const SENDER = "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2";
// Each test its own contracts, so that its filters see only its own deliveries.
const contract = (name) => `ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.react-${name}`;
// The transaction of a synthetic delivery at `height` (tests/payloads.py).
const txHashAt = (height) => `0x${height.toString(16).padStart(62, "0")}aa`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function call(base, path, body) {
  const response = await fetch(base + path, body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  assert.equal(response.status, 200, `${path}: ${await response.clone().text()}`);
  return response.json();
}

/** One synthetic block at `height`: a contract call of `contractId` with `events` print events. */
async function deliver(height, contractId, { events = 1, rollback = false, success = true } = {}) {
  let answer;
  await act(async () => {
    answer = await call(CONTROL, "/deliver", { kind: "synthetic", height, events, contract: contractId, rollback, success });
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer;
}

const head = async () => (await call(CONTROL, "/head")).cursor;
const serverStatus = () => call(SERVICE, "/api/status");

/** The canonical stored events above `after` that any of the history queries match, ascending by cursor,
 * each once: what a list of those subscriptions must show. */
async function stored(after, queries) {
  const byId = new Map();
  for (const query of queries) {
    const { events } = await call(SERVICE, `/api/events?${new URLSearchParams({ ...query, after, limit: 500 })}`);
    for (const event of events) byId.set(event.id, event);
  }
  return [...byId.values()].sort((a, b) => a.cursor - b.cursor);
}

const idsAndCursors = (events) => events.map((event) => [event.id, event.cursor]);

/** Lets React and the network run until `predicate` holds (bounded: fails after `ms`). */
async function until(predicate, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    let holds = false;
    await act(async () => {
      holds = await predicate();
      if (!holds) await sleep(25);
    });
    if (holds) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
  }
}

/** Renders whatever `useHook(props)` answers into `seen` (every render, in order). */
function Probe({ useHook, hookProps, seen }) {
  seen.push(useHook(hookProps));
  return null;
}

let client;
beforeEach(() => {
  client = createClient({ url: SERVICE, transports: ["websocket"], storage: memoryStorage(),
    onError: (error) => console.error("client error:", error) });
});
afterEach(async () => {
  client.close();
  await until(async () => (await serverStatus()).sockets === 0, "the client's socket to close");
});

function tree(element) {
  return h(TimebankProvider, { client }, STRICT ? h(React.StrictMode, null, element) : element);
}

async function mount(element) {
  let renderer;
  await act(async () => {
    renderer = TestRenderer.create(tree(element), { unstable_isConcurrent: true });
  });
  return {
    update: (next) => act(async () => renderer.update(tree(next))),
    unmount: () => act(async () => renderer.unmount()),
    json: () => renderer.toJSON(),
  };
}

const latest = (seen) => seen[seen.length - 1];

test("two subscriptions: each canonical event once, in cursor order; a rollback removes it, a re-apply brings it back", async () => {
  const mine = contract("merge");
  const other = contract("merge-other");
  const start = await head();
  const expected = () => stored(start, [{ contract: mine }, { address: SENDER }]);
  const seen = [];
  const probe = await mount(h(Probe, { useHook: useRealtimeEvents, seen, hookProps: {
    since: start, subscriptions: [{ type: "contract", contractId: mine }, { type: "user", address: SENDER }] } }));

  await deliver(1001, mine, { events: 2 });
  await deliver(1002, other, { events: 1 });
  await deliver(1003, mine, { events: 1 });
  const all = await expected();
  assert.equal(all.length, 3 + 2 + 2, "each delivery is its contract call and its print events");
  await until(() => latest(seen).events.length >= all.length, "the three deliveries");
  assert.deepEqual(idsAndCursors(latest(seen).events), idsAndCursors(all));
  assert.equal(latest(seen).events.at(-1).contract_id, mine);
  assert.equal(latest(seen).error, null);
  assert.equal(latest(seen).state, "connected");
  for (const render of seen) {
    const cursors = render.events.map((event) => event.cursor);
    assert.deepEqual(cursors, [...cursors].sort((a, b) => a - b), "no render shows events out of order");
    assert.equal(new Set(render.events.map((event) => event.id)).size, render.events.length, "nor one twice");
  }

  const rolledBack = all.filter((event) => event.block_height === 1003).map((event) => event.id);
  await deliver(1003, mine, { events: 1, rollback: true });
  await until(() => latest(seen).events.length === all.length - 2, "the rollback");
  assert.deepEqual(idsAndCursors(latest(seen).events), idsAndCursors(all.slice(0, -2)));

  await deliver(1003, mine, { events: 1 });
  const reapplied = await expected();
  await until(() => latest(seen).events.length === all.length, "the re-apply");
  assert.deepEqual(idsAndCursors(latest(seen).events), idsAndCursors(reapplied));
  assert.deepEqual(latest(seen).events.slice(-2).map((event) => event.id), rolledBack, "the same rows, back");
  assert.ok(latest(seen).events.at(-1).cursor > all.at(-1).cursor, "at the cursor of their re-apply");
  await probe.unmount();
});

test("useContractEvents and useUserEvents show what their seed filters match; limit keeps the newest", async () => {
  const mine = contract("seed");
  const start = await head();
  const byContract = [];
  const byUser = [];
  const limited = [];
  const probes = await mount(h(React.Fragment, null,
    h(Probe, { seen: byContract, useHook: () => useContractEvents(mine, { since: start }) }),
    h(Probe, { seen: byUser, useHook: () => useUserEvents(SENDER, { since: start }) }),
    h(Probe, { seen: limited, useHook: () => useContractEvents(mine, { since: start, limit: 2 }) })));

  await deliver(1101, mine, { events: 3 });
  const expected = await stored(start, [{ contract: mine }]);
  assert.equal(expected.length, 4);
  await until(() => latest(byContract).events.length === 4 && latest(byUser).events.length === 4
    && latest(limited).events.at(-1)?.id === expected.at(-1).id, "the delivery, three times");
  assert.deepEqual(idsAndCursors(latest(byContract).events), idsAndCursors(expected));
  assert.deepEqual(idsAndCursors(latest(byUser).events), idsAndCursors(expected));
  assert.deepEqual(idsAndCursors(latest(limited).events), idsAndCursors(expected.slice(-2)));
  assert.ok(limited.every((render) => render.events.length <= 2), "never more than the limit");
  await probes.unmount();
});

test("unmount unsubscribes: the server drops the subscription and nothing renders after, while changes still flow", async () => {
  const mine = contract("unmount");
  const start = await head();
  const seen = [];
  const probe = await mount(h(Probe, { seen, useHook: useContractEvents, hookProps: mine }));
  // A subscription of the test's own on the same client: it proves the later changes do reach the client.
  const witnessed = [];
  const witness = await client.subscribe({ contract: mine }, (kind, change) => witnessed.push(change.cursor),
    { since: start, persist: false });
  await until(async () => (await serverStatus()).subscriptions === 2, "the hook's subscription and the witness's");

  await deliver(1201, mine);
  await until(() => latest(seen).events.length === 2, "the first delivery");
  await probe.unmount();
  const rendersAtUnmount = seen.length;
  await until(async () => (await serverStatus()).subscriptions === 1, "the hook's subscription to go");
  assert.equal((await serverStatus()).sockets, 1, "the client stays connected");

  await deliver(1202, mine);
  await until(() => witnessed.length === 4, "the second delivery, at the witness");
  await act(() => sleep(100));
  assert.equal(seen.length, rendersAtUnmount, "no render after unmount");
  await client.unsubscribe(witness);
});

test("filters are compared by value; another filter resubscribes and starts a new list", async () => {
  const first = contract("first");
  const second = contract("second");
  const start = await head();
  const seen = [];
  const render = (subscriptions) => h(Probe, { seen, useHook: useRealtimeEvents, hookProps: { since: start, subscriptions } });
  const probe = await mount(render([{ type: "contract", contractId: first }]));
  await deliver(1301, first);
  await until(() => latest(seen).events.length === 2, "the first contract's delivery");

  // A resubscription would start an empty list (its replay refills it later): an equal filter keeps it.
  let rendersBefore = seen.length;
  await probe.update(render([{ contractId: first, type: "contract" }]));
  await act(() => sleep(100));
  assert.ok(seen.length > rendersBefore);
  assert.ok(seen.slice(rendersBefore).every((r) => r.events.length === 2), "an equal filter in a new array keeps the list");
  assert.equal((await serverStatus()).subscriptions, 1);

  rendersBefore = seen.length;
  await probe.update(render([{ type: "contract", contractId: second }]));
  assert.equal(seen[rendersBefore].events.length, 0, "the first contract's events are never shown as the second's");
  await deliver(1302, first);
  await deliver(1303, second);
  const expected = await stored(start, [{ contract: second }]);
  await until(() => latest(seen).events.length === 2, "the second contract's delivery");
  await act(() => sleep(100));
  assert.deepEqual(idsAndCursors(latest(seen).events), idsAndCursors(expected));
  assert.equal((await serverStatus()).subscriptions, 1, "the first filter's subscription is gone");
  await probe.unmount();
});

test("the server dropping the socket: the list goes on after the reconnect, each event once", async () => {
  const mine = contract("dropped");
  const start = await head();
  const seen = [];
  const probe = await mount(h(Probe, { seen, useHook: useContractEvents, hookProps: mine }));
  await until(async () => (await serverStatus()).subscriptions === 1, "the subscription");
  await deliver(1701, mine);
  await until(() => latest(seen).events.length === 2, "the first delivery");
  const states = [];
  const stopListening = client.onStateChange((state) => states.push(state));
  await act(async () => { assert.equal((await call(CONTROL, "/disconnect", {})).dropped, 1); });
  await deliver(1702, mine, { events: 2 });  // while the client is away, or coming back
  await until(() => latest(seen).state === "connected" && latest(seen).events.length === 5, "the reconnect");
  await deliver(1703, mine);
  const expected = await stored(start, [{ contract: mine }]);
  await until(() => latest(seen).events.length === expected.length, "the delivery after the reconnect");
  assert.deepEqual(idsAndCursors(latest(seen).events), idsAndCursors(expected));
  // The link went down for real (a render of it is not sure: a quick reconnect can batch it away).
  assert.equal(states[0], "disconnected");
  stopListening();
  await probe.unmount();
});

test("with a key, a later mount resumes after what the earlier one showed", async () => {
  const mine = contract("keyed");
  const start = await head();
  const first = [];
  const hookProps = [mine, { key: "feed", since: start }];
  const useKeyed = ([contractId, options]) => useContractEvents(contractId, options);
  let probe = await mount(h(Probe, { seen: first, useHook: useKeyed, hookProps }));
  await deliver(1801, mine);
  await until(() => latest(first).events.length === 2, "the first delivery");
  await probe.unmount();
  await until(async () => (await serverStatus()).subscriptions === 0, "the unmount");

  await deliver(1802, mine);
  const second = [];
  probe = await mount(h(Probe, { seen: second, useHook: useKeyed, hookProps }));
  const expected = await stored(start, [{ contract: mine }]);
  await until(() => latest(second).events.length === 2, "the delivery made while unmounted");
  await act(() => sleep(100));
  assert.deepEqual(idsAndCursors(latest(second).events), idsAndCursors(expected.slice(2)),
    "only what the first mount had not shown: the stored cursor wins over since");
  await probe.unmount();
});

test("useTransaction: pending, then confirmed, failed or rolled_back", async () => {
  const mine = contract("tx");
  const confirmed = [];
  const failed = [];
  const none = [];
  const probes = await mount(h(React.Fragment, null,
    h(Probe, { seen: confirmed, useHook: useTransaction, hookProps: txHashAt(1401) }),
    h(Probe, { seen: failed, useHook: useTransaction, hookProps: txHashAt(1402) }),
    h(Probe, { seen: none, useHook: useTransaction, hookProps: null })));
  await until(async () => (await serverStatus()).subscriptions === 2, "the two watches");
  assert.equal(latest(confirmed).status, "pending");
  assert.equal(latest(failed).status, "pending");

  await deliver(1401, mine, { events: 2 });
  await deliver(1402, mine, { success: false });
  await until(() => latest(confirmed).status === "confirmed" && latest(failed).status === "failed", "the statuses");
  const [transaction] = await Promise.all([call(SERVICE, `/api/transactions/${txHashAt(1401)}`)]);
  assert.deepEqual(idsAndCursors(latest(confirmed).events), idsAndCursors(transaction.events));

  await deliver(1401, mine, { events: 2, rollback: true });
  await until(() => latest(confirmed).status === "rolled_back", "the rollback");
  assert.deepEqual(latest(confirmed).events, []);
  const statuses = (seen) => seen.map((render) => render.status).filter((status, i, all) => status !== all[i - 1]);
  assert.deepEqual(statuses(confirmed), ["pending", "confirmed", "rolled_back"]);
  assert.deepEqual(statuses(failed), ["pending", "failed"]);
  assert.deepEqual(statuses(none), [null]);
  await probes.unmount();
  await until(async () => (await serverStatus()).subscriptions === 0, "the watches to stop");
});

test("StrictMode: the double effect run neither doubles an event nor leaves a subscription behind",
  { skip: !STRICT && "run under --import ./test/strict-effects.mjs" }, async () => {
  let effectRuns = 0;
  function EffectCounter() {
    React.useEffect(() => { effectRuns += 1; }, []);
    return null;
  }
  const mine = contract("strict");
  const start = await head();
  const seen = [];
  const transaction = [];
  const probes = await mount(h(React.Fragment, null,
    h(EffectCounter),
    h(Probe, { seen, useHook: useRealtimeEvents, hookProps: { since: start,
      subscriptions: [{ type: "contract", contractId: mine }, { type: "user", address: SENDER }] } }),
    h(Probe, { seen: transaction, useHook: useTransaction, hookProps: txHashAt(1501) })));
  assert.equal(effectRuns, 2, "the effects ran twice (else this test proves nothing)");

  await deliver(1501, mine, { events: 2 });
  const expected = await stored(start, [{ contract: mine }, { address: SENDER }]);
  await until(() => latest(seen).events.length >= 3 && latest(transaction).status === "confirmed", "the delivery");
  assert.deepEqual(idsAndCursors(latest(seen).events), idsAndCursors(expected));
  await act(() => sleep(100));
  assert.equal((await serverStatus()).subscriptions, 3, "two filters and one watch, once each");
  await probes.unmount();
  await until(async () => (await serverStatus()).subscriptions === 0, "all three to go");
});

test("a refused subscription is the hook's error, with the server's code", async () => {
  const seen = [];
  const probe = await mount(h(Probe, { seen, useHook: useContractEvents, hookProps: "not-a-contract" }));
  await until(() => latest(seen).error !== null, "the refusal");
  assert.equal(latest(seen).error.code, "invalid_contract");
  assert.deepEqual(latest(seen).events, []);
  await probe.unmount();
});

test("useOptimistic holds the value while the transaction is pending and drops it when it confirms", async () => {
  const mine = contract("optimistic");
  const seen = [];
  let execute;
  function Optimistic() {
    const optimistic = useOptimistic();
    execute = optimistic.execute;
    seen.push([...optimistic.pending.entries()]);
    return null;
  }
  const probe = await mount(h(Optimistic));
  let release;
  const sent = new Promise((resolve) => { release = resolve; });
  let outcome;
  await act(async () => {
    outcome = execute("offer-7", { hours: 3 }, async () => { await sent; return txHashAt(1601); });
  });
  assert.deepEqual(latest(seen), [["offer-7", { hours: 3 }]]);
  release();
  await until(async () => (await serverStatus()).subscriptions === 1, "the transaction's watch");
  await deliver(1601, mine);
  assert.equal(await outcome, "confirmed");
  await until(() => latest(seen).length === 0, "the value to go");
  await probe.unmount();
});

test("useTimebankClient without a provider says what is missing", async () => {
  const errors = [];
  function Bare() {
    try {
      useTimebankClient();
    } catch (error) {
      errors.push(error.message);
    }
    return null;
  }
  await act(async () => { TestRenderer.create(h(Bare), { unstable_isConcurrent: true }); });
  assert.match(errors[0], /TimebankProvider/);
});

/** The `Activity.jsx` block of docs/js-client.md's React section, compiled as a bundler would, its
 * imports pointed at this package and this React (a data: module resolves no bare name). */
async function docsExample() {
  const docs = await readFile(new URL("../../../docs/js-client.md", import.meta.url), "utf8");
  const block = /```jsx\n(\/\/ Activity\.jsx\n[\s\S]*?)```/.exec(docs);
  assert.ok(block, "docs/js-client.md has the Activity.jsx example");
  const { code } = await transform(block[1], { loader: "jsx", jsx: "automatic", format: "esm" });
  const resolved = code.replace(/from "([^"]+)"/g, (_all, name) => `from "${import.meta.resolve(name)}"`);
  return import(`data:text/javascript,${encodeURIComponent(resolved)}`);
}

const textOf = (node) => (typeof node === "string" ? node : (node.children ?? []).map(textOf).join(""));
const findAll = (node, type) => (typeof node === "string" || node === null ? [] :
  [...(node.type === type ? [node] : []), ...(node.children ?? []).flatMap((child) => findAll(child, type))]);

test("the Activity example of docs/js-client.md shows its contract's and its user's events, newest first", async () => {
  const { Activity, TransferStatus } = await docsExample();
  const mine = contract("docs");
  const probe = await mount(h(React.Fragment, null,
    h(Activity, { contractId: mine, address: SENDER }),
    h(TransferStatus, { txHash: txHashAt(1901) }),
    h(TransferStatus, { txHash: null })));
  await deliver(1901, mine, { events: 2 });
  // since: 0, limit: 50: the newest 50 of everything stored for the contract or the user.
  const expected = (await stored(0, [{ contract: mine }, { address: SENDER }])).slice(-50).reverse()
    .map((event) => `#${event.cursor} ${event.event_type} ${event.tx_hash}`);
  const shown = () => findAll(probe.json()[0], "li").map(textOf);
  await until(() => shown()[0] === expected[0], "the delivery, at the top");
  assert.deepEqual(shown(), expected);
  assert.equal(textOf(findAll(probe.json()[0], "p")[0]), "connected");
  await until(() => textOf(probe.json()[1]) === "confirmed", "the transfer's confirmation");
  assert.equal(textOf(probe.json()[2]), "not sent");
  await probe.unmount();
});
