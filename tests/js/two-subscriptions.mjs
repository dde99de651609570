// Drives the served browser client (node --experimental-websocket) with two overlapping subscriptions on one socket, both replaying.
// Usage: node two-subscriptions.mjs HELPER_PATH URL FILTER_A FILTER_B EXPECTED_A EXPECTED_B
// Prints one JSON line per change handed to the application: {"sub": "a"|"b", "cursor"}.
import { countUntil, memoryStorage, print } from "./counting.mjs";

const [helperPath, url, filterA, filterB, expectedA, expectedB] = process.argv.slice(2);
const { createClient } = await import(helperPath);
const client = createClient({
  url, storage: memoryStorage(), transports: ["websocket"], onError: (e) => print({ error: String(e) }),
});
const handler = countUntil({ a: Number(expectedA), b: Number(expectedB) }, 45000, () => client.close());
await Promise.all([
  client.subscribe(JSON.parse(filterA), handler("a"), { since: 0, key: "a" }),
  client.subscribe(JSON.parse(filterB), handler("b"), { since: 0, key: "b" }),
]);
