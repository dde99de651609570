// The dashboard: live events through the browser client (the npm package's bundle, clients/js), counters,
// a per-minute chart, and history.
import { createClient, memoryStorage } from "/client/timebank-realtime.js";

const $ = (selector) => document.querySelector(selector);
const COLORS = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#1b7c83", "#953800",
  "#57606a", "#6639ba", "#0550ae", "#116329", "#a40e26", "#4d2d00", "#24292f", "#7d4e00", "#3e1f79"];
// The filter fields of both forms, named as the subscribe message and /api/events name them: a control
// (input or select) of either form named like one of these is sent. A new filter, such as a network
// select, is its name here and a control of that name in each form.
const FILTER_FIELDS = ["contract", "address", "event_type", "tx_hash", "network"];
const OPENING_PAGE = 50; // events a subscription without `since` opens on
const MAX_ROWS = 500; // rows the live table keeps
// Events a view remembers, to tell a new event from a change of one it has counted. Past this the
// oldest are forgotten, and a change of one of those counts as a new event: reorgs are far shallower.
const MAX_REMEMBERED = 100000;

let client = null;
let subscription = null;
let subscriptions = 0; // names each subscription's stored cursor apart
let eventTypes = [];
let view = newView();

// What one subscription has shown. Each subscription starts a view of its own, so its counters start
// at zero, and a change that still reaches an older view (its subscription being replaced) is dropped.
function newView() {
  return {
    rows: new Map(), // event id -> { row, change }: its row in the live table and its newest full body
    canonical: new Map(), // event id -> canonical now, for every event this view has counted
    counts: new Map(), // event type -> { events, rolledBack }
    perMinute: new Map(), // arrival minute (epoch ms) -> Map(type -> new events)
    opening: true, // the opening page is loading: changes wait in `held` until it is shown
    held: [],
  };
}

const short = (text, keep = 10) => (text && text.length > keep * 2 + 1 ? `${text.slice(0, keep)}…${text.slice(-keep)}` : text || "");

// Each network's highest block ({"mainnet": {"block_height", "block_hash"}, …}): networks never mix.
function showTips(tips) {
  const networks = Object.keys(tips ?? {}).sort();
  $("#tip").textContent = networks.length === 0 ? "–"
    : networks.map((n) => `${n} ${tips[n].block_height} (${short(tips[n].block_hash, 6)})`).join(" · ");
  $("#tip").title = networks.map((n) => `${n}: ${tips[n].block_height} ${tips[n].block_hash}`).join("\n");
  for (const select of document.querySelectorAll('select[name="network"]')) {
    const known = new Set([...select.options].map((o) => o.value));
    for (const n of networks) if (!known.has(n)) select.add(new Option(n, n));
  }
}

function setState(state) { const el = $("#state"); el.textContent = state; el.dataset.state = state; }

function cell(row, text, { mono = false, title } = {}) {
  const td = row.insertCell();
  td.textContent = text;
  if (mono) td.className = "mono";
  if (title) td.title = title;
  return td;
}

// A contract id whole: it may wrap after its dot (<wbr> adds nothing to the copied text).
function contractCell(row, contractId = "") {
  const td = row.insertCell();
  td.className = "mono contract";
  td.title = contractId;
  const dot = contractId.indexOf(".");
  if (dot < 0) td.textContent = contractId;
  else td.append(contractId.slice(0, dot + 1), document.createElement("wbr"), contractId.slice(dot + 1));
}

// The block's time in the reader's locale and time zone; the ISO value on hover.
function timeCell(row, iso) {
  const td = row.insertCell();
  if (!iso) return; // a rollback message does not carry it
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = iso;
  time.textContent = new Date(iso).toLocaleString();
  td.append(time);
}

function valueCell(row, value) {
  const td = row.insertCell();
  if (value === undefined || value === null) return;
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "value";
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(value, null, 2);
  details.append(summary, pre);
  td.append(details);
}

function eventRow(tbody, change, { prepend }) {
  const row = prepend ? tbody.insertRow(0) : tbody.insertRow();
  row.dataset.id = change.id;
  row.dataset.eventType = change.event_type ?? "";
  cell(row, String(change.cursor));
  cell(row, change.event_type ?? "");
  contractCell(row, change.contract_id);
  cell(row, (change.affected_addresses ?? []).map((a) => short(a, 6)).join(", "), { mono: true,
    title: (change.affected_addresses ?? []).join("\n") });
  cell(row, String(change.block_height));
  timeCell(row, change.timestamp);
  cell(row, short(change.tx_hash, 8), { mono: true, title: change.tx_hash });
  valueCell(row, change.event_data?.value);
  if (change.canonical === false) row.classList.add("rolled-back");
  return row;
}

// The live table lists events as /api/events?order=desc does: by the cursor of their newest change,
// so a change moves its event's row to the top. A rollback carries only the fields filters match on:
// the rest of the row stays what the view last had.
function showEvent(target, change, { prepend }) {
  const tbody = $("#events tbody");
  const shown = target.rows.get(change.id);
  const full = shown ? { ...shown.change, ...change } : change;
  shown?.row.remove();
  target.rows.set(change.id, { row: eventRow(tbody, full, { prepend }), change: full });
  while (tbody.rows.length > MAX_ROWS) {
    target.rows.delete(Number(tbody.rows[tbody.rows.length - 1].dataset.id));
    tbody.deleteRow(-1);
  }
}

// Counts events, not changes: an event once, whatever changes it gets; `rolledBack` follows whether
// it is canonical now. Only events new to the view after its opening page go into the chart.
function countEvent(target, change, { live }) {
  const canonical = change.canonical !== false;
  const counter = target.counts.get(change.event_type) ?? { events: 0, rolledBack: 0 };
  target.counts.set(change.event_type, counter);
  const before = target.canonical.get(change.id);
  if (before === undefined) {
    counter.events += 1;
    if (!canonical) counter.rolledBack += 1;
    if (live) countMinute(target, change.event_type);
  } else if (before !== canonical) {
    counter.rolledBack += canonical ? -1 : 1;
  }
  target.canonical.delete(change.id); // set again below, as the newest: the oldest is forgotten first
  target.canonical.set(change.id, canonical);
  if (target.canonical.size > MAX_REMEMBERED) target.canonical.delete(target.canonical.keys().next().value);
}

function countMinute(target, type) {
  const minute = Math.floor(Date.now() / 60000) * 60000;
  if (!target.perMinute.has(minute)) target.perMinute.set(minute, new Map());
  const bucket = target.perMinute.get(minute);
  bucket.set(type, (bucket.get(type) ?? 0) + 1);
}

function renderCounters() {
  const tbody = $("#counters tbody");
  tbody.replaceChildren();
  for (const [type, { events, rolledBack }] of [...view.counts].sort((a, b) => b[1].events - a[1].events)) {
    const row = tbody.insertRow();
    row.dataset.eventType = type;
    cell(row, type);
    cell(row, String(events));
    cell(row, String(rolledBack));
  }
}

function colorOf(type) { return COLORS[Math.max(0, eventTypes.indexOf(type)) % COLORS.length]; }

function renderChart() {
  const svg = $("#chart");
  const now = Math.floor(Date.now() / 60000) * 60000;
  const minutes = Array.from({ length: 15 }, (_, i) => now - (14 - i) * 60000);
  const perMinute = view.perMinute;
  for (const minute of perMinute.keys()) if (minute < minutes[0]) perMinute.delete(minute);
  const totals = minutes.map((m) => [...(perMinute.get(m)?.values() ?? [])].reduce((a, b) => a + b, 0));
  const top = Math.max(1, ...totals);
  const parts = [];
  minutes.forEach((minute, i) => {
    let y = 110;
    for (const [type, n] of perMinute.get(minute) ?? []) {
      const h = (n / top) * 100;
      y -= h;
      parts.push(`<rect x="${i * 20 + 2}" y="${y.toFixed(1)}" width="16" height="${h.toFixed(1)}" fill="${colorOf(type)}"><title>${type}: ${n}</title></rect>`);
    }
  });
  parts.push(`<line x1="0" y1="110.5" x2="300" y2="110.5" stroke="#8c959f"/><text x="0" y="9" font-size="9">${top}/min</text>`);
  svg.innerHTML = parts.join("");
  $("#legend").innerHTML = [...view.counts.keys()].map((t) => `<li><span style="background:${colorOf(t)}"></span>${t}</li>`).join("");
}

// A batch frame hands over its changes one by one in the same task: draw once, after the last.
let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => { renderQueued = false; renderCounters(); renderChart(); });
}

function applyChange(target, change) {
  showEvent(target, change, { prepend: true });
  countEvent(target, change, { live: true });
  $("#cursor").textContent = String(change.cursor);
  scheduleRender();
}

function receive(target, kind, change) {
  if (target !== view) return;
  const body = { ...change, canonical: kind === "event" };
  if (target.opening) target.held.push(body);
  else applyChange(target, body);
}

function filterFrom(form) {
  const data = new FormData(form);
  const filter = {};
  for (const name of FILTER_FIELDS) {
    const value = String(data.get(name) ?? "").trim();
    if (value) filter[name] = value;
  }
  return filter;
}

// Empty: open on the newest page, then live. A cursor: replay every change after it. "now": live only.
function sinceFrom(form) {
  const text = String(new FormData(form).get("since") ?? "").trim();
  if (text === "") return undefined;
  return /^\d+$/.test(text) ? Number(text) : text; // anything else: the server's refusal names it
}

async function fetchEvents(params) {
  const response = await fetch(`/api/events?${params}`);
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
  return body;
}

// The newest page of what the subscription matches, as of its ack cursor (rolled-back events too, as
// the live table shows them). Every later change comes through the subscription, held until the page
// is shown: nothing falls between the two, and an event in both is one row, moved by its change.
async function openOnNewest(target, filter, upto) {
  if (upto === 0) return; // nothing stored yet
  const params = new URLSearchParams({ ...filter, order: "desc", limit: String(OPENING_PAGE),
    include_rolled_back: "true", before: String(upto + 1) });
  const page = await fetchEvents(params);
  if (target !== view) return;
  for (const event of page.events) {
    showEvent(target, event, { prepend: false });
    countEvent(target, event, { live: false });
  }
}

function describe(filter) {
  const described = Object.entries(filter).map(([k, v]) => `${k} = ${v}`).join(", ");
  return described ? `Subscribed to ${described}.` : "Subscribed to every event.";
}

async function subscribe(filter, since) {
  const target = newView();
  view = target;
  $("#events tbody").replaceChildren();
  $("#cursor").textContent = "–";
  scheduleRender();
  if (subscription) await client.unsubscribe(subscription).catch(() => {});
  subscription = null;
  let sub;
  try {
    sub = await client.subscribe(filter, (kind, change) => receive(target, kind, change),
      { since: since ?? "now", key: `dashboard-${++subscriptions}` });
  } catch (error) {
    if (target === view) $("#subscription").textContent = `Refused: ${error.message}`;
    return;
  }
  // Replaced while its ack was on the way: the newer subscribe() could not see this one to drop it.
  if (target !== view) { await client.unsubscribe(sub).catch(() => {}); return; }
  subscription = sub;
  let status = describe(filter);
  // The ack cursor: where this subscription's changes start (the client drops any older).
  const start = typeof since === "number" ? since : sub.ackCursor;
  $("#cursor").textContent = start === null ? "–" : String(start);
  if (since === undefined && sub.ackCursor !== null) {
    await openOnNewest(target, filter, sub.ackCursor)
      .catch((error) => { status += ` The newest events could not be loaded: ${error.message}`; });
  }
  if (target !== view) return;
  target.opening = false;
  for (const change of target.held.splice(0)) applyChange(target, change);
  scheduleRender();
  $("#subscription").textContent = status;
}

function connect(token) {
  if (client) client.close();
  subscription = null; // it belonged to the closed client
  let refused = false; // the last connection attempt was refused (a missing or expired token): say so
  const current = client = createClient({
    url: location.origin, token: token || undefined, transports: ["websocket", "polling"],
    // Each subscription starts afresh (the opening page shows the newest): nothing to keep across reloads.
    storage: memoryStorage(),
    onHeartbeat: (beat) => showTips(beat.tips),
    onError: (error) => {
      const message = String(error.message ?? error);
      if (current.state === "connected") { $("#subscription").textContent = message; return; }
      refused = true;
      setState("error");
      $("#subscription").textContent = `Connection refused: ${message}`;
    },
  });
  current.onStateChange((state) => {
    if (state === "connected") refused = false;
    if (state === "connected" || (state === "disconnected" && !refused)) setState(state);
  });
}

async function loadHistory(after) {
  const form = $("#history-form");
  const params = new URLSearchParams(filterFrom(form));
  const order = new FormData(form).get("order");
  params.set("order", order);
  params.set("limit", "50");
  if (after !== undefined) params.set(order === "desc" ? "before" : "after", after);
  const tbody = $("#history tbody");
  let page;
  try {
    page = await fetchEvents(params);
  } catch (error) {
    if (after === undefined) tbody.replaceChildren();
    $("#history-status").textContent = error.message;
    return;
  }
  if (after === undefined) tbody.replaceChildren();
  for (const event of page.events) eventRow(tbody, event, { prepend: false });
  $("#history-status").textContent = `${tbody.rows.length} events${page.next === null ? ", no more" : ""}.`;
  const next = $("#history-next");
  next.disabled = page.next === null;
  next.onclick = () => loadHistory(page.next);
}

async function start() {
  const spec = await (await fetch("/api/openapi.json")).json();
  eventTypes = spec.components.schemas.Event.properties.event_type.enum;
  for (const select of document.querySelectorAll('select[name="event_type"]')) {
    for (const type of eventTypes) select.add(new Option(type, type));
  }
  fetch("/api/status").then((r) => r.json()).then((status) => showTips(status.chain_tips)).catch(() => {});
  connect("");
  subscribe({}, undefined);
  $("#subscribe-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const token = String(new FormData(form).get("token") ?? "");
    if (token) connect(token);
    await subscribe(filterFrom(form), sinceFrom(form));
  });
  $("#history-form").addEventListener("submit", (event) => { event.preventDefault(); loadHistory(); });
  setInterval(renderChart, 10000);
  renderChart();
}

start();
