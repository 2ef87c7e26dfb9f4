// The garrison web console: fills the pages from the JSON API under /api/.
// Every element is built with createElement and textContent (no HTML is ever parsed from
// data), so payloads, names and tracebacks are shown as text, never run.
"use strict";

const FINAL = new Set(["completed", "failed", "cancelled"]);
// finished for good: a failed workflow can be retried (from the CLI, another tab) and run again
const ENDED = new Set(["completed", "cancelled"]);

// ------------------------------------------------------------------ helpers
function $(id) { return document.getElementById(id); }

// Unicode's bidirectional controls reorder the text around them: a topic, name or
// payload holding one could read as another text ("Trojan Source"); characters that
// show nothing make two texts look alike: controls, and every character Unicode names
// default-ignorable (zero-width ones, the BOM, variation selectors, the combining
// grapheme joiner, tag characters, Hangul fillers...). Every text the console shows
// from data goes through visible(), which shows each as its \uXXXX (two for one past
// \uFFFF, as JSON writes it; a tab, a newline stays: a carriage return does not, or
// "approve\r" would read as "approve").
const BIDI = /[\p{Cc}\p{Default_Ignorable_Code_Point}\u2028\u2029]/gu;
const KEPT = new Set(["\t", "\n"]);
function visible(text) {
  return String(text).replace(BIDI, (c) => KEPT.has(c) ? c : [...Array(c.length).keys()]
    .map((i) => "\\u" + c.charCodeAt(i).toString(16).toUpperCase().padStart(4, "0")).join(""));
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key === "title") node.setAttribute(key, visible(value));
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(visible(child)));
  }
  return node;
}

function fill(parent, ...children) {
  parent.replaceChildren(...children.flat(Infinity));
  if (parent.tagName === "TBODY") labelCells(parent);
}

// each cell of a table's body named by its column's header: a narrow window shows a
// row as its cells one under the other, each with its name (console.css)
function labelCells(body) {
  const head = body.parentElement.tHead;
  const names = head ? [...head.rows[0].cells].map((th) => th.textContent) : [];
  for (const row of body.rows) {
    [...row.cells].forEach((cell, i) => {
      if (cell.colSpan === 1 && names[i]) cell.dataset.label = names[i];
    });
  }
}

// a value the server cut (bigger than it shows): {"$cut": true, "bytes", "head"}
function isCut(value) {
  // (exactly the console's own marker: a workflow's value of its own that looks like
  // one, say without "bytes", is shown as it is)
  return value !== null && typeof value === "object" && !Array.isArray(value) &&
    value["$cut"] === true && typeof value.head === "string" &&
    typeof value.bytes === "number" && Object.keys(value).length === 3;
}

function cutText(value) {
  return `${value.head}… (cut: ${value.bytes.toLocaleString()} bytes in all; ` +
    "garrison workflows show, or history --wide for a journal record, prints it whole)";
}

// JSON.parse reads every number as a double: 9007199254740993 would be shown as
// 9007199254740992, 123456789012345678901234567890 as 1.2345678901234568e+29, and
// a stored 1.0 (1e2, which the store's Python reads as 100.0) as 1 (100), where
// `garrison workflows show` prints 1.0 (100.0). A number that JavaScript would not
// write back as the API wrote it is read as Digits instead, which keep its text, and
// json() writes them as they came.
class Digits {
  constructor(text) { this.text = text; }
  toString() { return this.text; }
}

function number(text, value) {
  return String(value) === text ? value : new Digits(text);
}

// where the browser gives a reviver the number's text (JSON.parse with source)
const WITH_SOURCE = (() => {
  try { return JSON.parse("1", (key, value, context) => context && context.source) === "1"; } catch (e) { return false; }
})();

// an answer of the API, its whole numbers kept to the digit
function parseJsonText(text) {
  if (WITH_SOURCE) {
    return JSON.parse(text, (key, value, context) =>
      typeof value === "number" ? number(context.source, value) : value);
  }
  return parseTokens(text);
}

// elsewhere, read token by token (the API's answers are JSON: little checking here)
const TOKEN = /\s*(?:("(?:[^"\\]+|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(true|false|null)|([[\]{},:]))/y;
function parseTokens(text) {
  TOKEN.lastIndex = 0;
  function next(expected) {
    const at = TOKEN.lastIndex;
    const token = TOKEN.exec(text);
    if (!token || (expected && token[4] !== expected)) throw new SyntaxError("not JSON at character " + at);
    return token;
  }
  function value(token) {
    const [, string, num, word, mark] = token;
    if (string !== undefined) return JSON.parse(string);
    if (num !== undefined) return number(num, Number(num));
    if (word !== undefined) return JSON.parse(word);
    const list = mark === "[";
    if (!list && mark !== "{") throw new SyntaxError("not JSON: " + mark);
    const out = list ? [] : {};
    const close = list ? "]" : "}";
    for (let t = next(), first = true; t[4] !== close; t = next(), first = false) {
      if (!first) { if (t[4] !== ",") throw new SyntaxError("not JSON: " + t[0]); t = next(); }
      if (list) { out.push(value(t)); continue; }
      if (t[1] === undefined) throw new SyntaxError("not JSON: " + t[0]);
      next(":");
      // (as JSON.parse does: a key "__proto__" is a key like any other)
      Object.defineProperty(out, JSON.parse(t[1]), { value: value(next()), enumerable: true,
                                                     writable: true, configurable: true });
    }
    return out;
  }
  const out = value(next());
  if (text.slice(TOKEN.lastIndex).trim()) throw new SyntaxError("not JSON after character " + TOKEN.lastIndex);
  return out;
}

// JSON text of a value read by parseJsonText, Digits as they came (JSON.stringify
// alone would write them as objects): indented by indent spaces if given. JSON.rawJSON,
// where the browser has it, writes them (natively, faster); elsewhere writeJson does.
const RAW_JSON = typeof JSON.rawJSON === "function";
function json(value, indent) {
  if (value === undefined) return "";
  if (isCut(value)) return cutText(value);
  if (!RAW_JSON) return writeJson(value, indent ? " ".repeat(indent) : "", "");
  return JSON.stringify(value, (key, v) => v instanceof Digits ? JSON.rawJSON(v.text) :
    isCut(v) ? cutText(v) : v, indent);
}

function writeJson(value, step, margin) {
  if (value instanceof Digits) return value.text;
  if (isCut(value)) return JSON.stringify(cutText(value));
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  const list = Array.isArray(value);
  const inner = margin + step;
  const items = list ? value.map((v) => writeJson(v, step, inner)) :
    Object.entries(value).map(([k, v]) => JSON.stringify(k) + (step ? ": " : ":") + writeJson(v, step, inner));
  const [open, close] = list ? ["[", "]"] : ["{", "}"];
  if (!items.length) return open + close;
  return step ? open + "\n" + inner + items.join(",\n" + inner) + "\n" + margin + close :
    open + items.join(",") + close;
}

function short(value, width) {
  const text = typeof value === "string" ? value : json(value);
  return text.length > width ? text.slice(0, width - 1) + "…" : text;
}

function when(text) {
  return text ? text.replace("T", " ").replace("Z", " UTC") : "";
}

function statusBadge(status) {
  return el("span", { class: "status status-" + status }, status);
}

// The workflow hosts of a node the console is attached to (from /api/capabilities);
// with more than one, links and API calls name the host.
let HOSTS = [];
// a count as people read it: 1,204
function count(n) {
  return n.toLocaleString("en-US");
}

function withHost(path, host) {
  return host && HOSTS.length > 1 ? path + (path.includes("?") ? "&" : "?") +
    "host=" + encodeURIComponent(host) : path;
}

// A workflow id or a promise name as one segment of a URL's path. A browser removes a
// segment "." or ".." from a path, written "%2E%2E" too: those two are written encoded
// twice ("%252E%252E"), which the console takes for them. An id that reads like one
// of those ("%2E", "%252E%252E", ...) is written with one level more ("%25252E"), so
// that it is not taken for "." or ".." (the console decodes that form once more).
const DOTS = /^%(?<level>(?:25)*)2[Ee](?:%\k<level>2[Ee])?$/;

// "team=travel, note=\"a, b=c\"" -> ["team=travel", "note=\"a, b=c\""]: the search box's
// KEY=VALUE terms, cut at each comma that a KEY= follows, but not inside a JSON value
// (a quoted string, a list or an object, opened right after the "="), which may hold
// ", b=" itself; a value that is no JSON (O"Brien) is text up to the next ", KEY="
function searchTerms(text) {
  const terms = [];
  let start = 0, depth = 0, quoted = false, prev = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const opens = depth > 0 || prev === "=";
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"' && opens) quoted = true;
    else if ((c === "[" || c === "{") && opens) depth++;
    else if ((c === "]" || c === "}") && depth > 0) depth--;
    else if (c === "," && depth === 0 && /^\s*[^=,\s]+=/.test(text.slice(i + 1))) {
      terms.push(text.slice(start, i).trim());
      start = i + 1;
    }
    if (!/\s/.test(c)) prev = quoted ? "" : c;
  }
  terms.push(text.slice(start).trim());
  return terms.filter(Boolean);
}

function segment(text) {
  if (text === "." || text === ".." || DOTS.test(text)) {
    return encodeURIComponent(text.replace(/%/g, "%25").replace(/\./g, "%2E"));
  }
  return encodeURIComponent(text);
}

// a link to the workflow's page, that reads text (its id unless given)
function workflowLink(id, host, text) {
  return el("a", { href: withHost("/workflows/" + segment(id), host),
                   class: "wf-link" }, text === undefined ? id : text);
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

// The CSRF cookie to echo: named for the console's port (garrison_csrf_8233: a browser
// sends a host's cookies to every port of it), as the page says
function csrfCookie() {
  return document.body.dataset.csrfCookie || "garrison_csrf";
}

// ------------------------------------------------------------------ the session's end
// The login page, coming back to this one afterwards
function loginHere() {
  return "/login?next=" + encodeURIComponent(location.pathname + location.search);
}

// The session ended (idle, too old, logged out elsewhere, the console restarted): a
// request got 401 and nothing was done. The page stays as it is, with what is typed
// on it (a poll must not take the operator away mid-sentence), under a banner whose
// link logs in again and comes back; only the operator's own action leaves the page.
// Once it has ended, nothing polls again (a page move or an action does not restart
// the polls: each would only get 401 again).
let sessionOver = false;
function sessionEnded() {
  sessionOver = true;
  const banner = $("session-ended");
  if (!banner || !banner.hidden) return;
  const link = el("a", { href: loginHere() }, "log in again");
  // (the page's address when clicked: a page move since the banner came changed it,
  // and what was typed is kept under that address)
  link.addEventListener("click", () => { link.href = loginHere(); keepTyped(null); });
  fill(banner, "Your console session has ended: this page is no longer updated, and " +
       "nothing you do here is sent until you ", link, " (what you typed comes back).");
  banner.hidden = false;
}

// What to say, and what was typed, once back from the login (this tab only)
const AFTER_LOGIN = "garrison:after-login";
function keepTyped(note) {
  const fields = {};
  for (const input of document.querySelectorAll("main input[id], main textarea[id]")) {
    if (input.type !== "checkbox" && input.type !== "password") fields[input.id] = input.value;
  }
  const promises = {};
  for (const input of document.querySelectorAll("#promises tr[data-promise] input.promise-value")) {
    promises[input.closest("tr").dataset.promise] = input.value;
  }
  try {
    sessionStorage.setItem(AFTER_LOGIN, JSON.stringify(
      { note, path: location.pathname + location.search, fields, promises }));
  } catch (e) { /* no storage: the banner and the login page said it all the same */ }
}

// What keepTyped kept for this page (its promise values: typedPromises), its note
// shown: on the login page (kept for the page after it), then once on the next page
let typedPromises = {};
let typedFields = {};
function afterLogin() {
  let kept = null;
  try { kept = JSON.parse(sessionStorage.getItem(AFTER_LOGIN)); } catch (e) { kept = null; }
  if (!kept || typeof kept !== "object") return;
  if (document.body.dataset.page !== "login") sessionStorage.removeItem(AFTER_LOGIN);
  if (kept.note) {
    fill($("session-note"), kept.note, " ",
         el("button", { type: "button", onclick: () => { $("session-note").hidden = true; } }, "OK"));
    $("session-note").hidden = false;
  }
  if (kept.path === location.pathname + location.search) {
    typedFields = kept.fields || {};
    typedPromises = kept.promises || {};
  }
}

// The fields typed before the login back in place (once the page has drawn them)
function restoreTyped() {
  for (const [id, value] of Object.entries(typedFields)) {
    const input = $(id);
    if (input && typeof value === "string") input.value = value;
  }
  typedFields = {};
}

// The last answer of each polled GET, by path: sent back as If-None-Match, a 304
// means nothing changed (no body sent, nothing to render).
const lastAnswer = new Map();

async function api(path, options) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
  const polled = options && options.poll;
  if (options && options.body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-Garrison-CSRF"] = cookie(csrfCookie());
    // (a string is the body's JSON text already: it holds a value as the user typed it)
    init.body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  } else if (polled && lastAnswer.has(path)) {
    init.headers["If-None-Match"] = lastAnswer.get(path).etag;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    // no answer at all: the network, or the console's process gone (maybe for a moment)
    throw Object.assign(new Error("connection lost: " + e.message), { offline: true });
  }
  if (response.status === 401) {
    // no session (it expired, or the console was restarted): nothing was done
    sessionEnded();
    throw Object.assign(new Error("your console session has ended: log in again"),
                        { expired: true });
  }
  if (polled && response.status === 304 && lastAnswer.has(path)) {
    return { data: lastAnswer.get(path).data, changed: false };
  }
  let data = null;
  try { data = parseJsonText(await response.text()); } catch (e) { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error : response.status + " " + response.statusText;
    throw Object.assign(new Error(message), { status: response.status });
  }
  if (polled) {
    const etag = response.headers.get("ETag");
    if (etag) lastAnswer.set(path, { etag, data });
    return { data, changed: true };
  }
  return data;
}

let toastTimer = null;
function toast(message, isError) {
  const box = $("toast");
  box.textContent = visible(message);
  box.className = isError ? "toast error" : "toast";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 4000);
}

// Render a section only when its data changed: a poll must not wipe what the user
// is typing into a form inside it.
const rendered = new Map();
function renderIfChanged(key, data, render) {
  const text = json(data);
  if (rendered.get(key) === text) return;
  rendered.set(key, text);
  render(data);
}

function poller(load, everyMs) {
  let timer = null;
  let stopped = false;
  let every = everyMs;
  let cost = 0;
  async function tick() {
    timer = null;
    if (!document.hidden) {
      const started = performance.now();
      // (an error is shown by load; the session's end by its banner: no more polls)
      try { await load(); } catch (e) { if (e.expired) stopped = true; }
      cost = performance.now() - started;
    }
    // A slow answer (a workflow with a huge inbox: the server reads it all) is asked
    // for less often: the console keeps the server busy a tenth of the time at most.
    if (!stopped && timer === null) timer = setTimeout(tick, Math.min(Math.max(every, 10 * cost), 30000));
  }
  return {
    // (start and now: a promise of the load's end)
    start() {
      if (sessionOver) return Promise.resolve();
      stopped = false;
      return timer === null ? tick() : Promise.resolve();
    },
    stop() { stopped = true; if (timer !== null) { clearTimeout(timer); timer = null; } },
    now() { this.stop(); return this.start(); },
    // poll every ms from now on (slower once a workflow has finished)
    interval(ms) { every = ms; },
  };
}

function hostSelector(caps, selected, onChange) {
  if (caps.hosts.length < 2) return;
  const select = $("host");
  for (const h of caps.hosts) {
    select.append(el("option", { value: h.name, selected: h.name === selected },
      h.name + " (" + (h.store || "in memory") + ")"));
  }
  $("host-filter").hidden = false;
  if (onChange) select.addEventListener("change", onChange);
}

// ------------------------------------------------------------------ the list
async function listPage() {
  const caps = await api("/api/capabilities");
  HOSTS = caps.hosts;
  const filters = {};
  // the "after" of each page seen; the last is the current one. The URL keeps the
  // current page's (a reload stays there), history.state the pages before it. An
  // address opened afresh (a bookmark, another tab) has no such trail: its pages are
  // counted from the one opened (cursors[0] is not null), shown as "a later page",
  // and only First page goes back before it (a guessed trail skipped pages).
  const cursors = [];
  // the filters and page of the address shown: at the start, and again when Back or
  // Forward comes to another of the list's history entries
  function fromAddress() {
    const params = new URLSearchParams(location.search);
    Object.assign(filters, {
      status: params.getAll("status").flatMap((s) => s.split(",")).filter(Boolean),
      search: params.getAll("search"),
      id: params.get("id") || "",
      parent: params.get("parent") || "",
      order: params.get("order") || "newest",
      host: params.get("host") || caps.host || "",
    });
    const after = params.get("after");
    const kept = history.state && Array.isArray(history.state.cursors) ? history.state.cursors : null;
    cursors.splice(0, cursors.length, ...(!after ? [null] :
      kept && kept[kept.length - 1] === after ? kept : [after]));
  }
  fromAddress();
  const firstPage = () => cursors.splice(0, cursors.length, null);
  hostSelector(caps, filters.host, () => $("apply").click());

  const box = $("status-filter");
  for (const status of caps.statuses) {
    box.append(el("label", { class: "check" },
      el("input", { type: "checkbox", name: "status", value: status }), " ", statusBadge(status)));
  }
  function showFilters() {
    for (const input of box.querySelectorAll("input")) input.checked = filters.status.includes(input.value);
    $("search").value = filters.search.join(", ");
    $("id-prefix").value = filters.id;
    $("order").value = filters.order;
    // (a workflow page's link to all its children: Clear shows every workflow again)
    $("parent-filter").hidden = !filters.parent;
    $("parent-pid").textContent = visible(filters.parent);
    if (caps.hosts.length > 1) $("host").value = filters.host;
  }
  showFilters();
  restoreTyped();  // (a search typed, not yet applied, before a login)

  function query(after) {
    const q = new URLSearchParams();
    for (const s of filters.status) q.append("status", s);
    for (const s of filters.search) q.append("search", s);
    if (filters.id) q.set("id", filters.id);
    if (filters.parent) q.set("parent", filters.parent);
    if (filters.order !== "newest") q.set("order", filters.order);
    if (filters.host && filters.host !== caps.host) q.set("host", filters.host);
    if (after) q.set("after", after);
    return q;
  }

  // the address of the filters and page shown
  function address() {
    const q = query(cursors[cursors.length - 1]).toString();
    return q ? "/?" + q : "/";
  }
  // a page move, or new filters: an entry of the browser's history (Back shows the
  // page before again, see popstate below), history.state the pages before it
  function moved() {
    const to = address();
    const state = { cursors: [...cursors] };
    if (to === location.pathname + location.search) history.replaceState(state, "", to);
    else history.pushState(state, "", to);
    turn();
  }
  // Until the page or filters moved to are answered, Next holds the cursor of the page
  // still shown: a second click (a double click, two on a slow server) moved from that
  // one again, "page 3" over page 2's rows. The pager waits for the answer.
  let turning = false;
  function turn() {
    if (sessionOver) {  // (no answer would come: the page moved to is the login's next)
      keepTyped(null);
      location.assign(loginHere());
      return;
    }
    turning = true;
    for (const id of ["first-page", "prev-page", "next-page"]) $(id).disabled = true;
    poll.now();
  }
  function pager(next) {
    turning = false;
    $("next-page").disabled = !next;
    $("next-page").dataset.next = next || "";
    $("prev-page").disabled = cursors.length < 2;
    $("first-page").disabled = cursors.length < 2 && cursors[0] === null;
  }

  // the query whose rows the table shows: a page or filter seen before answers 304
  // (unchanged since then), and its rows are drawn again from that earlier answer
  let shown = null;
  // the number of the last load: the answer to an earlier one (a slow poll of the page
  // before a click on Next) comes too late and is not drawn over a later one's
  let asked = 0;
  async function load() {
    const ticket = ++asked;
    const q = query(cursors[cursors.length - 1]).toString();
    let answer;
    try {
      answer = await api("/api/workflows?" + q, { poll: true });
    } catch (e) {
      if (ticket !== asked) return;
      if (e.expired) {  // (the rows stay, under the banner; the pager is not held)
        if (turning) pager($("next-page").dataset.next);
        throw e;
      }
      // no answer at all (a network blip): the rows shown, if they are this query's,
      // stay under a mark until the next answer (a poll asks again)
      $("list-offline").hidden = !e.offline;
      if (e.offline && shown === q) { pager($("next-page").dataset.next); throw e; }
      $("list-error").textContent = visible(e.message);
      $("list-error").hidden = false;
      // the rows shown are another query's (a search refused, a page that got no
      // answer) or the node's last answer (it has stopped): none under this query's
      // filters and page
      fill($("rows"));
      rendered.delete("rows");
      shown = null;
      $("empty").hidden = true;
      pager(null);
      throw e;
    }
    if (ticket !== asked) return;
    $("list-error").hidden = true;
    $("list-offline").hidden = true;
    const data = answer.data;
    const drawn = shown === q;
    shown = q;
    if (answer.changed || !drawn) renderIfChanged("rows", data, () => {
      fill($("rows"), data.workflows.map((w) => el("tr", { "data-id": w.workflow_id },
        el("td", {}, workflowLink(w.workflow_id, w.host)),
        el("td", { class: "name" }, w.name),
        el("td", {}, statusBadge(w.status)),
        el("td", {}, when(w.created)),
        el("td", {}, when(w.updated)),
        el("td", { class: "mono", title: short(w.search, 1000) }, short(w.search, 60)))));
    });
    $("empty").hidden = data.workflows.length > 0;
    pager(data.next);
    $("page-label").textContent = cursors[0] === null ? "page " + cursors.length :
      cursors.length > 1 ? "a later page" : "a later page (opened by its address: First page goes back)";
  }

  const poll = poller(load, 2000);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filters.status = [...box.querySelectorAll("input:checked")].map((i) => i.value);
    const text = $("search").value.trim();
    filters.search = searchTerms(text);
    filters.id = $("id-prefix").value.trim();
    filters.order = $("order").value;
    if (caps.hosts.length > 1) filters.host = $("host").value;
    firstPage();
    moved();
  });
  $("clear").addEventListener("click", () => {
    for (const input of box.querySelectorAll("input")) input.checked = false;
    $("search").value = "";
    $("id-prefix").value = "";
    $("order").value = "newest";
    filters.parent = "";
    $("parent-filter").hidden = true;
    $("apply").click();
  });
  $("next-page").addEventListener("click", () => {
    const next = $("next-page").dataset.next;
    if (next && !turning) { cursors.push(next); moved(); }
  });
  $("prev-page").addEventListener("click", () => {
    if (cursors.length > 1 && !turning) { cursors.pop(); moved(); }
  });
  $("first-page").addEventListener("click", () => { if (!turning) { firstPage(); moved(); } });
  window.addEventListener("popstate", () => { fromAddress(); showFilters(); turn(); });
  history.replaceState({ cursors: [...cursors] }, "", address());
  poll.start();
}

// ------------------------------------------------------------------ confirmations
// ``undone``: what was not done should the session have ended ("the signal ... was not
// sent; send it again"), said after the login
let pendingAction = null;
// what had the focus when the confirmation was asked (the button, or the box where
// Enter was pressed): it gets it back once the box closes, if it is still shown
let asker = null;
function confirmAction(text, action, undone) {
  pendingAction = { action, undone };
  asker = document.activeElement;
  $("confirm-text").textContent = visible(text);
  $("confirm").hidden = false;
  $("confirm-yes").focus();
}

// the focus back where it was before the confirmation, else (that button is gone with
// the refresh: a promise resolved) on the page's heading, which shows the new status;
// never lost on the page's body
function focusBack() {
  const to = asker && asker.isConnected && asker.getClientRects().length ? asker : $("wf-title");
  asker = null;
  if (to) to.focus();
}

function setupConfirm(afterAction) {
  $("confirm-no").addEventListener("click", () => {
    pendingAction = null;
    $("confirm").hidden = true;
    focusBack();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("confirm").hidden) $("confirm-no").click();
  });
  $("confirm-yes").addEventListener("click", async () => {
    const pending = pendingAction;
    pendingAction = null;
    $("confirm").hidden = true;
    if (!pending) return;
    try {
      toast(await pending.action(), false);
    } catch (e) {
      if (e.expired) {
        // refused, not done: the login page and the page after it say so, and what
        // was typed comes back
        keepTyped(`Your console session had ended: ${pending.undone}.`);
        location.assign(loginHere());
        return;
      }
      toast(e.message, true);
    }
    await afterAction();
    focusBack();
  });
}

// The JSON text the user typed (empty: null), to be sent as typed: read back and
// written again, 12345678901234567890 would be sent rounded, 1e400 as null, and a key
// given twice once, where the API refuses the last two. Only checked here, so that
// what is no JSON at all is said before it is confirmed.
function typedJson(text, what) {
  const typed = text.trim() === "" ? "null" : text;
  try {
    JSON.parse(typed);
  } catch (e) {
    throw new Error(what + " must be JSON (e.g. {\"ok\": true} or \"text\"): " + e.message);
  }
  return typed;
}

// ------------------------------------------------------------------ one workflow
async function workflowPage() {
  const wid = document.body.dataset.workflowId;
  const host = new URLSearchParams(location.search).get("host") || "";
  const caps = await api("/api/capabilities");
  HOSTS = caps.hosts;
  const path = "/api/workflows/" + segment(wid);
  const url = (suffix) => host ? path + suffix + "?host=" + encodeURIComponent(host) : path + suffix;
  const base = url("");
  let poll = null;
  // the value box of each promise that can be resolved, by name: kept through a redraw
  const promiseBoxes = new Map();

  function counted(id, shown, total, what) {
    $(id).textContent = total > shown ? `(the first ${shown} of ${total} ${what})` :
      total ? `(${total})` : "";
  }

  function fact(name, value) {
    return [el("dt", {}, name), el("dd", {}, value)];
  }

  function render(d) {
    const w = d.workflow;
    $("wf").hidden = false;
    fill($("wf-status"), statusBadge(w.status));
    renderIfChanged("facts", w, () => {
      fill($("wf-facts"),
        fact("name", w.name), fact("status", statusBadge(w.status)), fact("pid", w.pid),
        caps.hosts.length > 1 ? fact("host", w.host) : [],
        // (a cluster's store: the node that runs it now, where a takeover moved it)
        w.node ? fact("node", w.node) : [],
        // (pending: why it waits, where: its queue, what holds it there)
        w.queue ? fact("waiting", el("span", { id: "wf-queue" }, w.queue.reason)) : [],
        fact("created", when(w.created)), fact("updated", when(w.updated)),
        fact("run", w.run_id || ""), fact("attempt", String(w.attempt)),
        fact("cancel requested", w.cancel_requested ? "yes" : "no"),
        fact("search attributes", el("code", {}, json(w.search))),
        fact("memo", el("code", {}, json(w.memo))));
      $("wf-input").textContent = visible(json(w.input, 2));
      const tb = $("wf-traceback");
      tb.hidden = true;
      $("result-card").classList.toggle("failed", !!w.error);
      if (w.status === "completed") {
        $("result-title").textContent = "Result";
        $("wf-result").textContent = visible(json(w.result, 2));
      } else if (w.error) {
        $("result-title").textContent = w.status === "blocked" ? "Blocked by" : "Error";
        $("wf-result").textContent = visible(w.error.type + ": " + w.error.message);
        if (w.error.traceback) { tb.textContent = visible(w.error.traceback); tb.hidden = false; }
      } else if (w.status === "cancelled") {
        $("result-title").textContent = "Result";
        $("wf-result").textContent = "cancelled";
      } else {
        $("result-title").textContent = "Result";
        $("wf-result").textContent = "(not finished)";
      }
    });
    renderIfChanged("actions", [d.actions, caps.retry], () => {
      $("signal-form").hidden = !d.actions.signal;
      $("cancel-button").hidden = !d.actions.cancel;
      $("retry-button").hidden = !(caps.retry && d.actions.retry);
      // a retry that would replay to the same failure: said before it is asked
      const note = caps.retry && d.actions.retry ? d.actions.retry_note : null;
      $("retry-note").textContent = note ? visible(note) : "";
      $("retry-note").hidden = !note;
      $("no-actions").hidden = d.actions.signal || d.actions.cancel ||
        (caps.retry && d.actions.retry);
    });
    renderIfChanged("promises", [d.promises, d.actions.resolve], () => {
      // drawn again when another promise changed: what was typed into a box stays (the
      // box itself is kept, by promise name), and so does the focus
      const focused = document.activeElement;
      const row = $("promises").contains(focused) ? focused.closest("tr[data-promise]") : null;
      const refocus = row && { name: row.dataset.promise, part: focused.classList[0],
                               range: focused === promiseBoxes.get(row.dataset.promise) ?
                                 [focused.selectionStart, focused.selectionEnd, focused.selectionDirection] : null };
      for (const name of promiseBoxes.keys()) {
        if (!d.actions.resolve.includes(name)) promiseBoxes.delete(name);
      }
      fill($("promises"), d.promises.map((p) => {
        const cells = [
          el("td", { class: "mono" }, p.name), el("td", {}, statusBadge(p.status)),
          el("td", { class: "mono" }, p.status === "rejected" ? p.error :
            p.status === "resolved" ? json(p.value) : ""),
          el("td", {}, when(p.created)), el("td", {}, when(p.completed))];
        const actions = el("td", { class: "promise-actions" });
        if (d.actions.resolve.includes(p.name)) {
          const input = promiseBoxes.get(p.name) || el("input", {
            class: "promise-value", placeholder: "value (JSON) or rejection message",
            "aria-label": "value for promise " + p.name });
          promiseBoxes.set(p.name, input);
          if (typeof typedPromises[p.name] === "string") {  // (typed before a login)
            input.value = typedPromises[p.name];
            delete typedPromises[p.name];
          }
          const resolve = el("button", { type: "button", class: "resolve" }, "Resolve…");
          const reject = el("button", { type: "button", class: "reject danger" }, "Reject…");
          resolve.addEventListener("click", () => {
            let value;
            try { value = typedJson(input.value, "the value"); } catch (e) { toast(e.message, true); return; }
            confirmAction(`Resolve promise ${JSON.stringify(p.name)} of ${wid} with ${value.trim()}?`,
              async () => {
                await api(url(`/promises/${segment(p.name)}/resolve`), { body: `{"value": ${value}}` });
                return `promise ${p.name} resolved`;
              }, `promise ${JSON.stringify(p.name)} of workflow ${wid} was not resolved; resolve it again`);
          });
          reject.addEventListener("click", () => {
            // (the message as typed, as the API and `garrison workflows reject` take it;
            // one of spaces only is taken for a field left empty)
            const message = input.value;
            if (!message.trim()) { toast("write the rejection message first", true); return; }
            confirmAction(`Reject promise ${JSON.stringify(p.name)} of ${wid} with the message ${JSON.stringify(message)}?`,
              async () => {
                await api(url(`/promises/${segment(p.name)}/reject`), { body: { message } });
                return `promise ${p.name} rejected`;
              }, `promise ${JSON.stringify(p.name)} of workflow ${wid} was not rejected; reject it again`);
          });
          // Enter in the box asks as Resolve… does (set at each drawing: the button is new)
          input.onkeydown = (event) => {
            if (event.key === "Enter") { event.preventDefault(); resolve.click(); }
          };
          actions.append(input, resolve, reject);
        }
        return el("tr", { "data-promise": p.name }, cells, actions);
      }));
      if (!d.promises.length) fill($("promises"), el("tr", {}, el("td", { colspan: 6, class: "none" }, "none")));
      const again = refocus && [...$("promises").rows].find((r) => r.dataset.promise === refocus.name);
      const part = again && again.querySelector("." + refocus.part);
      if (part) {
        part.focus();
        if (refocus.range) part.setSelectionRange(...refocus.range);
      }
      counted("promise-count", d.promises.length, d.promises_total, "promises, the pending ones first");
    });
    renderIfChanged("state", [d.state, d.state_total], () => {
      const keys = Object.keys(d.state);
      counted("state-count", keys.length, d.state_total, "keys");
      fill($("state"), keys.length ? keys.map((k) => fact(k, el("code", {}, json(d.state[k])))) :
        el("dd", { class: "none" }, "none"));
    });
    renderIfChanged("timers", d.timers, () => {
      fill($("timers"), d.timers.length ? d.timers.map((t) =>
        el("li", {}, `${t.kind} (operation ${t.seq}): fires at ${when(t.deadline)}`)) : el("li", { class: "none" }, "none"));
    });
    renderIfChanged("inbox", [d.inbox, d.inbox_total, FINAL.has(w.status)], () => {
      // after the end, what is left was never received (e.g. a late child's EXIT)
      $("inbox-title").textContent = FINAL.has(w.status) ?
        "Inbox (never received: the workflow had finished)" : "Inbox (not yet received)";
      counted("inbox-count", d.inbox.length, d.inbox_total, "messages");
      fill($("inbox"), d.inbox.length ? d.inbox.map((m) => el("tr", {},
        el("td", { class: "mono" }, m.topic), el("td", {}, m.kind),
        el("td", { class: "mono" }, short(m.payload, 200)), el("td", {}, m.sender || "outside"),
        el("td", {}, when(m.created)))) : el("tr", {}, el("td", { colspan: 5, class: "none" }, "empty")));
    });
    renderIfChanged("family", [d.parent, d.children, d.children_total], () => {
      fill($("parent"), !d.parent ? el("span", { class: "none" }, "none (started from outside)") :
        d.parent.workflow_id ? workflowLink(d.parent.workflow_id, d.parent.host) :
        el("span", { class: "mono" }, d.parent.pid));
      fill($("children"), d.children.length ? d.children.map((c) =>
        el("li", { "data-child": c.workflow_id }, workflowLink(c.workflow_id, c.host), " ",
           statusBadge(c.status), " ", el("span", { class: "name" }, c.name))) :
        el("li", { class: "none" }, "none"));
      // more children than listed: how many, and all of them in the list's pages
      const more = d.children_total > d.children.length;
      $("children-count").textContent = more ?
        `(${count(d.children.length)} of ${count(d.children_total)} children shown)` :
        d.children_total ? `(${count(d.children_total)})` : "";
      $("children-more").hidden = !more;
      if (more) {
        fill($("children-more"), el("a", { id: "children-all",
          href: withHost("/?" + new URLSearchParams({ parent: w.pid, order: "oldest" }), w.host) },
          `all ${count(d.children_total)} children, in the workflow list`));
      }
    });
    renderIfChanged("journal", [d.journal, d.journal_records], () => {
      $("journal-count").textContent = d.journal_truncated ?
        `(the last ${d.journal.length} of ${d.journal_records} records)` : `(${d.journal_records} records)`;
      fill($("journal"), d.journal.length ? d.journal.map((r) => el("li", { class: r.ok ? "ok" : "err", "data-seq": r.seq },
        el("span", { class: "seq" }, "#" + r.seq),
        el("span", { class: "kind" }, r.kind),
        el("span", { class: "op-name mono" }, r.name),
        r.attempts > 1 ? el("span", { class: "attempts" }, r.attempts + " attempts") : null,
        el("time", {}, when(r.time)),
        el("code", { class: "outcome", title: short(r.outcome, 4000) }, short(r.outcome, 300)))) :
        el("li", { class: "none" }, "no records yet"));
    });
    // Finished: poll slowly, for a child that still runs (its status is shown) and a
    // failed workflow or child that a retry elsewhere runs again (the page said failed,
    // and offered Retry…, for ever); completed or cancelled, children too: nothing
    // here changes any more.
    if (poll) {
      if (ENDED.has(w.status) && d.children_total === d.children.length &&
          d.children.every((c) => ENDED.has(c.status))) poll.stop();
      else poll.interval(FINAL.has(w.status) ? 5000 : 1000);
    }
  }

  async function load() {
    try {
      const answer = await api(base, { poll: true });
      if (answer.changed) render(answer.data);
      $("wf-error-load").hidden = true;
    } catch (e) {
      if (e.expired) throw e;
      $("wf-error-load").textContent = visible(e.message);
      $("wf-error-load").hidden = false;
      // no such workflow: nothing to poll for (it asked every second, for ever)
      if (e.status === 404) poll.stop();
      throw e;
    }
  }

  poll = poller(load, 1000);
  restoreTyped();  // (the signal's fields; a promise's value as its row is drawn)
  setupConfirm(() => poll.now());
  $("signal-form").addEventListener("submit", (event) => {
    event.preventDefault();
    // sent as typed: a topic is any non-empty text, spaces at its ends too (" a b "
    // trimmed to "a b" reached no one who listens for " a b "); an empty one the
    // field's "required" refuses before this
    const topic = $("signal-topic").value;
    let payload;
    try { payload = typedJson($("signal-payload").value, "the payload"); } catch (e) { toast(e.message, true); return; }
    confirmAction(`Send signal ${JSON.stringify(topic)} with ${payload.trim()} to ${wid}?`, async () => {
      await api(url("/signal"), { body: `{"topic": ${JSON.stringify(topic)}, "payload": ${payload}}` });
      return `signal ${topic} sent`;
    }, `the signal ${JSON.stringify(topic)} to workflow ${wid} was not sent; send it again`);
  });
  $("cancel-button").addEventListener("click", () => {
    confirmAction(`Cancel workflow ${wid}? It sees WorkflowCancelled at its next durable step.`, async () => {
      await api(url("/cancel"), { body: {} });
      return "cancel requested";
    }, `workflow ${wid} was not cancelled (no cancel was requested); cancel it again`);
  });
  $("retry-button").addEventListener("click", () => {
    confirmAction(`Retry workflow ${wid} by replay from its journal? Its recorded steps ` +
                  "do not run again.", async () => {
      const done = await api(url("/retry"), { body: {} });
      return "retry started: " + done.retry;
    }, `workflow ${wid} was not retried; retry it again`);
  });
  poll.start();
}

// ------------------------------------------------------------------ the node
async function nodePage() {
  HOSTS = (await api("/api/capabilities")).hosts;  // (a workflow's link names its host)
  function branch(items) {
    return items.map((p) => el("li", {},
      el("span", { class: "label" }, p.label || "(process)"), " ",
      el("span", { class: "mono pid" }, p.pid),
      p.service ? el("span", { class: "service" }, "service " + p.service) : null,
      p.queued ? el("span", { class: "queued" }, p.queued + " queued") : null,
      p.children.length ? el("ul", {}, branch(p.children)) : null));
  }

  // a statistic: a number or text, or (workflow queues, schedules) per host a few
  // figures: "app:orders: 2 pending, 3 running, max concurrent 5"
  function statValue(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v !== "object" || v instanceof Digits) return String(v);
    const entries = Object.entries(v);
    if (!entries.length) return "—";
    return el("ul", { class: "stat-list" }, entries.map(([k, x]) =>
      el("li", {}, el("span", { class: "mono" }, k), ": ",
         x !== null && typeof x === "object" && !(x instanceof Digits) ?
           Object.entries(x).map(([n, y]) => `${n.replaceAll("_", " ")} ${y === null ? "—" : typeof y === "object" ? json(y) : y}`).join(", ") :
           String(x))));
  }

  async function load() {
    let answer;
    try {
      answer = await api("/api/node", { poll: true });
      $("node-error").hidden = true;
    } catch (e) {
      if (e.expired) throw e;
      $("node-error").textContent = visible(e.message);
      $("node-error").hidden = false;
      throw e;
    }
    if (!answer.changed) return;
    const d = answer.data;
    renderIfChanged("stats", d.stats, () => {
      // (each name and value together: they wrap as a pair in the card's width)
      fill($("stats"), Object.entries(d.stats).map(([k, v]) => el("div", { class: "stat" },
        el("dt", {}, k.replaceAll("_", " ")), el("dd", { "data-stat": k }, statValue(v)))));
    });
    renderIfChanged("services", d.services, () => {
      fill($("services"), d.services.length ? d.services.map((s) => el("tr", { "data-service": s.id },
        el("td", { class: "mono" }, s.id), el("td", {}, statusBadge(s.status)),
        el("td", { class: "mono" }, s.pid || ""), el("td", { class: "restarts" }, String(s.restarts)),
        el("td", { class: "mono" }, s.last_error || ""))) :
        el("tr", {}, el("td", { colspan: 5, class: "none" }, "no services in the config")));
    });
    renderIfChanged("tree", d.tree, () => fill($("tree"), branch(d.tree)));
    renderIfChanged("processes", d.processes, () => {
      $("process-count").textContent = d.processes_total > d.processes.length ?
        `(${d.processes.length} of ${d.processes_total})` : `(${d.processes_total})`;
      // a workflow running or parked here: its pid links to its page, as in the list
      fill($("processes"), d.processes.map((p) => el("tr", {},
        el("td", { class: "mono" }, p.workflow_id ? workflowLink(p.workflow_id, p.host, p.pid) : p.pid),
        el("td", {}, p.label),
        el("td", { class: "mono" }, p.parent || ""), el("td", {}, String(p.queued)),
        el("td", {}, String(p.events)), el("td", { class: "mono" }, p.names.join(", ")),
        el("td", {}, String(p.links.length)), el("td", {}, String(p.monitors.length)))));
    });
  }

  poller(load, 1000).start();
}

// ------------------------------------------------------------------ start
document.addEventListener("DOMContentLoaded", () => {
  const logout = $("logout");
  if (logout) logout.addEventListener("click", async () => {
    try {
      await api("/api/logout", { body: {} });
      location.assign("/login");
    } catch (e) {
      if (e.expired) location.assign("/login");  // (no session left to end)
      else toast(e.message, true);
    }
  });
  afterLogin();
  const pages = { list: listPage, workflow: workflowPage, node: nodePage };
  const page = pages[document.body.dataset.page];
  if (page) page().catch((e) => toast(e.message, true));
});
