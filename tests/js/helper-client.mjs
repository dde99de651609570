// Drives the browser helper (downloaded from the running service) with the official socket.io-client.
// Usage: node helper-client.mjs HELPER_PATH URL FILTER_JSON SINCE EXPECTED_COUNT
// Prints {"kind": "ready"} once subscribed, then one JSON line per change handed to the application.
import { io } from "socket.io-client";

const [helperPath, url, filterJson, since, expected] = process.argv.slice(2);
const { createTimebankClient } = await import(helperPath);
const values = new Map();
const storage = { getItem: (k) => (values.has(k) ? values.get(k) : null), setItem: (k, v) => values.set(k, v) };
const print = (line) => console.log(JSON.stringify(line));
let count = 0;
const client = createTimebankClient({
  io, url, storage, transports: ["websocket"], backoffInitialMs: 50, backoffMaxMs: 500,
  onError: (error) => print({ kind: "error", message: String(error) }),
});
const failAfter = setTimeout(() => { print({ kind: "timeout", count }); process.exit(2); }, 45000);
client.socket.on("connect", () => print({ kind: "connected" }));
await new Promise((resolve) => client.socket.once("connect", resolve));
await client.subscribe(JSON.parse(filterJson), (kind, change) => {
  print({ kind, cursor: change.cursor, event_type: change.event_type, stored: values.get(`timebank-realtime:${filterJson}`) });
  count += 1;
  if (count === Number(expected)) { clearTimeout(failAfter); setTimeout(() => { client.close(); process.exit(0); }, 300); }
}, { since: since === "now" ? "now" : Number(since) });
print({ kind: "ready" });
