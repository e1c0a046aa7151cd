// flowhost console: plain JavaScript over the admin API. The admin token
// lives in `token` below and nowhere else: not in storage, not in a URL.
// Everything shown is put in the page as text (never as HTML), so nothing
// a flow or a client wrote can run here.
"use strict";

let token = null;
let endpoints = [];
let selectedEndpoint = null;
let deliveryFilter = "all";
let stream = null; // the chat's event stream: { endpoint, abort }
const bubbles = new Map(); // the chat's outputs by outputId

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), 3000);
}

function when(ms) {
  if (ms === null || ms === undefined) return "—";
  const seconds = Math.round((Date.now() - ms) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

function bytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls the admin API; a 401 signs out. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && token) signOut("The admin token was refused; sign in again.");
    throw new ApiError(response.status, data);
  }
  return data;
}

// Signing in and out.

async function signIn(event) {
  event.preventDefault();
  const error = $("login-error");
  error.hidden = true;
  token = $("token").value.trim();
  try {
    const listing = await api("GET", "/admin/endpoints");
    endpoints = listing.endpoints;
  } catch (e) {
    token = null;
    error.textContent =
      e.status === 401 ? "That is not the admin token." :
      e.status === 404 ? "The admin API is off on this host: set admin_token in its configuration." :
      `Cannot reach the admin API: ${e.message}`;
    error.hidden = false;
    return;
  }
  $("token").value = "";
  $("login").hidden = true;
  $("app").hidden = false;
  fillEndpointSelects();
  show("endpoints");
}

function signOut(message) {
  token = null;
  closeStream();
  $("app").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("token").focus();
}

// Views.

function show(view) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === view);
  }
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${view}`;
  }
  if (view === "endpoints") loadEndpoints();
  if (view === "flows") loadFlows();
  if (view === "deliveries") loadDeliveries();
  if (view === "chat") openChat();
}

function fillEndpointSelects() {
  for (const id of ["delivery-endpoint", "chat-endpoint"]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(...endpoints.map((e) => el("option", { value: e.name }, `${e.name} (${e.flow})`)));
    if (endpoints.some((e) => e.name === chosen)) select.value = chosen;
  }
}

// Endpoints and their keys.

async function loadEndpoints() {
  try {
    endpoints = (await api("GET", "/admin/endpoints")).endpoints;
  } catch (e) {
    return toast(e.message);
  }
  fillEndpointSelects();
  const list = $("endpoint-list");
  list.replaceChildren(
    ...endpoints.map((e) =>
      el(
        "article",
        {
          class: `card endpoint${e.name === selectedEndpoint ? " selected" : ""}`,
          "data-endpoint": e.name,
          onclick: () => selectEndpoint(e.name),
        },
        el(
          "div",
          { class: "endpoint-head" },
          el("span", { class: "endpoint-name" }, e.name),
          el("span", { class: `badge ${e.auth === "api-key" ? "key" : ""}` }, e.auth === "api-key" ? "API key" : "no auth"),
        ),
        el("div", { class: "field" }, el("span", {}, "Flow"), el("div", {}, e.flow)),
        el(
          "div",
          { class: "field" },
          el("span", {}, "URL"),
          el(
            "div",
            { class: "url" },
            el("code", { title: e.url }, e.url),
            el("button", { class: "ghost small", onclick: (ev) => { ev.stopPropagation(); copy(e.url); } }, "Copy"),
          ),
        ),
        el(
          "div",
          { class: "field" },
          el("span", {}, "Webhook"),
          e.webhookUrl === null
            ? el("span", {}, "none: each POST is answered with the outputs (REST mode)")
            : el("code", {}, e.webhookUrl + (e.webhookAuth ? "  (Basic auth)" : "")),
        ),
      ),
    ),
  );
  if (selectedEndpoint) loadKeys();
}

function selectEndpoint(name) {
  selectedEndpoint = name;
  for (const card of document.querySelectorAll(".endpoint")) {
    card.classList.toggle("selected", card.dataset.endpoint === name);
  }
  $("new-key").hidden = true;
  loadKeys();
}

async function loadKeys() {
  const panel = $("keys-panel");
  panel.hidden = false;
  $("keys-endpoint").textContent = selectedEndpoint;
  let keys;
  try {
    keys = (await api("GET", `/admin/endpoints/${encodeURIComponent(selectedEndpoint)}/keys`)).keys;
  } catch (e) {
    return toast(e.message);
  }
  const rows = keys.map((k) =>
    el(
      "tr",
      { "data-key": k.id },
      el("td", {}, el("code", {}, k.id)),
      el("td", {}, k.name || "—"),
      el("td", {}, el("code", {}, `${k.prefix}…`)),
      el("td", {}, when(k.createdAt)),
      el("td", {}, el("span", { class: `badge ${k.revokedAt ? "revoked" : "active"}` }, k.revokedAt ? "revoked" : "active")),
      el("td", {}, k.revokedAt ? "" : el("button", { class: "danger small", "data-revoke": k.id, onclick: () => revokeKey(k) }, "Revoke")),
    ),
  );
  $("key-rows").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No keys yet."))]),
  );
}

async function createKey(event) {
  event.preventDefault();
  const name = $("key-name").value.trim();
  try {
    const created = await api(
      "POST",
      `/admin/endpoints/${encodeURIComponent(selectedEndpoint)}/keys`,
      name ? { name } : {},
    );
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    $("key-name").value = "";
    loadKeys();
  } catch (e) {
    toast(e.message);
  }
}

async function revokeKey(key) {
  if (!confirm(`Revoke ${key.name || key.id}? Callers using it are refused from now on.`)) return;
  try {
    await api("DELETE", `/admin/endpoints/${encodeURIComponent(selectedEndpoint)}/keys/${encodeURIComponent(key.id)}`);
    toast(`Revoked ${key.id}`);
    $("new-key").hidden = true;
    loadKeys();
  } catch (e) {
    toast(e.message);
  }
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied");
  } catch {
    toast("Copy it by hand: the browser refused the clipboard");
  }
}

// Flows.

async function loadFlows() {
  let flows;
  try {
    flows = (await api("GET", "/admin/flows")).flows;
  } catch (e) {
    return toast(e.message);
  }
  $("flow-rows").replaceChildren(
    ...flows.map((f) =>
      el(
        "tr",
        { "data-flow": f.name },
        el("td", {}, el("strong", {}, f.name)),
        el("td", {}, f.loaded ? el("code", {}, f.version) : el("span", { class: "badge failed" }, "not loaded")),
        el("td", {}, f.loaded ? when(f.loadedAt) : "—"),
        el("td", {}, f.loaded ? bytes(f.size) : "—"),
        el("td", {}, f.loaded ? `${f.loadMs.toFixed(0)} ms${f.fromCache ? " (cached)" : ""}` : "—"),
        el("td", { class: f.lastError ? "error-text" : "" }, f.lastError ? `${f.lastError.reason} (${when(f.lastError.at)})` : "—"),
      ),
    ),
  );
}

// Deliveries and dead letters.

async function loadDeliveries() {
  const endpoint = $("delivery-endpoint").value;
  if (!endpoint) return;
  const path = deliveryFilter === "dead" ? "dead-letters" : "deliveries";
  let listing;
  try {
    listing = await api("GET", `/admin/endpoints/${encodeURIComponent(endpoint)}/${path}?limit=100`);
  } catch (e) {
    return toast(e.message);
  }
  const banner = $("stopped-banner");
  banner.hidden = !listing.stopped;
  if (listing.stopped) {
    banner.textContent = `Delivery to this endpoint is stopped: ${listing.stopped.reason}. Its outputs are kept.`;
  }
  $("no-deliveries").hidden = listing.deliveries.length > 0;
  $("delivery-rows").replaceChildren(
    ...listing.deliveries.map((d) =>
      el(
        "tr",
        { "data-output": d.id, "data-status": d.status },
        el("td", {}, d.id),
        el("td", {}, el("code", {}, d.session_id)),
        el("td", {}, el("span", { class: `badge ${d.status}` }, d.status)),
        el("td", {}, d.attempts.length),
        el("td", { class: d.last_error ? "error-text" : "" }, d.last_error || "—"),
        el("td", {}, when(d.created_at)),
        el(
          "td",
          {},
          d.status === "pending" ? "" :
            el("button", { class: "ghost small", "data-redeliver": d.id, onclick: () => redeliver(endpoint, d.id) }, "Redeliver"),
        ),
      ),
    ),
  );
}

async function redeliver(endpoint, id) {
  try {
    await api("POST", `/admin/endpoints/${encodeURIComponent(endpoint)}/deliveries/${id}/redeliver`);
    toast(`Output ${id} queued again`);
  } catch (e) {
    toast(e.message);
  }
  setTimeout(loadDeliveries, 300);
}

async function redeliverDead() {
  const endpoint = $("delivery-endpoint").value;
  try {
    const queued = await api("POST", `/admin/endpoints/${encodeURIComponent(endpoint)}/dead-letters/redeliver`);
    toast(`${queued.queued} dead letters queued again`);
  } catch (e) {
    toast(e.message);
  }
  setTimeout(loadDeliveries, 300);
}

// Try it: the chat.

function newSession() {
  $("chat-session").value = `console-${Math.random().toString(36).slice(2, 10)}`;
  $("chat-log").replaceChildren(el("div", { class: "bubble system" }, "A new session. Say something."));
  bubbles.clear();
}

function openChat() {
  if (!$("chat-session").value) newSession();
  const endpoint = $("chat-endpoint").value;
  if (stream && stream.endpoint === endpoint) return;
  closeStream();
  if (!endpoint) return;
  const controller = new AbortController();
  stream = { endpoint, abort: () => controller.abort() };
  follow(endpoint, controller.signal);
}

function closeStream() {
  if (stream) stream.abort();
  stream = null;
}

/** Reads the endpoint's event stream (fetch, not EventSource, which cannot send the token). */
async function follow(endpoint, signal) {
  try {
    const response = await fetch(`/admin/endpoints/${encodeURIComponent(endpoint)}/events`, {
      headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
      signal,
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const kind = /^event: ?(.*)$/m.exec(block)?.[1];
        const data = [...block.matchAll(/^data: ?(.*)$/gm)].map((m) => m[1]).join("\n");
        if (kind === "delivery") heard(JSON.parse(data));
      }
    }
  } catch (e) {
    if (signal.aborted) return;
    system(`The event stream closed (${e.message}); reconnecting…`);
  }
  if (!signal.aborted && stream && stream.endpoint === endpoint) {
    setTimeout(() => !signal.aborted && follow(endpoint, signal), 1000);
  }
}

function system(text) {
  const log = $("chat-log");
  log.append(el("div", { class: "bubble system" }, text));
  log.scrollTop = log.scrollHeight;
}

/** A delivery attempt: a bot bubble for the output, updated on later attempts. */
function heard(attempt) {
  if (attempt.sessionId !== $("chat-session").value) return;
  const output = attempt.body?.AIOutput || {};
  const meta =
    attempt.outcome === "delivered" ? `delivered (${attempt.status})` :
    attempt.outcome === "retry" ? `webhook answered ${attempt.status ?? "nothing"}; retrying` :
    attempt.outcome === "dead" ? "delivery failed for good: a dead letter" :
    "the webhook answered 410: delivery stopped";
  let bubble = bubbles.get(attempt.outputId);
  if (!bubble) {
    const data = output.data && Object.keys(output.data).length ? el("pre", {}, JSON.stringify(output.data, null, 2)) : null;
    bubble = el("div", { class: "bubble bot", "data-output": attempt.outputId }, output.text || "", data, el("span", { class: "meta" }));
    bubbles.set(attempt.outputId, bubble);
    $("chat-log").append(bubble);
  }
  bubble.querySelector(".meta").textContent = meta;
  bubble.dataset.outcome = attempt.outcome;
  const log = $("chat-log");
  log.scrollTop = log.scrollHeight;
}

/** An output a REST endpoint answered with: a bot bubble. */
function answered(output) {
  const data = output.data && Object.keys(output.data).length ? el("pre", {}, JSON.stringify(output.data, null, 2)) : null;
  const log = $("chat-log");
  log.append(el("div", { class: "bubble bot" }, output.text || "", data, el("span", { class: "meta" }, "answered (REST)")));
  log.scrollTop = log.scrollHeight;
}

async function send(event) {
  event.preventDefault();
  const input = $("chat-text");
  const text = input.value.trim();
  if (!text) return;
  const endpoint = $("chat-endpoint").value;
  const log = $("chat-log");
  log.append(el("div", { class: "bubble user" }, text));
  log.scrollTop = log.scrollHeight;
  input.value = "";
  try {
    const answer = await api("POST", `/admin/endpoints/${encodeURIComponent(endpoint)}/messages`, {
      userId: $("chat-user").value,
      sessionId: $("chat-session").value,
      text,
    });
    // A REST endpoint answers with its outputs: nothing goes to a webhook.
    for (const output of answer?.outputStack ?? []) answered(output);
  } catch (e) {
    system(`Not accepted: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => show(tab.dataset.view));
  }
  $("key-form").addEventListener("submit", createKey);
  $("copy-key").addEventListener("click", () => copy($("new-key-value").textContent));
  $("delivery-endpoint").addEventListener("change", loadDeliveries);
  $("refresh-deliveries").addEventListener("click", loadDeliveries);
  $("redeliver-dead").addEventListener("click", redeliverDead);
  for (const button of document.querySelectorAll("#delivery-filter button")) {
    button.addEventListener("click", () => {
      deliveryFilter = button.dataset.filter;
      for (const b of document.querySelectorAll("#delivery-filter button")) b.classList.toggle("active", b === button);
      loadDeliveries();
    });
  }
  $("chat-endpoint").addEventListener("change", () => { newSession(); openChat(); });
  $("new-session").addEventListener("click", newSession);
  $("chat-form").addEventListener("submit", send);
});
