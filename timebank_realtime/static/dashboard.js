// The dashboard: live events through the browser helper, counters, a per-minute chart, and history.
import { io } from "/static/vendor/socket.io.esm.min.js";
import { createTimebankClient } from "/client/timebank-realtime.js";

const $ = (selector) => document.querySelector(selector);
const COLORS = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#1b7c83", "#953800",
  "#57606a", "#6639ba", "#0550ae", "#116329", "#a40e26", "#4d2d00", "#24292f", "#7d4e00", "#3e1f79"];
const counts = new Map();
const perMinute = new Map(); // minute (epoch ms) -> Map(type -> count)
const rowsById = new Map();
let client = null;
let subscription = null;
let eventTypes = [];

const short = (text, keep = 10) => (text && text.length > keep * 2 + 1 ? `${text.slice(0, keep)}…${text.slice(-keep)}` : text || "");

function showTip(tip) {
  $("#tip").textContent = tip?.block_height == null ? "–" : `${tip.block_height} (${short(tip.block_hash, 6)})`;
}

function setState(state) { const el = $("#state"); el.textContent = state; el.dataset.state = state; }

function cell(row, text, { mono = false, title } = {}) {
  const td = row.insertCell();
  td.textContent = text;
  if (mono) td.className = "mono";
  if (title) td.title = title;
  return td;
}

function eventRow(tbody, change, { prepend }) {
  const row = prepend ? tbody.insertRow(0) : tbody.insertRow();
  row.dataset.id = change.id;
  row.dataset.eventType = change.event_type ?? "";
  cell(row, String(change.cursor));
  cell(row, change.event_type ?? "");
  cell(row, short(change.contract_id, 14), { mono: true, title: change.contract_id });
  cell(row, (change.affected_addresses ?? []).map((a) => short(a, 6)).join(", "), { mono: true,
    title: (change.affected_addresses ?? []).join("\n") });
  cell(row, String(change.block_height));
  cell(row, short(change.tx_hash, 8), { mono: true, title: change.tx_hash });
  const valueCell = row.insertCell();
  const value = change.event_data?.value;
  if (value !== undefined && value !== null) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "value";
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(value, null, 2);
    details.append(summary, pre);
    valueCell.append(details);
  }
  if (change.canonical === false) row.classList.add("rolled-back");
  return row;
}

function count(type) {
  counts.set(type, (counts.get(type) ?? 0) + 1);
  const minute = Math.floor(Date.now() / 60000) * 60000;
  if (!perMinute.has(minute)) perMinute.set(minute, new Map());
  const bucket = perMinute.get(minute);
  bucket.set(type, (bucket.get(type) ?? 0) + 1);
}

function renderCounters() {
  const tbody = $("#counters tbody");
  tbody.replaceChildren();
  for (const [type, n] of [...counts].sort((a, b) => b[1] - a[1])) {
    const row = tbody.insertRow();
    row.dataset.eventType = type;
    cell(row, type);
    cell(row, String(n));
  }
}

function colorOf(type) { return COLORS[Math.max(0, eventTypes.indexOf(type)) % COLORS.length]; }

function renderChart() {
  const svg = $("#chart");
  const now = Math.floor(Date.now() / 60000) * 60000;
  const minutes = Array.from({ length: 15 }, (_, i) => now - (14 - i) * 60000);
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
  $("#legend").innerHTML = [...counts.keys()].map((t) => `<li><span style="background:${colorOf(t)}"></span>${t}</li>`).join("");
}

function onChange(kind, change) {
  $("#cursor").textContent = String(change.cursor);
  const tbody = $("#events tbody");
  if (kind === "rollback") {
    const row = rowsById.get(change.id);
    if (row) row.classList.add("rolled-back");
    else rowsById.set(change.id, eventRow(tbody, change, { prepend: true }));
    return;
  }
  const existing = rowsById.get(change.id);
  if (existing) existing.remove();
  rowsById.set(change.id, eventRow(tbody, change, { prepend: true }));
  while (tbody.rows.length > 500) {
    rowsById.delete(Number(tbody.rows[tbody.rows.length - 1].dataset.id));
    tbody.deleteRow(-1);
  }
  count(change.event_type);
  renderCounters();
  renderChart();
}

function filterFrom(form) {
  const data = new FormData(form);
  const filter = {};
  for (const name of ["contract", "address", "event_type", "tx_hash"]) {
    const value = String(data.get(name) ?? "").trim();
    if (value) filter[name] = value;
  }
  return filter;
}

async function subscribe(filter, since) {
  if (subscription) await client.unsubscribe(subscription).catch(() => {});
  subscription = null;
  $("#events tbody").replaceChildren();
  rowsById.clear();
  try {
    subscription = await client.subscribe(filter, onChange, { since, key: `dashboard-${Date.now()}` });
    const described = Object.entries(filter).map(([k, v]) => `${k} = ${v}`).join(", ");
    $("#subscription").textContent = described ? `Subscribed to ${described}.` : "Subscribed to every event.";
  } catch (error) {
    $("#subscription").textContent = `Refused: ${error.message}`;
  }
}

function connect(token) {
  if (client) client.close();
  const memory = new Map();
  client = createTimebankClient({
    io, url: location.origin, token: token || undefined, transports: ["websocket", "polling"],
    storage: { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v) },
    onHeartbeat: (beat) => showTip(beat.tip),
    onError: (error) => { $("#subscription").textContent = String(error.message ?? error); },
  });
  client.socket.on("connect", () => setState("connected"));
  client.socket.on("disconnect", () => setState("disconnected"));
  client.socket.on("connect_error", (error) => { setState("error"); $("#subscription").textContent = `Connection refused: ${error.message}`; });
}

async function loadHistory(after) {
  const form = $("#history-form");
  const params = new URLSearchParams(filterFrom(form));
  const order = new FormData(form).get("order");
  params.set("order", order);
  params.set("limit", "50");
  if (after !== undefined) params.set(order === "desc" ? "before" : "after", after);
  const response = await fetch(`/api/events?${params}`);
  const body = await response.json();
  const tbody = $("#history tbody");
  if (after === undefined) tbody.replaceChildren();
  if (!response.ok) { $("#history-status").textContent = `${body.error.code}: ${body.error.message}`; return; }
  for (const event of body.events) eventRow(tbody, event, { prepend: false });
  $("#history-status").textContent = `${tbody.rows.length} events${body.next === null ? ", no more" : ""}.`;
  const next = $("#history-next");
  next.disabled = body.next === null;
  next.onclick = () => loadHistory(body.next);
}

async function start() {
  const spec = await (await fetch("/api/openapi.json")).json();
  eventTypes = spec.components.schemas.Event.properties.event_type.enum;
  for (const select of document.querySelectorAll('select[name="event_type"]')) {
    for (const type of eventTypes) select.add(new Option(type, type));
  }
  fetch("/api/status").then((r) => r.json()).then((status) => showTip(status.chain_tip)).catch(() => {});
  connect("");
  client.socket.once("connect", () => subscribe({}, "now"));
  $("#subscribe-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const token = String(new FormData(form).get("token") ?? "");
    const sinceText = String(new FormData(form).get("since") ?? "").trim();
    const since = sinceText === "" ? "now" : Number(sinceText);
    if (token) {
      connect(token);
      client.socket.once("connect", () => subscribe(filterFrom(form), since));
    } else {
      await subscribe(filterFrom(form), since);
    }
  });
  $("#history-form").addEventListener("submit", (event) => { event.preventDefault(); loadHistory(); });
  setInterval(renderChart, 10000);
  renderChart();
}

start();
