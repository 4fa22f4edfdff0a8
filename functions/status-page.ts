import { createHash } from "node:crypto";
import { Hono } from "hono";
import type { AppEnv } from "./env.ts";

/**
 * A self-contained status page at "/". The page itself is public (it holds no data); everything it
 * shows comes from the authenticated JSON APIs, fetched by the browser with the key the operator
 * types in. Nothing is loaded from another origin, so it works on machines with no internet.
 *
 * The key lives only in this tab's sessionStorage and travels only in the Authorization header: the
 * key input has no name attribute, so even a form submitted without JavaScript cannot put it in a URL.
 * Everything from the server is inserted with textContent, never parsed as HTML.
 */

const STYLE = `
:root{color-scheme:light;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg2:#f6f8fa;--ok:#116329;--warn:#7d4e00;--bad:#a40e26;--info:#0a4b9c}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,sans-serif;color:var(--fg);max-width:64rem;margin:1.5rem auto;padding:0 1rem}
header{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:.5rem 1rem;border-bottom:1px solid var(--line);padding-bottom:.5rem}
h1{font-size:1.5rem;margin:0}
h2{font-size:1.1rem;margin:0 0 .5rem}
.meta{color:var(--muted);margin:0}
button{font:inherit;padding:.3rem .8rem;border:1px solid var(--line);border-radius:6px;background:var(--bg2);cursor:pointer}
button:hover{background:#eaeef2}
:focus-visible{outline:3px solid #0969da;outline-offset:2px}
#message{padding:.6rem .9rem;border-radius:6px;border:1px solid #ffb8c0;background:#ffebe9;color:var(--bad);margin:1rem 0}
#message.info{border-color:#b6d4fe;background:#ddf4ff;color:var(--info)}
#auth{border:1px solid var(--line);border-radius:6px;padding:1rem;margin:1rem 0;max-width:36rem}
#auth p{margin:.2rem 0 .8rem}
#auth label{display:block;font-weight:600;margin-bottom:.2rem}
#auth input{font:inherit;padding:.35rem .5rem;border:1px solid #8c959f;border-radius:6px;width:100%;max-width:24rem;margin-right:.5rem}
.summary{font-weight:600;margin:1rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(24rem,1fr));gap:1rem}
section.card{border:1px solid var(--line);border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.grid section.card{margin:0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}
dt{color:var(--muted)}
dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
caption{text-align:left;color:var(--muted);padding:.2rem 0}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg2);font-weight:600}
td.num,th.num{text-align:right}
td.empty{color:var(--muted);font-style:italic}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;border:1px solid currentColor;font-size:.85rem;font-weight:600}
.s-succeeded,.s-ready,.s-yes{color:var(--ok)}
.s-running,.s-loading{color:var(--info)}
.s-queued,.s-canceled{color:var(--warn)}
.s-failed,.s-no{color:var(--bad)}
progress{width:5rem;height:.7rem;vertical-align:middle;margin-right:.4rem}
meter{width:8rem;vertical-align:middle;margin-left:.5rem}
[hidden]{display:none!important}
`;

const SCRIPT = `
(() => {
  "use strict";
  const STORAGE_KEY = "slotscribe.apiKey";
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);

  // sessionStorage can be unavailable (blocked storage); the key then lives only in this page.
  let memoryKey = "";
  const readKey = () => { try { return sessionStorage.getItem(STORAGE_KEY) || ""; } catch { return memoryKey; } };
  const writeKey = (key) => { memoryKey = key; try { key ? sessionStorage.setItem(STORAGE_KEY, key) : sessionStorage.removeItem(STORAGE_KEY); } catch {} };

  // Bumped on every sign-in and sign-out so an answer to an older request is dropped, not shown.
  let generation = 0;
  let timer = 0;

  class Unauthorized extends Error {}

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }
  function setText(id, text) {
    const node = $(id);
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }
  function badge(text) { return el("span", text, "badge s-" + String(text).replace(/[^a-z]/gi, "")); }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }
  function seconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60), rest = Math.round(s % 60);
    return m < 60 ? m + " min " + String(rest).padStart(2, "0") + " s" : Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }
  function when(iso) {
    const t = el("time", new Date(iso).toLocaleString());
    t.dateTime = iso;
    return t;
  }
  function emptyRow(tbody, columns, text) {
    const td = el("td", text, "empty");
    td.colSpan = columns;
    const tr = el("tr");
    tr.append(td);
    tbody.replaceChildren(tr);
  }

  function showMessage(text, kind) {
    const box = $("message");
    box.className = kind === "info" ? "info" : "";
    box.textContent = text;
    box.hidden = !text;
  }
  function showAuth(message, kind) {
    $("auth").hidden = false;
    $("data").hidden = true;
    $("signout").hidden = true;
    // Data fetched with a key that is gone must not stay on screen.
    for (const id of ["jobs-body", "holders-body", "models-body"]) $(id).replaceChildren();
    showMessage(message, kind);
    $("key").focus();
  }

  async function getJson(path, key, acceptStatus) {
    const headers = key ? { authorization: "Bearer " + key } : {};
    const res = await fetch(path, { headers, cache: "no-store" });
    if (res.status === 401) throw new Unauthorized();
    let body = null;
    try { body = await res.json(); } catch {}
    if (!res.ok && !(acceptStatus === res.status && body)) {
      const detail = body && body.error && body.error.message ? ": " + body.error.message : "";
      throw new Error(path + " answered HTTP " + res.status + detail);
    }
    return body;
  }

  function renderCapacity(cap) {
    const i = cap.instance, c = cap.cluster;
    setText("plan-instance", i.id);
    setText("plan-role", i.role === "api" ? "api (transcribes nothing: jobs and audio requests go to the workers)" : i.role);
    setText("plan-memory", bytes(i.memoryBytes) + " (from " + i.memorySource + ")");
    setText("plan-cpus", i.cpus + " (from " + i.cpuSource + ")");
    setText("plan-slots", i.slots);
    setText("plan-threads", i.threads);
    setText("plan-limited", i.limitedBy);
    setText("use-slots", i.windows.inUse + " / " + i.slots);
    const meter = $("use-meter");
    meter.max = Math.max(1, i.slots);
    meter.value = i.windows.inUse;
    setText("use-windows-queued", i.windows.queued);
    setText("use-transcriptions", i.transcriptions.active + " active of " + i.transcriptions.limit + ", " + i.transcriptions.queued + " queued");
    setText("cluster-store", c.store);
    setText("cluster-cap", c.cap === null ? "not set (this instance only)" : c.cap);
    setText("cluster-held", c.held);
    setText("cluster-free", c.free === null ? "—" : c.free);
    const tbody = $("holders-body");
    if (c.instances.length === 0) return emptyRow(tbody, 3, "No instance holds a slot.");
    tbody.replaceChildren(...c.instances.map((h) => {
      const tr = el("tr");
      const jobs = el("td");
      h.jobs.forEach((id, n) => { if (n) jobs.append(", "); jobs.append(el("code", id)); });
      tr.append(el("td", h.instance), el("td", h.held, "num"), jobs);
      return tr;
    }));
  }

  function renderReadiness(r) {
    const ready = $("ready");
    ready.replaceChildren(badge(r.ready ? "yes" : "no"));
    const tbody = $("models-body");
    if (r.role === "api") {
      setText("ready-queue", "none on this instance");
      return emptyRow(tbody, 4, "None: this instance loads no model.");
    }
    setText("ready-queue", r.capacity.queued + " queued of " + r.capacity.queueSize + " allowed");
    if (r.models.length === 0) return emptyRow(tbody, 4, "No model loaded yet.");
    tbody.replaceChildren(...r.models.map((m) => {
      const tr = el("tr");
      const state = el("td");
      state.append(badge(m.state));
      tr.append(el("td", m.id), el("td", m.dtype), state, el("td", m.error || ""));
      return tr;
    }));
  }

  function progressOf(job) {
    if (job.status === "succeeded") return 100;
    const total = job.progress.total_seconds;
    if (!total) return null;
    return Math.min(100, Math.floor((job.progress.done_seconds / total) * 100));
  }
  function durationOf(job, now) {
    if (!job.started_at) return null;
    const end = job.finished_at ? Date.parse(job.finished_at) : now;
    return Math.max(0, (end - Date.parse(job.started_at)) / 1000);
  }

  function renderJobs(list) {
    const tbody = $("jobs-body");
    if (list.data.length === 0) return emptyRow(tbody, 6, "No jobs yet.");
    const now = Date.now();
    tbody.replaceChildren(...list.data.map((job) => {
      const tr = el("tr");
      tr.dataset.jobId = job.id;
      const id = el("td");
      id.append(el("code", job.id));
      const status = el("td");
      status.append(badge(job.status));
      if (job.error) status.append(" ", el("span", job.error.message));
      const pct = progressOf(job);
      const progress = el("td", null, "num progress");
      if (pct !== null) {
        const bar = el("progress");
        bar.max = 100;
        bar.value = pct;
        bar.setAttribute("aria-hidden", "true");
        progress.append(bar);
      }
      progress.append(pct === null ? "—" : pct + "%");
      const created = el("td");
      created.append(when(job.created_at));
      tr.append(id, status, progress, el("td", seconds(job.progress.total_seconds), "num"), created, el("td", seconds(durationOf(job, now)), "num"));
      return tr;
    }));
  }

  function renderSummary(cap, r, list) {
    const i = cap.instance;
    const running = list.data.filter((j) => j.status === "running").length;
    const queued = list.data.filter((j) => j.status === "queued").length;
    // A polite live region is announced only when its text changes, so an unchanged state stays quiet.
    setText("summary",
      (r.ready ? "Ready" : "Not ready") + ". " + i.windows.inUse + " of " + i.slots + " slots in use, " + i.windows.queued + " windows queued. " +
      running + " job" + (running === 1 ? "" : "s") + " running, " + queued + " queued.");
  }

  async function refresh() {
    const mine = generation;
    const key = readKey();
    clearTimeout(timer);
    try {
      const [cap, ready, jobs] = await Promise.all([
        getJson("/v1/capacity", key),
        getJson("/readyz", key, 503), // 503 still carries the readiness body
        getJson("/v1/jobs?limit=10", key),
      ]);
      if (mine !== generation) return;
      renderCapacity(cap);
      renderReadiness(ready);
      renderJobs(jobs);
      renderSummary(cap, ready, jobs);
      const now = new Date();
      const updated = $("updated");
      updated.dateTime = now.toISOString();
      updated.textContent = now.toLocaleTimeString();
      $("data").hidden = false;
      $("auth").hidden = true;
      $("signout").hidden = !key;
      showMessage("");
    } catch (err) {
      if (mine !== generation) return;
      if (err instanceof Unauthorized) {
        writeKey("");
        generation++;
        showAuth(key
          ? "The API key was not accepted (401 Unauthorized). Check it and enter it again."
          : "This server needs an API key (401 Unauthorized). Enter one to see its status.", key ? "error" : "info");
        return;
      }
      showMessage("Could not refresh: " + (err && err.message ? err.message : String(err)) + ". Retrying every 2 s.");
    }
    // Two refreshes can overlap (a timer and a tab coming back); only one loop may survive.
    clearTimeout(timer);
    timer = setTimeout(tick, REFRESH_MS);
  }

  function tick() {
    // A hidden tab need not poll the server; it catches up when it is shown again.
    if (document.hidden) timer = setTimeout(tick, REFRESH_MS);
    else refresh();
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden && !$("data").hidden) refresh(); });

  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("key");
    const key = input.value.trim();
    if (!key) { showMessage("Enter an API key first."); input.focus(); return; }
    input.value = "";
    writeKey(key);
    generation++;
    showMessage("Checking the key…", "info");
    refresh();
  });

  $("signout").addEventListener("click", () => {
    writeKey("");
    generation++;
    clearTimeout(timer);
    showAuth("Signed out: the key was removed from this tab.", "info");
  });

  refresh();
})();
`;

const BODY = `
<header>
  <h1>slotscribe status</h1>
  <p class="meta">Last updated: <time id="updated">not yet</time> · refreshes every 2 s
    <button id="signout" type="button" hidden>Sign out</button></p>
</header>
<noscript><p>This page needs JavaScript: it fetches the status from the JSON API.</p></noscript>
<p id="message" role="alert" hidden></p>
<section id="auth" aria-labelledby="auth-title" hidden>
  <h2 id="auth-title">Sign in</h2>
  <p>The key is kept only in this browser tab (session storage) and is sent only in the Authorization header.</p>
  <form id="auth-form" method="post" autocomplete="off">
    <label for="key">API key</label>
    <input id="key" type="password" autocomplete="off" spellcheck="false" autocapitalize="off" required>
    <button type="submit">Show status</button>
  </form>
</section>
<main id="data" hidden>
  <p id="summary" class="summary" role="status" aria-live="polite" aria-atomic="true"></p>
  <div class="grid">
    <section class="card" aria-labelledby="plan-title">
      <h2 id="plan-title">Capacity plan</h2>
      <dl>
        <dt>Instance</dt><dd id="plan-instance">—</dd>
        <dt>Role</dt><dd id="plan-role">—</dd>
        <dt>Memory</dt><dd id="plan-memory">—</dd>
        <dt>CPUs</dt><dd id="plan-cpus">—</dd>
        <dt>Slots</dt><dd id="plan-slots">—</dd>
        <dt>Threads per job</dt><dd id="plan-threads">—</dd>
        <dt>Limited by</dt><dd id="plan-limited">—</dd>
      </dl>
    </section>
    <section class="card" aria-labelledby="use-title">
      <h2 id="use-title">In use</h2>
      <dl>
        <dt id="use-slots-label">Slots in use</dt><dd><span id="use-slots">—</span><meter id="use-meter" min="0" max="1" value="0" aria-labelledby="use-slots-label"></meter></dd>
        <dt>Windows queued</dt><dd id="use-windows-queued">—</dd>
        <dt>Transcriptions</dt><dd id="use-transcriptions">—</dd>
      </dl>
    </section>
    <section class="card" aria-labelledby="ready-title">
      <h2 id="ready-title">Readiness</h2>
      <dl>
        <dt>Ready</dt><dd id="ready">—</dd>
        <dt>Request queue</dt><dd id="ready-queue">—</dd>
      </dl>
      <div class="scroll"><table>
        <caption>Models</caption>
        <thead><tr><th scope="col">Model</th><th scope="col">Type</th><th scope="col">State</th><th scope="col">Error</th></tr></thead>
        <tbody id="models-body"></tbody>
      </table></div>
    </section>
    <section class="card" aria-labelledby="cluster-title">
      <h2 id="cluster-title">Cluster</h2>
      <dl>
        <dt>Slot store</dt><dd id="cluster-store">—</dd>
        <dt>Cluster cap</dt><dd id="cluster-cap">—</dd>
        <dt>Held</dt><dd id="cluster-held">—</dd>
        <dt>Free</dt><dd id="cluster-free">—</dd>
      </dl>
      <div class="scroll"><table>
        <caption>Slot holders by instance</caption>
        <thead><tr><th scope="col">Instance</th><th scope="col" class="num">Held</th><th scope="col">Jobs</th></tr></thead>
        <tbody id="holders-body"></tbody>
      </table></div>
    </section>
  </div>
  <section class="card" aria-labelledby="jobs-title">
    <h2 id="jobs-title">Recent jobs</h2>
    <div class="scroll"><table id="jobs">
      <caption>The 10 newest jobs</caption>
      <thead><tr><th scope="col">ID</th><th scope="col">Status</th><th scope="col" class="num">Progress</th><th scope="col" class="num">Audio</th><th scope="col">Created</th><th scope="col" class="num">Duration</th></tr></thead>
      <tbody id="jobs-body"></tbody>
    </table></div>
  </section>
</main>
`;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>slotscribe status</title><link rel="icon" href="data:,"><style>${STYLE}</style></head>
<body>${BODY}<script>${SCRIPT}</script></body></html>`;

const sha256 = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

/**
 * Only this page's own script and style may run, and it may talk only to this origin: a page that
 * holds an API key should not be able to send it anywhere else even if something slipped past escaping.
 */
const CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

export default new Hono<AppEnv>().get("/", (c) => {
  c.header("content-security-policy", CSP);
  c.header("cache-control", "no-store");
  c.header("referrer-policy", "no-referrer");
  c.header("x-content-type-options", "nosniff");
  return c.html(PAGE);
});
