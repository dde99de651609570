// The load client: N socket.io-client connections, each subscribed with one of the given filters,
// then a workload POSTed to the server, counting every change that arrives and, per change, the time
// from the start of the POST that carried it to its arrival.
//
//   node bench/loadclient.mjs config.json
//
// config: {url, clients, batch, filters: [...] (cycled over the clients), connectConcurrency,
//          idle (hold the connections until stdin closes or says "close"),
//          localAddresses (optional: loopback source addresses the clients are spread over),
//          workload: {publishUrl, deliveries: file of [{body, keys}], mode: "burst" | "paced",
//                     intervalMs, warmup (untimed first deliveries), timeoutSeconds},
//          expectedPerFilter: [n, ...], latency (record latencies),
//          waitForGo (after "ready", wait for a "go" line on stdin before the workload)}
//          replay (filters carry "since": time from the first subscribe to the last chainhook:eose)
// Prints JSON lines: {"ready": ...} once every connection has subscribed, then {"result": ...}.
// Exits 1 if any connection fails, or if any expected change has not arrived by the timeout.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const sockets = [];
const counts = new Array(config.clients).fill(0);
const deliveries = config.workload ? JSON.parse(readFileSync(config.workload.deliveries, "utf8")) : [];
const deliveryOfKey = new Map();
deliveries.forEach((delivery, index) => delivery.keys.forEach((key) => deliveryOfKey.set(key, index)));
const postedAt = new Float64Array(deliveries.length);
const slowest = new Float64Array(deliveries.length);
const postMs = new Float64Array(deliveries.length);
const latencies = [];
let delivered = 0;
let firstPost = 0;
let lastArrival = 0;
let finished = null;
const expected = (config.expectedPerFilter ?? []).length
  ? counts.reduce((sum, _c, i) => sum + config.expectedPerFilter[i % config.filters.length], 0)
  : 0;

function arrived(client, change, now) {
  counts[client] += 1;
  delivered += 1;
  lastArrival = now;
  if (config.latency) {
    const index = deliveryOfKey.get(`${change.tx_hash}:${change.event_index}`);
    // The first deliveries warm both ends up (JIT, connection pools); they are not timed.
    if (index !== undefined && index >= (config.workload.warmup ?? 0)) {
      latencies.push(now - postedAt[index]);
      slowest[index] = Math.max(slowest[index], now - postedAt[index]);
    }
  }
  if (delivered === expected && finished) finished();
}

function connect(client) {
  return new Promise((resolve, reject) => {
    const socket = io(config.url, {
      transports: ["websocket"], reconnection: false, forceNew: true, timeout: 60000,
      auth: config.batch ? { batch: true } : {},
      // Loopback source addresses to spread over: one address has ~28k ephemeral ports per server port.
      ...(config.localAddresses?.length ? { localAddress: config.localAddresses[client % config.localAddresses.length] } : {}),
    });
    sockets.push(socket);
    socket.on("chainhook:event", (change) => arrived(client, change, performance.now()));
    socket.on("chainhook:rollback", (change) => arrived(client, change, performance.now()));
    socket.on("chainhook:batch", (frame) => {
      const now = performance.now();
      for (const change of frame.changes) arrived(client, change, now);
    });
    socket.on("connect_error", (error) => reject(new Error(`client ${client}: ${error.message}`)));
    socket.on("disconnect", (reason) => {
      if (!closing) { say({ error: `client ${client} disconnected: ${reason}` }); process.exit(1); }
    });
    socket.on("chainhook:eose", () => {
      eoses += 1;
      if (eoses === config.clients && replayed) replayed();
    });
    socket.once("connect", async () => {
      const ack = await socket.timeout(60000).emitWithAck("subscribe", config.filters[client % config.filters.length]);
      if (!ack.ok) reject(new Error(`client ${client}: ${JSON.stringify(ack.error)}`));
      else resolve();
    });
  });
}

let closing = false;
let eoses = 0;
let replayed = null;
function closeAll() {
  closing = true;
  for (const socket of sockets) socket.disconnect();
}

async function connectAll() {
  const started = performance.now();
  const width = config.connectConcurrency ?? 200;
  for (let first = 0; first < config.clients; first += width) {
    const batch = [];
    for (let client = first; client < Math.min(config.clients, first + width); client++) batch.push(connect(client));
    await Promise.all(batch);
  }
  return (performance.now() - started) / 1000;
}

async function post(index) {
  postedAt[index] = performance.now();
  if (!firstPost) firstPost = postedAt[index];
  const response = await fetch(config.workload.publishUrl, {
    method: "POST", headers: { "content-type": "application/json" }, body: deliveries[index].body,
  });
  if (response.status !== 200) throw new Error(`POST ${index}: ${response.status} ${await response.text()}`);
  await response.arrayBuffer();
  postMs[index] = performance.now() - postedAt[index];
}

async function runWorkload() {
  const done = new Promise((resolve) => { finished = resolve; });
  const { mode, intervalMs = 0, timeoutSeconds = 120 } = config.workload;
  const posting = (async () => {
    if (mode === "burst") {
      for (let i = 0; i < deliveries.length; i++) await post(i);
      return;
    }
    const start = performance.now();
    const pending = [];
    for (let i = 0; i < deliveries.length; i++) {
      const wait = start + i * intervalMs - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      pending.push(post(i));
    }
    await Promise.all(pending);
  })();
  await posting;
  const timedOut = await Promise.race([
    done.then(() => false),
    new Promise((r) => setTimeout(() => r(true), timeoutSeconds * 1000)),
  ]);
  latencies.sort((a, b) => a - b);
  const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : null);
  const seconds = (lastArrival - firstPost) / 1000;
  return {
    delivered, expected, complete: !timedOut && delivered === expected, seconds,
    events_per_second: delivered / seconds,
    latency_ms: config.latency ? { p50: pick(0.5), p99: pick(0.99), max: latencies.at(-1) ?? null,
                                   slowest_per_delivery: Array.from(slowest, Math.round),
                                   post_per_delivery: Array.from(postMs, Math.round) } : null,
    least_per_client: Math.min(...counts), most_per_client: Math.max(...counts),
  };
}

async function runReplay() {
  // Replay mode: the filters carry "since"; time from the first subscribe to the last eose.
  const done = new Promise((resolve) => { replayed = resolve; });
  const started = performance.now();
  await connectAll();
  if (eoses < config.clients) await done;
  const seconds = (performance.now() - started) / 1000;
  return { delivered, seconds, events_per_second: delivered / seconds, complete: delivered === expected };
}

try {
  if (config.replay) {
    const result = await runReplay();
    say({ result });
    closeAll();
    process.exit(result.complete ? 0 : 1);
  }
  const connectSeconds = await connectAll();
  say({ ready: true, clients: config.clients, connect_seconds: connectSeconds });
  if (config.idle || config.waitForGo) {
    const lines = createInterface({ input: process.stdin });
    for await (const line of lines) if (line.trim() === (config.idle ? "close" : "go")) break;
    if (config.idle) {
      closeAll();
      process.exit(0);
    }
  }
  const result = await runWorkload();
  say({ result });
  closeAll();
  process.exit(result.complete ? 0 : 1);
} catch (error) {
  say({ error: String(error?.stack ?? error) });
  process.exit(1);
}
