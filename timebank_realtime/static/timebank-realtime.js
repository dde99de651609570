// timebank-realtime browser helper (ES module), served by the service at /client/timebank-realtime.js.
//
// Every change exactly once, in cursor order, across reconnects and page reloads: the last cursor of
// each subscription is kept in localStorage, and on every (re)connect the subscription is renewed
// with `since` = that cursor; anything already seen is dropped.
//
//   import { io } from "/path/to/socket.io.esm.min.js";            // socket.io-client 4.x
//   import { createTimebankClient } from "/client/timebank-realtime.js";
//   const client = createTimebankClient({ io, url: "https://realtime.example" });
//   await client.subscribe({ type: "user", address: "SP…" }, (kind, change) => render(kind, change),
//                          { key: "my-wallet" });

const FIELDS = ["tx_hash", "asset", "contract", "address", "event_type", "network"];
const LOWER_CASE = new Set(["tx_hash", "network"]); // the server compares these in lower case
const LEGACY = { contract: ["contractId", "contract"], user: ["address", "address"], "event-type": ["eventType", "event_type"] };

function normalizeFilter(raw) {
  let fields = raw;
  if (raw.type !== undefined) {
    const form = LEGACY[raw.type];
    if (!form) throw new Error(`unknown subscription type ${raw.type}`);
    fields = { [form[1]]: raw[form[0]] };
  }
  const filter = { topic: raw.topic ?? "events" };
  for (const name of FIELDS) {
    if (fields[name] !== undefined) filter[name] = new Set([].concat(fields[name]).map((v) => (LOWER_CASE.has(name) ? v.trim().toLowerCase() : v)));
  }
  return filter;
}

// What a change in a batch frame would have come as on its own.
function changeKind(change) {
  if (change.topic === "block") return change.canonical ? "block" : "block_rollback";
  return change.canonical ? "event" : "rollback";
}

function matches(filter, change) {
  if ((change.topic === "block") !== (filter.topic === "blocks")) return false;
  if (filter.tx_hash && !filter.tx_hash.has(change.tx_hash)) return false;
  if (filter.contract && !filter.contract.has(change.contract_id)) return false;
  if (filter.event_type && !filter.event_type.has(change.event_type)) return false;
  if (filter.network && !filter.network.has(change.network)) return false;
  if (filter.asset && !filter.asset.has(change.asset_identifier)) return false;
  if (filter.address && !(change.affected_addresses || []).some((a) => filter.address.has(a))) return false;
  return true;
}

function memoryStorage() {
  const values = new Map();
  return { getItem: (k) => (values.has(k) ? values.get(k) : null), setItem: (k, v) => values.set(k, String(v)) };
}

export function createTimebankClient({
  io, url, token, transports = ["websocket", "polling"], storage = globalThis.localStorage ?? memoryStorage(),
  storageKey = "timebank-realtime", backoffInitialMs = 500, backoffMaxMs = 15000, onHeartbeat, onError = console.error,
}) {
  const subscriptions = [];
  let closed = false;
  let failures = 0;
  const socket = io(url, {
    transports,
    // batch: one chainhook:batch frame per delivery instead of a message per change.
    auth: (cb) => Promise.resolve(typeof token === "function" ? token() : token)
      .then((t) => cb(t ? { batch: true, token: t } : { batch: true })),
    randomizationFactor: 0.5, reconnectionDelay: backoffInitialMs, reconnectionDelayMax: backoffMaxMs,
  });

  const cursorKey = (sub) => `${storageKey}:${sub.key}`;
  const saveCursor = (sub, cursor) => { sub.last = cursor; storage.setItem(cursorKey(sub), String(cursor)); };

  function deliver(sub, kind, change) {
    if (sub.last !== null && change.cursor <= sub.last) return;
    saveCursor(sub, change.cursor);
    try { sub.handler(kind, change); } catch (error) { onError(error); }
  }

  // Replayed history (tagged with our subscription id, at most the ack's cursor) goes straight out;
  // anything newer that arrives before eose waits, so that it can be put in cursor order.
  function route(sub, kind, change, replayed) {
    const history = replayed && sub.serverId !== null && change.cursor <= sub.ackCursor;
    if (sub.live || history) deliver(sub, kind, change);
    else sub.buffer.push([kind, change]);
  }

  function goLive(sub) {
    const waiting = sub.buffer.sort((a, b) => a[1].cursor - b[1].cursor); sub.buffer = [];
    for (const [kind, change] of waiting) deliver(sub, kind, change);
    sub.live = true;
  }

  async function send(sub) {
    sub.serverId = null; sub.ackCursor = null; sub.live = false; sub.buffer = [];
    const since = sub.last !== null ? sub.last : sub.since;
    const ack = await socket.timeout(10000).emitWithAck("subscribe", { ...sub.payload, since });
    if (!ack.ok) throw Object.assign(new Error(`${ack.error.code}: ${ack.error.message}`), { code: ack.error.code });
    sub.serverId = ack.id; sub.ackCursor = ack.cursor;
    if (sub.last === null) saveCursor(sub, since === "now" ? ack.cursor : since);
    const waiting = sub.buffer; sub.buffer = [];
    for (const [kind, change] of waiting) route(sub, kind, change, false);
    for (const [kind, change] of unclaimed.get(ack.id) ?? []) route(sub, kind, change, true);
    unclaimed.delete(ack.id);
    if (earlyEose.delete(ack.id)) goLive(sub);
  }

  // Tagged messages or an eose for a subscription whose ack we have not seen yet wait here.
  const unclaimed = new Map();
  const earlyEose = new Set();
  // A replayed or held message names its subscription (`subscription`), or all of them when it is
  // for several of ours (`subscriptions`); a live message names none and goes to every match.
  const tagsOf = (change) => change.subscriptions ?? (change.subscription === undefined ? [] : [change.subscription]);
  const onChange = (kind) => (change) => {
    const tags = tagsOf(change);
    for (const tag of tags) {
      const owner = subscriptions.find((sub) => sub.serverId === tag);
      if (owner) route(owner, kind, change, true);
      else unclaimed.set(tag, [...(unclaimed.get(tag) ?? []), [kind, change]]);
    }
    if (tags.length > 0) return;
    for (const sub of subscriptions) if (matches(sub.filter, change)) route(sub, kind, change, false);
  };
  socket.on("chainhook:event", onChange("event"));
  socket.on("chainhook:rollback", onChange("rollback"));
  socket.on("chainhook:block", onChange("block"));
  socket.on("chainhook:block_rollback", onChange("block_rollback"));
  socket.on("chainhook:batch", ({ changes, subscription, subscriptions: several }) => {
    const tag = several !== undefined ? { subscriptions: several } : subscription !== undefined ? { subscription } : {};
    for (const change of changes) onChange(changeKind(change))({ ...change, ...tag });
  });
  socket.on("chainhook:eose", ({ id }) => {
    const sub = subscriptions.find((s) => s.serverId === id);
    if (sub) goLive(sub); else earlyEose.add(id);
  });
  socket.on("chainhook:heartbeat", (beat) => onHeartbeat && onHeartbeat(beat));
  // Refusals that pass: asked again a second later (up to 5 times), as the Python client does. Left
  // alone, a subscription refused on reconnect (say the 11th, over the subscribe rate) stays silent.
  const RETRYABLE = new Set(["rate_limited", "unavailable", "not_connected"]);
  let link = 0; // which connection this is: a retry left from an older one stops
  async function resubscribe(sub, mine) {
    for (let attempt = 1; mine === link && subscriptions.includes(sub); attempt++) {
      try { await send(sub); return; } catch (error) {
        if (!RETRYABLE.has(error.code) || attempt === 5) { onError(error); return; }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }
  socket.on("connect", async () => {
    const mine = ++link;
    failures = 0; unclaimed.clear(); earlyEose.clear();
    // Forget the old connection for every subscription first: one still marked live (or still
    // holding an old server id) would take changes meant for the others while they resubscribe.
    for (const sub of subscriptions) { sub.serverId = null; sub.ackCursor = null; sub.live = false; sub.buffer = []; }
    for (const sub of [...subscriptions]) await resubscribe(sub, mine);
  });
  // socket.io-client reconnects by itself after network failures, but not after the server closed
  // the connection (a resync, an expired token): reconnect then too, with backoff and jitter.
  socket.on("disconnect", (reason) => {
    if (closed || reason !== "io server disconnect") return;
    const delay = Math.random() * Math.min(backoffMaxMs, backoffInitialMs * 2 ** failures++);
    setTimeout(() => { if (!closed) socket.connect(); }, delay);
  });

  return {
    socket,
    async subscribe(payload, handler, { since = "now", key } = {}) {
      const sub = {
        key: key ?? JSON.stringify(payload), payload, filter: normalizeFilter(payload), handler, since,
        last: null, serverId: null, ackCursor: null, live: false, buffer: [],
      };
      const stored = storage.getItem(cursorKey(sub));
      if (stored !== null) sub.last = Number(stored);
      subscriptions.push(sub);
      if (socket.connected) await send(sub);
      return sub;
    },
    async unsubscribe(sub) {
      subscriptions.splice(subscriptions.indexOf(sub), 1);
      if (socket.connected && sub.serverId) await socket.timeout(5000).emitWithAck("unsubscribe", { id: sub.serverId });
    },
    close() { closed = true; socket.close(); },
  };
}
