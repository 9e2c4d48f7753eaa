// chat-history's page: talks to the HTTP contract only (POST /v1/chat, GET /v1/info,
// GET and DELETE /v1/sessions/{id}). Text from the API or the user is set with textContent,
// never parsed as HTML.
"use strict";

const REQUEST_TIMEOUT_MS = 30000;
const SHADES = 6; // pod badge colours in app.css

/** An answer other than 2xx, or no answer at all. */
class ApiFailure extends Error {
  constructor(status, code, message, servedBy) {
    super(message);
    this.status = status; // null: no HTTP answer (unreachable, blocked, timed out)
    this.code = code;
    this.servedBy = servedBy;
  }

  describe() {
    const head = this.status === null ? this.code : `HTTP ${this.status} ${this.code}`;
    const by = this.servedBy ? ` (answered by ${this.servedBy})` : "";
    return `${head}: ${this.message}${by}`;
  }
}

/** The base URL typed by the user, ending in "/": absolute, or a path on this page's origin
 * (two releases behind one `kubectl proxy`); empty means this page's own service. */
function baseUrl(typed) {
  const text = typed.trim();
  if (!text) return new URL(".", document.baseURI);
  const url = new URL(text.endsWith("/") ? text : `${text}/`, document.baseURI);
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new TypeError("not http(s)");
  return url;
}

async function callApi(base, method, path, body, apiKey) {
  const url = new URL(path, base);
  const headers = body === undefined ? {} : { "Content-Type": "application/json" };
  // X-API-Key, not Authorization: the Kubernetes API server's proxy (kubectl proxy, the
  // side-by-side setup of the README) authenticates with Authorization and strips it.
  if (apiKey) headers["X-API-Key"] = apiKey;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
  } catch (err) {
    if (controller.signal.aborted) {
      throw new ApiFailure(null, "timeout", `no answer from ${url.origin} within ${REQUEST_TIMEOUT_MS / 1000} s`);
    }
    const hint = url.origin === location.origin ? ""
      : `; if it runs, both services must list ${location.origin} and ${url.origin} in CORS_ALLOW_ORIGINS`;
    throw new ApiFailure(null, "unreachable", `could not reach ${url.origin} (${err.message})${hint}`);
  } finally {
    clearTimeout(timer);
  }
  const servedBy = response.headers.get("X-Served-By");
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && typeof data.error === "object" && data.error ? data.error : {};
    const retry = response.headers.get("Retry-After");
    const message = (error.message || text.slice(0, 300) || response.statusText)
      + (retry ? ` (retry after ${retry} s)` : "");
    throw new ApiFailure(response.status, error.code || "http_error", message, servedBy);
  }
  return { data, servedBy, status: response.status };
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function podBadge(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  const badge = el("span", "pod", name);
  badge.dataset.shade = String(hash % SHADES);
  return badge;
}

const announcer = () => document.getElementById("announcer");

/** Says `text` through the live region (kept short: the last few announcements). */
function announce(text) {
  const region = announcer();
  region.append(el("p", "", text));
  while (region.childElementCount > 4) region.firstElementChild.remove();
}

/** One conversation with one service: its log, its session id, what it has been told. */
class Column {
  constructor(root, letter, urlInput, keyInput) {
    this.root = root;
    this.letter = letter;
    this.urlInput = urlInput;
    this.keyInput = keyInput;
    this.log = root.querySelector(".log");
    this.where = root.querySelector(".where");
    this.sessionLine = root.querySelector(".session");
    root.querySelector('[data-action="transcript"]').addEventListener("click", () => this.transcript());
    root.querySelector('[data-action="delete"]').addEventListener("click", () => this.remove());
    this.reset();
  }

  get active() { return !this.root.hidden; }

  reset() {
    this.sessionId = null;
    this.stored = 0; // messages this page has seen acknowledged in this conversation
    this.lastPod = null;
    this.log.replaceChildren();
    this.sessionLine.textContent = "Session: new (the first reply assigns one)";
  }

  /** The API key typed for this service ("" for none). */
  key() { return this.keyInput.value.trim(); }

  base() {
    try {
      const url = baseUrl(this.urlInput.value);
      this.urlInput.removeAttribute("aria-invalid");
      return url;
    } catch {
      this.urlInput.setAttribute("aria-invalid", "true");
      throw new ApiFailure(null, "bad_url", `“${this.urlInput.value}” is not an http(s) URL`);
    }
  }

  /** Shows which service this column talks to, and its backend (GET /v1/info). */
  async describe() {
    let label;
    try {
      const base = this.base();
      label = this.urlInput.value.trim() ? base.href : "this page’s service";
      this.where.textContent = `${label}: asking /v1/info…`;
      const { data } = await callApi(base, "GET", "v1/info", undefined, this.key());
      const auth = data.auth && data.auth !== "off" ? " · API key required" : "";
      this.where.textContent = `${label} · backend ${data.backend} · version ${data.version}${auth}`;
    } catch (err) {
      this.where.textContent = label ? `${label}: ` : "";
      this.where.append(el("span", "lost", err instanceof ApiFailure ? err.describe() : String(err)));
    }
  }

  notice(text, isError) {
    const item = el("li", isError ? "notice error" : "notice");
    item.append(el("p", "", text));
    this.log.append(item);
    item.scrollIntoView({ block: "nearest" });
    announce(`Service ${this.letter}: ${text}`);
    return item;
  }

  /** Sends one turn and shows the reply: the pod, what it saw, whether history was lost. */
  async send(message) {
    const turn = el("li", "turn");
    turn.append(el("p", "you", message));
    const reply = el("div", "reply pending");
    reply.append(el("p", "", "Waiting for the reply…"));
    turn.append(reply);
    this.log.append(turn);
    turn.scrollIntoView({ block: "nearest" });
    const body = this.sessionId ? { session_id: this.sessionId, message } : { message };
    try {
      const { data } = await callApi(this.base(), "POST", "v1/chat", body, this.key());
      this.showReply(reply, data);
    } catch (err) {
      reply.className = "reply error";
      const text = err instanceof ApiFailure ? err.describe() : String(err);
      reply.replaceChildren(el("p", "", text));
      announce(`Service ${this.letter}: ${text}`);
    }
  }

  showReply(reply, data) {
    const expected = this.stored;
    const meta = el("p", "meta");
    meta.append("Answered by ", podBadge(data.served_by));
    if (this.lastPod && this.lastPod !== data.served_by) meta.append(` (last turn: ${this.lastPod})`);
    meta.append(` · saw ${data.history_length} earlier message${data.history_length === 1 ? "" : "s"}`);
    reply.className = "reply";
    reply.replaceChildren(meta, el("p", "text", data.reply));
    let verdict = "";
    if (data.history_length < expected) {
      verdict = `History lost: this pod saw ${data.history_length} of the ${expected} earlier messages.`;
      reply.append(el("p", "lost", verdict));
    } else if (expected > 0) {
      verdict = `History kept: all ${expected} earlier messages.`;
      reply.append(el("p", "kept", verdict));
    }
    this.sessionId = data.session_id;
    this.sessionLine.replaceChildren("Session: ", el("code", "", data.session_id));
    this.stored = data.history_length + 2;
    this.lastPod = data.served_by;
    announce(`Service ${this.letter}, pod ${data.served_by}, saw ${data.history_length} earlier messages: ${data.reply} ${verdict}`);
  }

  /** GET /v1/sessions/{id}/messages: what the pod that answers holds for this session. */
  async transcript() {
    if (!this.sessionId) {
      this.notice("No session yet: send a message first.", false);
      return;
    }
    try {
      const path = `v1/sessions/${encodeURIComponent(this.sessionId)}/messages`;
      const { data } = await callApi(this.base(), "GET", path, undefined, this.key());
      const item = this.notice(`${data.served_by} holds ${data.messages.length} messages for this session:`, false);
      const list = el("ol", "");
      for (const m of data.messages) list.append(el("li", "", `${m.type === "human" ? "You" : "AI"}: ${m.content}`));
      item.append(list);
    } catch (err) {
      this.notice(err instanceof ApiFailure ? err.describe() : String(err), true);
    }
  }

  /** DELETE /v1/sessions/{id}. */
  async remove() {
    if (!this.sessionId) {
      this.notice("No session yet: nothing to delete.", false);
      return;
    }
    try {
      const { servedBy, status } = await callApi(
        this.base(), "DELETE", `v1/sessions/${encodeURIComponent(this.sessionId)}`, undefined,
        this.key());
      this.stored = 0;
      this.notice(`Deleted (HTTP ${status}, answered by ${servedBy || "?"}).`, false);
    } catch (err) {
      this.notice(err instanceof ApiFailure ? err.describe() : String(err), true);
    }
  }
}

function main() {
  const params = new URLSearchParams(location.search);
  const compare = document.getElementById("compare");
  const urlA = document.getElementById("url-a");
  const urlB = document.getElementById("url-b");
  const urlBField = document.getElementById("url-b-field");
  const keyA = document.getElementById("key-a");
  const keyB = document.getElementById("key-b");
  const keyBField = document.getElementById("key-b-field");
  const form = document.getElementById("composer");
  const input = document.getElementById("message");
  const columns = [
    new Column(document.getElementById("column-a"), "A", urlA, keyA),
    new Column(document.getElementById("column-b"), "B", urlB, keyB),
  ];
  // API keys live in this tab's sessionStorage only: never in the URL, never in localStorage.
  for (const [input, name] of [[keyA, "chat-history.api-key.a"], [keyB, "chat-history.api-key.b"]]) {
    input.value = sessionStorage.getItem(name) || "";
    input.addEventListener("input", () => {
      if (input.value) sessionStorage.setItem(name, input.value);
      else sessionStorage.removeItem(name);
    });
  }
  // A link can prefill the services: /?a=http://localhost:8080&b=http://localhost:8081
  urlA.value = params.get("a") || "";
  urlB.value = params.get("b") || "";
  compare.checked = Boolean(params.get("b"));

  const layout = () => {
    urlBField.hidden = !compare.checked;
    keyBField.hidden = !compare.checked;
    columns[1].root.hidden = !compare.checked;
    for (const c of columns) if (c.active) c.describe();
  };
  const restart = () => {
    for (const c of columns) c.reset();
    layout();
  };
  compare.addEventListener("change", restart);
  urlA.addEventListener("change", restart);
  urlB.addEventListener("change", restart);
  keyA.addEventListener("change", restart);
  keyB.addEventListener("change", restart);
  document.getElementById("new-conversation").addEventListener("click", () => {
    restart();
    announce("New conversation.");
    input.focus();
  });

  let busy = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = input.value;
    if (busy || !message.trim()) return;
    // The button stays enabled (disabling it would drop a keyboard user's focus): a turn
    // waits for the one before it by ignoring submits until the replies are in.
    busy = true;
    form.setAttribute("aria-busy", "true");
    input.value = "";
    try {
      // The same turn to every service at once: each column shows its own answer.
      await Promise.all(columns.filter((c) => c.active).map((c) => c.send(message)));
    } finally {
      busy = false;
      form.removeAttribute("aria-busy");
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  layout();
}

document.addEventListener("DOMContentLoaded", main);
