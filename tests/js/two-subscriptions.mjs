// Drives the browser helper with two overlapping subscriptions on one socket, both replaying.
// Usage: node two-subscriptions.mjs HELPER_PATH URL FILTER_A FILTER_B EXPECTED_A EXPECTED_B
// Prints one JSON line per change handed to the application: {"sub": "a"|"b", "cursor"}.
import { io } from "socket.io-client";

const [helperPath, url, filterA, filterB, expectedA, expectedB] = process.argv.slice(2);
const { createTimebankClient } = await import(helperPath);
const values = new Map();
const storage = { getItem: (k) => (values.has(k) ? values.get(k) : null), setItem: (k, v) => values.set(k, v) };
const print = (line) => console.log(JSON.stringify(line));
const counts = { a: 0, b: 0 };
const expected = { a: Number(expectedA), b: Number(expectedB) };
const client = createTimebankClient({ io, url, storage, transports: ["websocket"], onError: (e) => print({ error: String(e) }) });
const failAfter = setTimeout(() => { print({ timeout: counts }); process.exit(2); }, 45000);
const handler = (sub) => (kind, change) => {
  print({ sub, cursor: change.cursor });
  counts[sub] += 1;
  if (counts.a === expected.a && counts.b === expected.b) {
    clearTimeout(failAfter);
    setTimeout(() => { client.close(); process.exit(0); }, 500);
  }
};
await new Promise((resolve) => client.socket.once("connect", resolve));
await Promise.all([
  client.subscribe(JSON.parse(filterA), handler("a"), { since: 0, key: "a" }),
  client.subscribe(JSON.parse(filterB), handler("b"), { since: 0, key: "b" }),
]);
