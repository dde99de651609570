// The cursor storages. memoryStorage and localStorageStorage are tested for real: the latter over a
// small Web Storage object (Node has no localStorage), through a client against the real server.
// Node has no IndexedDB: here only indexedDbStorage's refusal is tested; tests/test_js_package_browser.py
// tests it (and localStorage, the default) in Chromium.
import assert from "node:assert/strict";
import { test } from "node:test";

import { indexedDbStorage, localStorageStorage, memoryStorage } from "../dist/index.js";
import { CursorWriter } from "../dist/storage.js";
import { assertSameCursors, deliver, history, MONSTERS, openClient, recorder, sleep, until } from "./helpers.mjs";

/** The Web Storage interface (what window.localStorage is), in memory. */
class WebStorage {
  #items = new Map();
  get length() { return this.#items.size; }
  key(index) { return [...this.#items.keys()][index] ?? null; }
  getItem(key) { return this.#items.has(key) ? this.#items.get(key) : null; }
  setItem(key, value) { this.#items.set(key, String(value)); }
  removeItem(key) { this.#items.delete(key); }
  clear() { this.#items.clear(); }
}

test("memoryStorage keeps what it is given, and nothing else", async () => {
  const storage = memoryStorage();
  assert.equal(await storage.get("a"), null);
  await storage.set("a", "12");
  assert.equal(await storage.get("a"), "12");
  assert.equal(await storage.get("b"), null);
  assert.equal(await memoryStorage().get("a"), null); // each its own
});

test("localStorageStorage reads and writes the Storage it is given", async () => {
  const web = new WebStorage();
  const storage = localStorageStorage(web);
  assert.equal(await storage.get("timebank-realtime:wallet"), null);
  await storage.set("timebank-realtime:wallet", "41");
  assert.equal(web.getItem("timebank-realtime:wallet"), "41");
  web.setItem("timebank-realtime:other", "7");
  assert.equal(await storage.get("timebank-realtime:other"), "7");
  // Without a Storage and without globalThis.localStorage (Node) it says so instead of failing later.
  assert.throws(() => localStorageStorage(), TypeError);
});

test("indexedDbStorage refuses where there is no IndexedDB", () => {
  assert.throws(() => indexedDbStorage({ name: "x" }), /no IndexedDB/);
});

test("the cursor writer never lets an older write land after a newer one", async () => {
  const landed = [];
  const slowThenFast = {
    get: () => null,
    // Early writes are slow, later ones fast: without one write at a time per key, "1" would land last.
    set: (key, value) => new Promise((resolve) => setTimeout(() => { landed.push([key, value]); resolve(); },
      Number(value) < 3 ? 30 : 1)),
  };
  const errors = [];
  const writer = new CursorWriter(slowThenFast, (error) => errors.push(error));
  for (let cursor = 1; cursor <= 20; cursor++) writer.write(cursor % 2 ? "odd" : "even", String(cursor));
  await sleep(200);
  for (const key of ["odd", "even"]) {
    const values = landed.filter(([k]) => k === key).map(([, v]) => Number(v));
    assert.deepEqual(values, [...values].sort((a, b) => a - b), `${key}: ${values}`);
    assert.equal(values.at(-1), key === "odd" ? 19 : 20);
  }
  assert.deepEqual(errors, []);
});

test("a client keeps each subscription's cursor in localStorage, after its handler ran", async (t) => {
  const web = new WebStorage();
  const storage = localStorageStorage(web);
  await deliver(1);
  const first = openClient(t, { storage, storagePrefix: "app" });
  const stored = [];
  // At least once: when the handler runs, the storage does not hold this change's cursor yet.
  const record = recorder();
  const handler = (kind, change) => {
    stored.push([change.cursor, web.getItem("app:wallet")]);
    record.handler(kind, change);
  };
  await first.client.subscribe({ contract: MONSTERS }, handler, { key: "wallet", since: 0 });
  await deliver(2);
  const cursors = (await history({ contract: MONSTERS })).map((row) => row.cursor);
  await assertSameCursors(record, cursors, "first");
  await sleep(50);
  assert.equal(web.getItem("app:wallet"), String(cursors.at(-1)));
  assert.ok(stored.every(([cursor, before]) => before === null || Number(before) < cursor), JSON.stringify(stored));
  first.client.close();

  // A handler that throws is reported, and its change counts as delivered (not handed over again).
  await deliver(3);
  const second = openClient(t, { storage, storagePrefix: "app" });
  const resumed = recorder();
  await second.client.subscribe({ contract: MONSTERS }, (kind, change) => {
    resumed.handler(kind, change);
    throw new Error(`handler failed at ${change.cursor}`);
  }, { key: "wallet", since: 0 });
  const now = (await history({ contract: MONSTERS })).map((row) => row.cursor);
  await assertSameCursors(resumed, now.filter((cursor) => cursor > cursors.at(-1)), "after the reload");
  await sleep(50);
  assert.equal(web.getItem("app:wallet"), String(now.at(-1)));
  assert.deepEqual(second.errors.map((error) => error.message), resumed.cursors().map((c) => `handler failed at ${c}`));
});

// Found by test/model.test.mjs (seed 2026): close() did not wait for the cursor writes still queued for
// an asynchronous storage, so a client opened right after it on the same storage read an older cursor
// and handed the same changes over again after a clean close. close() now answers a promise that
// resolves once every cursor the client handed over is stored.
test("a clean close of a client with an asynchronous storage, then a new one: each change once", async (t) => {
  const values = new Map();
  const slow = { // each write lands 40 ms later, one after another
    get: async (key) => values.get(key) ?? null,
    set: (key, value) => new Promise((resolve) => setTimeout(() => { values.set(key, value); resolve(); }, 40)),
  };
  for (let height = 1; height <= 3; height++) await deliver(height, { events: 3 });
  const cursors = (await history({ contract: MONSTERS })).map((row) => row.cursor);
  const first = openClient(t, { storage: slow });
  const before = recorder();
  await first.client.subscribe({ contract: MONSTERS }, before.handler, { key: "wallet", since: 0 });
  await until(() => before.seen.length >= cursors.length, () => `first client: ${before.cursors()}`);
  const closed = first.client.close(); // the last cursor's write is still queued (40 ms each)
  assert.notEqual(values.get("timebank-realtime:wallet"), String(cursors.at(-1)));
  assert.deepEqual(before.cursors(), cursors);
  assert.ok(closed instanceof Promise, "close() answers a promise");
  await closed;
  assert.equal(values.get("timebank-realtime:wallet"), String(cursors.at(-1)));
  assert.equal(first.client.state, "closed");
  await first.client.close(); // again: resolves at once

  await deliver(4);
  const second = openClient(t, { storage: slow });
  const after = recorder();
  await second.client.subscribe({ contract: MONSTERS }, after.handler, { key: "wallet", since: 0 });
  const now = (await history({ contract: MONSTERS })).map((row) => row.cursor);
  await assertSameCursors(after, now.filter((cursor) => cursor > cursors.at(-1)), "after a clean close");
  assert.deepEqual([...first.errors, ...second.errors], []);
});
