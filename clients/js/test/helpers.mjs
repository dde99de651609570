// What the package's tests share: the harness's control plane (tests/client_harness.py), the history
// API, and recording what a handler was given. The server, the database and the sockets are real.
import assert from "node:assert/strict";

import { createClient, memoryStorage } from "../dist/index.js";

export const URL_ = process.env.TIMEBANK_URL;
export const CONTROL = process.env.TIMEBANK_CONTROL_URL;
if (!URL_ || !CONTROL) throw new Error("run these tests through tests/test_js_package.py: TIMEBANK_URL and TIMEBANK_CONTROL_URL");

export const MONSTERS = "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters";
export const FREDDIE = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-freddie-v1-1";
/** The sender of every synthetic transaction (tests/payloads.py), so an affected address of its events. */
export const SENDER = "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2";

async function post(path, body) {
  const response = await fetch(CONTROL + path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}),
  });
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  return response.json();
}

/** Posts one synthetic block (one transaction, `events` print events of `contract`); answers its tx hash. */
export async function deliver(height, { events = 2, contract = MONSTERS, rollback = false, success = true } = {}) {
  const answer = await post("/deliver", { kind: "synthetic", height, events, contract, rollback, success });
  assert.equal(answer.status, 200, JSON.stringify(answer));
  return answer.tx_hash;
}

/** The hash a synthetic block's transaction has (tests/payloads.py), before it is delivered. */
export const txHashOf = (height) => `0x${height.toString(16).padStart(62, "0")}aa`;

export const disconnectAll = () => post("/disconnect");
export const resyncAll = () => post("/resync");

export async function head() {
  return (await (await fetch(CONTROL + "/head")).json()).cursor;
}

/** Every stored event matching `params` (the history API), in cursor order, all pages. */
export async function history(params = {}) {
  const rows = [];
  for (let after = params.after ?? 0; after !== null;) {
    const query = new URLSearchParams({ ...params, after: String(after), limit: "1000" });
    const page = await (await fetch(`${URL_}/api/events?${query}`)).json();
    assert.ok(Array.isArray(page.events), JSON.stringify(page));
    rows.push(...page.events);
    after = page.next;
  }
  return rows;
}

/** A handler that records what it is given. */
export function recorder() {
  const seen = [];
  const handler = (kind, change) => seen.push({ kind, cursor: change.cursor, change });
  return { seen, handler, cursors: () => seen.map((entry) => entry.cursor) };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for `check()` to hold, for at most `ms`; fails with `what` (called for the message) otherwise. */
export async function until(check, what = () => "condition", ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`not met within ${ms} ms: ${typeof what === "function" ? what() : what}`);
    await sleep(20);
  }
}

export function assertOnceInOrder(cursors, label = "") {
  for (let i = 1; i < cursors.length; i++) {
    assert.ok(cursors[i] > cursors[i - 1], `${label} cursor ${cursors[i]} after ${cursors[i - 1]}: ${cursors}`);
  }
}

/** A client with quick reconnects and a memory storage, closed when the test ends; errors are kept. */
export function openClient(t, options = {}) {
  const errors = [];
  const states = [];
  const client = createClient({
    url: URL_, storage: memoryStorage(), backoffInitialMs: 50, backoffMaxMs: 400,
    transports: [process.env.TIMEBANK_TRANSPORT ?? "websocket"],
    onError: (error) => errors.push(error), ...options,
  });
  client.onStateChange((state) => states.push(state));
  t.after(() => client.close());
  return { client, errors, states };
}

/** Waits until a recorder holds as many changes as `expected` lists, then a little more, and compares. */
export async function assertSameCursors(record, expected, label) {
  await until(() => record.seen.length >= expected.length,
    () => `${label}: ${record.seen.length} of ${expected.length} changes: ${record.cursors()} vs ${expected}`);
  await sleep(300); // anything more (a repeat) would come now
  assert.deepEqual(record.cursors(), expected, label);
}
