// The Culex explorer: the admin API (/api/v1/, documented in /api/v1/openapi.json) in a page.
// Plain JavaScript, no library, nothing from another site: it works offline and under the
// page's Content-Security-Policy (default-src 'self').
"use strict";

const POLL_MS = 2000;
const PAGE = 100;
const HISTORY = 150; // chart points (5 minutes at one per 2 s)

let token = sessionStorage.getItem("culex-token") || "";
const history = { in: [], out: [], clients: [] };
let last = null;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function say(text) { document.getElementById("status").textContent = text; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the admin API needs a token");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: response.statusText }));
    throw new Error(body.error || response.statusText);
  }
  return response;
}

async function getJSON(path) { return (await api(path)).json(); }

function query(params) {
  const found = Object.entries(params).filter(([, value]) => value !== "" && value != null);
  return found.length ? "?" + new URLSearchParams(found).toString() : "";
}

// -- summary and charts ---------------------------------------------------------------------

async function pollStats() {
  try {
    const stats = await getJSON("/api/v1/stats");
    const now = performance.now() / 1000;
    if (last) {
      const seconds = Math.max(now - last.at, 0.001);
      push("in", (stats.messages_received - last.stats.messages_received) / seconds);
      push("out", (stats.messages_sent - last.stats.messages_sent) / seconds);
      setText("stat-in", Math.round(history.in.at(-1)));
      setText("stat-out", Math.round(history.out.at(-1)));
    }
    push("clients", stats.sessions_connected);
    last = { at: now, stats };
    setText("stat-clients", stats.sessions_connected);
    setText("stat-offline", stats.sessions_offline);
    setText("stat-retained", stats.retained);
    setText("stat-queued", stats.queued);
    setText("stat-dropped", Object.values(stats.dropped).reduce((a, b) => a + b, 0));
    setText("stat-lag", `${(stats.loop_lag_seconds * 1000).toFixed(1)} ms`);
    drawChart("chart-messages", [["in", "--in"], ["out", "--out"]]);
    drawChart("chart-clients", [["clients", "--accent"]]);
    say("");
  } catch (error) {
    say(error.message);
  }
}

function push(series, value) {
  history[series].push(Math.max(0, value));
  if (history[series].length > HISTORY) history[series].shift();
}

function setText(id, value) { document.getElementById(id).textContent = value; }

function drawChart(id, lines) {
  const canvas = document.getElementById(id);
  const context = canvas.getContext("2d");
  const style = getComputedStyle(document.documentElement);
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...lines.flatMap(([series]) => history[series]));
  context.fillStyle = style.getPropertyValue("--muted");
  context.font = "11px system-ui";
  context.fillText(Math.round(top).toLocaleString(), 4, 12);
  context.fillText("0", 4, height - 4);
  for (const [series, color] of lines) {
    const points = history[series];
    context.strokeStyle = style.getPropertyValue(color);
    context.lineWidth = 2;
    context.beginPath();
    points.forEach((value, index) => {
      const x = width - (points.length - 1 - index) * (width / (HISTORY - 1));
      const y = height - 4 - (value / top) * (height - 20);
      if (index) context.lineTo(x, y); else context.moveTo(x, y);
    });
    context.stroke();
  }
}

// -- paged tables ---------------------------------------------------------------------------

class PagedTable {
  constructor(name, path, columns, onRow) {
    this.path = path;
    this.columns = columns;
    this.onRow = onRow;
    this.body = document.querySelector(`#${name}-table tbody`);
    this.filter = document.getElementById(`${name}-filter`);
    this.cursors = [""];
    this.next = null;
    const pager = document.getElementById(`${name}-pager`);
    pager.querySelector(".prev").addEventListener("click", () => {
      if (this.cursors.length > 1) { this.cursors.pop(); this.load(); }
    });
    pager.querySelector(".next").addEventListener("click", () => {
      if (this.next !== null) { this.cursors.push(this.next); this.load(); }
    });
    this.filter.addEventListener("submit", (event) => {
      event.preventDefault();
      this.cursors = [""];
      this.load();
    });
  }

  async load() {
    const params = Object.fromEntries(new FormData(this.filter));
    params.limit = PAGE;
    params.cursor = this.cursors.at(-1);
    try {
      const page = await getJSON(this.path + query(params));
      this.next = page.next;
      this.body.replaceChildren(...page.entries.map((entry) => {
        const row = el("tr", { "data-client-id": entry.client_id },
          ...this.columns.map((column) => el("td", {}, column(entry))));
        row.addEventListener("click", () => this.onRow(entry));
        return row;
      }));
    } catch (error) {
      say(error.message);
    }
  }
}

const time = (seconds) => new Date(seconds * 1000).toLocaleTimeString();
const orDash = (value) => (value == null ? "-" : value);

const clients = new PagedTable("clients", "/api/v1/clients", [
  (c) => c.client_id, (c) => orDash(c.username), (c) => c.address, (c) => c.listener,
  (c) => c.protocol, (c) => time(c.connected_at), (c) => c.keepalive, (c) => c.subscriptions,
  (c) => c.inflight, (c) => c.queued, (c) => c.dropped,
], (c) => showClient(c.client_id));

const sessions = new PagedTable("sessions", "/api/v1/sessions", [
  (s) => s.client_id, (s) => (s.connected ? "yes" : "no"), (s) => orDash(s.username),
  (s) => (s.persistent ? "yes" : "no"),
  (s) => (s.expires_in == null ? "-" : `${Math.round(s.expires_in)} s`), (s) => s.subscriptions,
  (s) => s.inflight, (s) => s.queued, (s) => s.queued_bytes, (s) => s.dropped,
], (s) => { if (s.connected) { switchTab("clients"); showClient(s.client_id); } });

// -- one client -----------------------------------------------------------------------------

let shownClient = null;
let tracing = null;

async function showClient(clientId) {
  shownClient = clientId;
  const panel = document.getElementById("client-detail");
  try {
    const client = await getJSON(`/api/v1/clients/${encodeURIComponent(clientId)}`);
    panel.hidden = false;
    setText("client-title", client.client_id);
    const fields = ["username", "address", "listener", "protocol", "keepalive", "clean_session",
      "inflight", "queued", "dropped", "messages_sent", "bytes_sent"];
    document.getElementById("client-fields").replaceChildren(...fields.flatMap((name) => [
      el("dt", {}, name.replace("_", " ")), el("dd", {}, orDash(client[name]))]));
    document.getElementById("client-subscriptions").replaceChildren(
      ...client.subscription_list.map((sub) => el("li", {}, `${sub.topic_filter} (QoS ${sub.qos})`)));
    disarm(document.getElementById("client-kick"));
  } catch (error) {
    say(error.message);
  }
}

function describe(event) {
  const parts = [`+${event.elapsed.toFixed(3)}s`, event.direction.padEnd(6), event.type];
  for (const name of ["topic", "packet_id", "qos", "reason", "payload"]) {
    if (event[name] != null && event[name] !== "") parts.push(`${name}=${JSON.stringify(event[name])}`);
  }
  if (event.subscriptions) parts.push(event.subscriptions.map((s) => s.topic_filter).join(","));
  if (event.size != null) parts.push(`(${event.size} B)`);
  return parts.join(" ");
}

async function traceClient() {
  if (tracing) tracing.abort();
  const clientId = shownClient;
  const list = document.getElementById("client-trace-events");
  list.replaceChildren();
  tracing = new AbortController();
  try {
    const response = await api(`/api/v1/trace${query({ client_id: clientId, seconds: 60 })}`,
      { signal: tracing.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const blocks = buffered.split("\n\n");
      buffered = blocks.pop();
      for (const block of blocks) {
        const data = block.split("\n").find((line) => line.startsWith("data: "));
        if (!data || block.startsWith("event: end")) continue;
        const event = JSON.parse(data.slice(6));
        list.append(el("li", { class: event.direction }, describe(event)));
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") say(error.message);
  }
}

// A destructive button asks once more: the first click arms it, the second acts.
function armed(button) {
  if (button.classList.contains("armed")) return true;
  button.classList.add("armed");
  button.dataset.label = button.textContent;
  button.textContent = "click again to confirm";
  return false;
}

function disarm(button) {
  button.classList.remove("armed");
  if (button.dataset.label) button.textContent = button.dataset.label;
}

async function kickClient(event) {
  const button = event.currentTarget;
  if (!armed(button)) return;
  disarm(button);
  try {
    await api(`/api/v1/clients/${encodeURIComponent(shownClient)}`, { method: "DELETE" });
    say(`${shownClient} disconnected`);
    document.getElementById("client-detail").hidden = true;
    clients.load();
  } catch (error) {
    say(error.message);
  }
}

// -- topics ---------------------------------------------------------------------------------

async function loadTopics() {
  const filter = new FormData(document.getElementById("topics-filter")).get("filter") || "#";
  try {
    const page = await getJSON(`/api/v1/topics${query({ filter, limit: 1000 })}`);
    setText("topics-hint", page.next === null ? `${page.entries.length} topics` :
      `the first ${page.entries.length} topics: narrow the filter to see others`);
    renderTree(page.entries);
  } catch (error) {
    say(error.message);
  }
}

function renderTree(entries) {
  const root = new Map();
  for (const entry of entries) {
    let level = root;
    const names = entry.topic.split("/");
    names.forEach((name, index) => {
      if (!level.has(name)) level.set(name, { children: new Map(), entry: null });
      const node = level.get(name);
      if (index === names.length - 1) node.entry = entry;
      level = node.children;
    });
  }
  document.getElementById("topic-tree").replaceChildren(...branch(root));
}

function branch(level) {
  return [...level.entries()].map(([name, node]) => {
    const item = el("li", {}, el("span", { class: "name" }, name || "(empty)"));
    const entry = node.entry;
    if (entry) {
      item.classList.add("topic");
      item.setAttribute("data-topic", entry.topic);
      item.append(el("span", { class: "rate" }, `${entry.rate.toFixed(1)} msg/s`));
      if (entry.retained) {
        const retained = entry.retained;
        const preview = retained.payload != null ? retained.payload : `(${retained.payload_size} bytes)`;
        item.append(el("span", { class: "preview" }, preview + (retained.truncated ? "…" : "")));
        const remove = el("button", { class: "danger delete-retained" }, "delete retained");
        remove.addEventListener("click", (event) => deleteRetained(event, entry.topic));
        item.append(remove);
      }
    }
    if (node.children.size) item.append(el("ul", {}, ...branch(node.children)));
    return item;
  });
}

async function deleteRetained(event, topic) {
  if (!armed(event.currentTarget)) return;
  try {
    const answer = await (await api(`/api/v1/retained${query({ filter: topic })}`,
      { method: "DELETE" })).json();
    say(`${answer.deleted} retained message deleted from ${topic}`);
    loadTopics();
  } catch (error) {
    say(error.message);
  }
}

// -- tabs and start -------------------------------------------------------------------------

let activeTab = "overview";

function switchTab(name) {
  activeTab = name;
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== name;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  if (name === "clients") clients.load();
  if (name === "sessions") sessions.load();
  if (name === "topics") loadTopics();
}

function tick() {
  pollStats();
  // Not while a delete waits for its confirming click: the button would be redrawn unarmed.
  if (activeTab === "topics" && !document.querySelector("#topic-tree .armed")) loadTopics();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => switchTab(button.dataset.tab));
  }
  document.getElementById("client-trace").addEventListener("click", traceClient);
  document.getElementById("client-kick").addEventListener("click", kickClient);
  document.getElementById("topics-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadTopics();
  });
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("culex-token", token);
    document.getElementById("token-form").hidden = true;
    tick();
  });
  tick();
  setInterval(tick, POLL_MS);
});
