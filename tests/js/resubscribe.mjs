// Drives the browser helper through a reconnect whose resubscriptions the server rate-limits.
// Usage: node resubscribe.mjs HELPER_PATH URL CONTRACT EXPECTED_ALL EXPECTED_CONTRACT
// Prints JSON lines: {"subscribed": true} once both are acked, {"sub": "all"|"contract", "cursor"}
// per change handed to the application, {"resubscribed": true} once both are acked again after a
// reconnect, {"error": "..."} for anything handed to onError.
import { io } from "socket.io-client";

const [helperPath, url, contract, expectedAll, expectedContract] = process.argv.slice(2);
const { createTimebankClient } = await import(helperPath);
const values = new Map();
const storage = { getItem: (k) => (values.has(k) ? values.get(k) : null), setItem: (k, v) => values.set(k, v) };
const print = (line) => console.log(JSON.stringify(line));
const counts = { all: 0, contract: 0 };
const expected = { all: Number(expectedAll), contract: Number(expectedContract) };
const client = createTimebankClient({
  io, url, storage, transports: ["websocket"], backoffInitialMs: 50, backoffMaxMs: 200,
  onError: (e) => print({ error: String(e) }),
});
const failAfter = setTimeout(() => { print({ timeout: counts }); process.exit(2); }, 40000);
const handler = (sub) => (kind, change) => {
  print({ sub, cursor: change.cursor });
  counts[sub] += 1;
  if (counts.all === expected.all && counts.contract === expected.contract) {
    clearTimeout(failAfter);
    setTimeout(() => { client.close(); process.exit(0); }, 500);
  }
};
await new Promise((resolve) => client.socket.once("connect", resolve));
// The server allows one subscribe a second: the second waits for its turn here, but not on reconnect.
const all = await client.subscribe({}, handler("all"), { since: 0, key: "all" });
await new Promise((resolve) => setTimeout(resolve, 1100));
const mine = await client.subscribe({ contract }, handler("contract"), { since: 0, key: "contract" });
print({ subscribed: true });
let connects = 0;
client.socket.on("connect", () => { connects += 1; });
const watch = setInterval(() => {
  if (connects > 0 && all.serverId !== null && mine.serverId !== null) {
    clearInterval(watch);
    print({ resubscribed: true });
  }
}, 20);
