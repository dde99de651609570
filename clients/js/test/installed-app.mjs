// Run by tests/test_js_package.py from a directory where only the packed tarball is installed: what an
// application does with the package, imported by its name (or the browser bundle, by its path).
// Usage: node main.mjs CONTRACT HEIGHT [MODULE]. Prints what it received as one JSON line.
const [contract, height, specifier = "timebank-realtime-client"] = process.argv.slice(2);
const { createClient, memoryStorage } = await import(specifier);

const [url, control] = [process.env.TIMEBANK_URL, process.env.TIMEBANK_CONTROL_URL];
const client = createClient({ url, storage: memoryStorage(), transports: ["websocket"],
  onError: (error) => console.error(error) });
const received = [];
const stop = setTimeout(() => { console.error("timed out", JSON.stringify(received)); process.exit(2); }, 20000);
const subscription = await client.subscribe({ type: "contract", contractId: contract },
  (kind, change) => received.push([kind, change.cursor, change.tx_hash]));
const start = subscription.lastCursor; // the server's head when it took the subscription
const delivery = { kind: "synthetic", height: Number(height), events: 2, contract };
const answer = await (await fetch(control + "/deliver", {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(delivery) })).json();
while (received.length < 3) await new Promise((resolve) => setTimeout(resolve, 20));
clearTimeout(stop);
client.close();
console.log(JSON.stringify({ start, received, tx_hash: answer.tx_hash }));
