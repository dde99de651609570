// Drives the browser client (the npm package's bundle, downloaded from the running service); run it with
// node --experimental-websocket: the browser bundle uses the WebSocket global, which Node 20 hides.
// Usage: node helper-client.mjs HELPER_PATH URL FILTER_JSON SINCE EXPECTED_COUNT
// Prints {"kind": "ready"} once subscribed, one JSON line per change handed to the application, then
// {"kind": "stored", "cursor"}: the cursor its storage holds after the last one.
const [helperPath, url, filterJson, since, expected] = process.argv.slice(2);
const { createClient } = await import(helperPath);
const values = new Map();
const storage = { get: (k) => (values.has(k) ? values.get(k) : null), set: (k, v) => { values.set(k, v); } };
const print = (line) => console.log(JSON.stringify(line));
let count = 0;
const client = createClient({
  url, storage, transports: ["websocket"], backoffInitialMs: 50, backoffMaxMs: 500,
  onError: (error) => print({ kind: "error", message: String(error) }),
});
const failAfter = setTimeout(() => { print({ kind: "timeout", count }); process.exit(2); }, 45000);
client.onStateChange((state) => { if (state === "connected") print({ kind: "connected" }); });
await client.subscribe(JSON.parse(filterJson), (kind, change) => {
  print({ kind, cursor: change.cursor, event_type: change.event_type });
  count += 1;
  if (count !== Number(expected)) return;
  clearTimeout(failAfter);
  // The client stores a cursor once its handler has run (writes coalesced): read it after this one.
  setTimeout(() => {
    print({ kind: "stored", cursor: values.get(`timebank-realtime:${filterJson}`) });
    client.close();
    process.exit(0);
  }, 300);
}, { since: since === "now" ? "now" : Number(since), key: filterJson });
print({ kind: "ready" });
