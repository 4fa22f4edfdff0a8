import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build, stop } from "esbuild";
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
 *
 * The page's code is TypeScript (status-page/client.ts), type-checked with the rest of the project,
 * and bundled here once at start-up with esbuild (a dependency tsx also uses): no build step has to
 * run before `npm start` or the tests, and the same code serves under tsx and from a tsc build, where
 * tsc has emitted client.js beside this module.
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
/* min(): a card never asks for more than the screen; min-width:0 lets a grid item shrink below its table */
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(24rem,100%),1fr));gap:1rem}
.grid>*{min-width:0}
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
/* An id is never split across lines: cut with an ellipsis when short of room, whole in the title and when copied */
.id{display:inline-block;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;vertical-align:bottom;overflow-wrap:normal}
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;border:1px solid currentColor;font-size:.85rem;font-weight:600}
.s-succeeded,.s-ready,.s-yes{color:var(--ok)}
.s-running,.s-loading{color:var(--info)}
.s-queued,.s-canceled{color:var(--warn)}
.s-failed,.s-no{color:var(--bad)}
.bar{display:inline-flex;align-items:center;gap:.4rem;white-space:nowrap}
progress{width:5rem;height:.7rem}
.pct{min-width:4ch;text-align:right}
meter{width:8rem;vertical-align:middle;margin-left:.5rem}
[hidden]{display:none!important}
.trend{display:grid;grid-template-columns:1fr auto;gap:0 .5rem;margin:.3rem 0 .6rem}
.trend svg{grid-column:1/-1;width:100%;height:2.5rem;background:var(--bg2);border-bottom:1px solid var(--line)}
.trend path{fill:none;stroke:var(--info);stroke-width:2}
.trend-value{font-variant-numeric:tabular-nums;font-weight:600}
/* Phones: a table's rows become small cards, each cell a line labelled by its column (data-label), so no column is cut off */
@media (max-width:40rem){
body{margin:1rem auto;padding:0 .75rem}
section.card{padding:.6rem .75rem}
table.stack thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
table.stack,table.stack caption,table.stack tbody,table.stack tr,table.stack td{display:block}
table.stack tr{border-bottom:1px solid var(--line);padding:.3rem 0}
table.stack td{display:flex;justify-content:space-between;align-items:baseline;gap:1rem;border:0;padding:.1rem 0;text-align:right}
table.stack td::before{content:attr(data-label);color:var(--muted);text-align:left;flex:none}
table.stack td.empty::before{content:none}
table.stack td>*{min-width:0}
}
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
        <dt>Model copies</dt><dd id="plan-copies">—</dd>
        <dt>ONNX threads per call</dt><dd id="plan-threads">—</dd>
        <dt>Limited by</dt><dd id="plan-limited">—</dd>
      </dl>
    </section>
    <section class="card" aria-labelledby="use-title">
      <h2 id="use-title">In use</h2>
      <dl>
        <dt id="use-slots-label">Slots in use</dt><dd><span id="use-slots">—</span><meter id="use-meter" min="0" max="1" value="0" aria-labelledby="use-slots-label"></meter></dd>
        <dt>Decoding batch</dt><dd id="use-batch">—</dd>
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
      <div class="scroll"><table id="models" class="stack">
        <caption>Models</caption>
        <thead><tr><th scope="col">Model</th><th scope="col">Type</th><th scope="col">State</th><th scope="col">Error</th></tr></thead>
        <tbody id="models-body"></tbody>
      </table></div>
    </section>
    <section class="card" aria-labelledby="cluster-title">
      <h2 id="cluster-title">Cluster transcriptions</h2>
      <dl>
        <dt>Lease store</dt><dd id="cluster-store">—</dd>
        <dt>At most</dt><dd id="cluster-cap">—</dd>
        <dt>Running</dt><dd id="cluster-held">—</dd>
        <dt>Room for</dt><dd id="cluster-free">—</dd>
      </dl>
      <div class="scroll"><table id="holders" class="stack">
        <caption>Running transcriptions by instance</caption>
        <thead><tr><th scope="col">Instance</th><th scope="col" class="num">Running</th><th scope="col">Jobs</th></tr></thead>
        <tbody id="holders-body"></tbody>
      </table></div>
    </section>
  </div>
  <section class="card" id="trends" aria-labelledby="trends-title">
    <h2 id="trends-title">Last 5 minutes</h2>
    <div class="trend"><span id="trend-slots-label">Slots in use</span><span class="trend-value" id="trend-slots-value">—</span>
      <svg viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-labelledby="trend-slots-label"><path id="trend-slots" vector-effect="non-scaling-stroke"/></svg></div>
    <div class="trend"><span id="trend-queued-label">Windows queued</span><span class="trend-value" id="trend-queued-value">—</span>
      <svg viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-labelledby="trend-queued-label"><path id="trend-queued" vector-effect="non-scaling-stroke"/></svg></div>
    <div class="trend"><span id="trend-rtf-label">Real-time factor (audio seconds per second)</span><span class="trend-value" id="trend-rtf-value">—</span>
      <svg viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-labelledby="trend-rtf-label"><path id="trend-rtf" vector-effect="non-scaling-stroke"/></svg></div>
  </section>
  <section class="card" aria-labelledby="jobs-title">
    <h2 id="jobs-title">Recent jobs</h2>
    <div class="scroll"><table id="jobs" class="stack">
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
<body>${BODY}<script src="/status-page.js"></script></body></html>`;

/**
 * Bundles the client once, then stops esbuild's service process, which would otherwise stay beside
 * the service for its whole life (12 MiB resident; buildSync keeps one in a thread of its own).
 */
async function bundleClient(): Promise<string> {
  const entry = ["client.ts", "client.js"].map((name) => fileURLToPath(new URL(`./status-page/${name}`, import.meta.url))).find((path) => existsSync(path));
  if (!entry) throw new Error("the status page's client module is missing next to functions/status-page");
  try {
    const { outputFiles } = await build({ entryPoints: [entry], bundle: true, format: "iife", target: "es2020", charset: "utf8", legalComments: "none", write: false });
    return outputFiles[0]!.text;
  } finally {
    await stop();
  }
}
const SCRIPT = await bundleClient();

const sha256 = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

/**
 * Only this page's own script and style may run, and it may talk only to this origin: a page that
 * holds an API key should not be able to send it anywhere else even if something slipped past escaping.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

export default new Hono<AppEnv>()
  .get("/", (c) => {
    c.header("content-security-policy", CSP);
    c.header("cache-control", "no-store");
    c.header("referrer-policy", "no-referrer");
    c.header("x-content-type-options", "nosniff");
    return c.html(PAGE);
  })
  .get("/status-page.js", (c) => {
    c.header("cache-control", "no-store");
    c.header("x-content-type-options", "nosniff");
    return c.body(SCRIPT, 200, { "content-type": "text/javascript; charset=utf-8" });
  });
