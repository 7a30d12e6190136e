// The storefront demo: a catalogue grid that reports clicks to POST /events, and a
// "recommended for you" panel fed live by the gateway's stream (SSE, or WebSocket with ?transport=ws).
"use strict";

const params = new URLSearchParams(location.search);
const state = {
  user: params.get("user") || localStorage.getItem("streamrec.user") || "web-" + Math.random().toString(36).slice(2, 8),
  transport: params.get("transport") === "ws" ? "ws" : "sse",
  token: new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("streamrec.token"),
  titles: new Map(),
  subtitles: new Map(),
  items: [],
  bought: new Set(),
  shown: [],
  lastActionAt: null,
};
localStorage.setItem("streamrec.user", state.user);
if (state.token) sessionStorage.setItem("streamrec.token", state.token);
// What a test (or a curious developer) can read: how many updates arrived and how fast.
window.streamrec = { updates: 0, lastLatencyMs: null, items: [], user: state.user, transport: state.transport };

const $ = (id) => document.getElementById(id);
const GRID_SIZE = 60;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function title(item) {
  return state.titles.get(item) || "Item " + item;
}

function logActivity(text) {
  const list = $("activity");
  list.prepend(el("li", {}, new Date().toLocaleTimeString() + "  " + text));
  while (list.children.length > 30) list.lastChild.remove();
}

async function send(type, item) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  state.lastActionAt = performance.now();
  const body = JSON.stringify({ user_id: state.user, item_id: item, type: type, session_id: state.user + "-web" });
  let response;
  try {
    response = await fetch("/events", { method: "POST", headers, body });
  } catch (err) {
    logActivity("could not send " + type + ": " + err);
    return false;
  }
  if (response.status === 401) {
    $("auth").hidden = false;
    logActivity(type + " refused: a write token is needed");
    return false;
  }
  if (!response.ok) {
    const detail = await response.json().catch(() => ({}));
    logActivity(type + " failed: " + (detail.error || response.status));
    return false;
  }
  logActivity(type.replaceAll("_", " ") + " · " + title(item));
  if (type === "purchase") {
    state.bought.add(item);
    document.querySelectorAll('.card[data-item="' + CSS.escape(item) + '"]').forEach((c) => c.classList.add("bought"));
  }
  return true;
}

function card(item) {
  const stop = (fn) => (event) => { event.stopPropagation(); fn(); };
  return el(
    "li",
    { class: "card" + (state.bought.has(item.item_id) ? " bought" : ""), "data-item": item.item_id, onclick: () => send("view", item.item_id) },
    el("div", { class: "title" }, item.title),
    el("div", { class: "sub" }, item.subtitle || ""),
    el("div", { class: "id" }, "#" + item.item_id),
    el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "cart", onclick: stop(() => send("add_to_cart", item.item_id)) }, "add to cart"),
      el("button", { type: "button", class: "buy", onclick: stop(() => send("purchase", item.item_id)) }, "buy"),
    ),
  );
}

function renderGrid() {
  const query = $("search").value.trim().toLowerCase();
  const matching = query ? state.items.filter((i) => i.title.toLowerCase().includes(query) || i.item_id === query) : state.items;
  $("grid").replaceChildren(...matching.slice(0, GRID_SIZE).map(card));
}

function renderRecs(kind, data) {
  const items = (data.items || []).slice(0, 10);
  const scores = data.scores || [];
  const top = scores.length ? Math.max(...scores.slice(0, 10), 1e-9) : 1;
  const before = new Set(state.shown);
  $("recs").replaceChildren(
    ...items.map((item, i) =>
      el(
        "li",
        { "data-item": item, class: before.has(item) ? "" : "new" },
        el(
          "div",
          { class: "row" },
          el("span", { class: "name", onclick: () => send("view", item) }, title(item)),
          el("button", { type: "button", class: "buy", onclick: () => send("purchase", item) }, "buy"),
        ),
        el("div", { class: "bar", style: "width:" + Math.max(4, (100 * (scores[i] || 0)) / top).toFixed(0) + "%" }),
      ),
    ),
  );
  state.shown = items;
  const latency = state.lastActionAt === null ? null : Math.round(performance.now() - state.lastActionAt);
  window.streamrec.updates += 1;
  window.streamrec.items = items;
  window.streamrec.lastKind = kind;
  window.streamrec.lastLatencyMs = kind === "recs" ? latency : null;
  const when = new Date((data.generated_at || Date.now() / 1000) * 1000).toLocaleTimeString();
  const after = kind === "recs" && latency !== null ? " · " + latency + " ms after your last action" : "";
  const origin = kind === "snapshot" ? " · from the current state" : " · pushed live";
  $("recs-meta").textContent = items.length ? "updated " + when + origin + after : "nothing to recommend yet: click around";
}

function setStatus(cls, text) {
  const s = $("status");
  s.className = "status " + cls;
  s.textContent = text;
}

function streamUrl() {
  return "/users/" + encodeURIComponent(state.user) + "/recommendations/stream";
}

function connectSse() {
  const source = new EventSource(streamUrl());
  source.onopen = () => setStatus("live", "live · SSE");
  source.onerror = () => setStatus("down", "reconnecting…"); // EventSource retries by itself
  for (const kind of ["recs", "snapshot"]) {
    source.addEventListener(kind, (event) => renderRecs(kind, JSON.parse(event.data)));
  }
}

function connectWs() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + streamUrl();
  const socket = new WebSocket(url);
  socket.onopen = () => setStatus("live", "live · WebSocket");
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    renderRecs(message.event, message.data);
  };
  socket.onclose = () => {
    setStatus("down", "reconnecting…");
    setTimeout(connectWs, 2000);
  };
}

async function main() {
  $("user").textContent = state.user;
  $("search").addEventListener("input", renderGrid);
  $("save-token").addEventListener("click", () => {
    state.token = $("token").value.trim();
    sessionStorage.setItem("streamrec.token", state.token);
    $("auth").hidden = true;
  });
  const [config, catalogue] = await Promise.all([
    fetch("/config.json").then((r) => r.json()),
    fetch("/catalogue.json").then((r) => r.json()),
  ]);
  if (config.write_auth && !state.token) $("auth").hidden = false;
  state.items = catalogue.items;
  for (const item of catalogue.items) state.titles.set(item.item_id, item.title);
  $("source").textContent = catalogue.items.length + " items · " + catalogue.source;
  renderGrid();
  if (state.transport === "ws") connectWs();
  else connectSse();
}

main();
