// Drives the served browser client (node --experimental-websocket) through a reconnect whose resubscriptions the server rate-limits.
// Usage: node resubscribe.mjs HELPER_PATH URL CONTRACT EXPECTED_ALL EXPECTED_CONTRACT
// Prints JSON lines: {"subscribed": true} once both are acked, {"sub": "all"|"contract", "cursor"}
// per change handed to the application, {"resubscribed": true} once both are acked again after a
// reconnect, {"error": "..."} for anything handed to onError.
import { countUntil, memoryStorage, print } from "./counting.mjs";

const [helperPath, url, contract, expectedAll, expectedContract] = process.argv.slice(2);
const { createClient } = await import(helperPath);
const client = createClient({
  url, storage: memoryStorage(), transports: ["websocket"], backoffInitialMs: 50, backoffMaxMs: 200,
  onError: (e) => print({ error: String(e) }),
});
const handler = countUntil({ all: Number(expectedAll), contract: Number(expectedContract) }, 40000,
  () => client.close());
// The server allows one subscribe a second: the second waits for its turn here, but not on reconnect.
const all = await client.subscribe({}, handler("all"), { since: 0, key: "all" });
await new Promise((resolve) => setTimeout(resolve, 1100));
const mine = await client.subscribe({ contract }, handler("contract"), { since: 0, key: "contract" });
print({ subscribed: true });
let connects = 0;
client.onStateChange((state) => { if (state === "connected") connects += 1; });
const watch = setInterval(() => {
  if (connects > 0 && all.ackCursor !== null && mine.ackCursor !== null) {
    clearInterval(watch);
    print({ resubscribed: true });
  }
}, 20);
