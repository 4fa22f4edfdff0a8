/**
 * The status page's code, run in the browser. It is bundled by functions/status-page.ts at start-up;
 * the API types it imports are erased, so the page follows the schemas the handlers are typed by.
 */
import type { CapacityResponse } from "../capacity.ts";
import type { JobListResponse } from "../jobs-list.ts";
import type { ReadinessResponse } from "../readyz.ts";
import { rates, stepPath, type Sample } from "./chart.ts";

type Job = JobListResponse["data"][number];

const STORAGE_KEY = "slotscribe.apiKey";
const REFRESH_MS = 2000;
const CHART_SPAN_MS = 5 * 60_000;

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node as T;
}

// sessionStorage can be unavailable (blocked storage); the key then lives only in this page.
let memoryKey = "";
function readKey(): string {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? "";
  } catch {
    return memoryKey;
  }
}
function writeKey(key: string): void {
  memoryKey = key;
  try {
    if (key) sessionStorage.setItem(STORAGE_KEY, key);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // Blocked storage: memoryKey holds it.
  }
}

// Bumped on every sign-in and sign-out so an answer to an older request is dropped, not shown.
let generation = 0;
let timer = 0;

class Unauthorized extends Error {}

/** What the chart draws, polled by this page itself: the server keeps no history. */
const history = { slots: [] as Sample[], queued: [] as Sample[], audioSeconds: [] as Sample[], capacity: 1 };

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string | number | null, className?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function setText(id: string, text: string | number): void {
  const node = $(id);
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}
function badge(text: string): HTMLSpanElement {
  return el("span", text, `badge s-${text.replace(/[^a-z]/gi, "")}`);
}
function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? String(n) : n.toFixed(1)} ${units[i]}`;
}
function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s % 60);
  return m < 60 ? `${m} min ${String(rest).padStart(2, "0")} s` : `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}
function when(iso: string): HTMLTimeElement {
  const t = el("time", new Date(iso).toLocaleString());
  t.dateTime = iso;
  return t;
}
/** An id in full, on one line: shortened with an ellipsis when the cell is narrow, whole on hover and when copied. */
function id(text: string): HTMLElement {
  const code = el("code", text, "id");
  code.title = text;
  return code;
}
/** Fills a table body; each cell is labelled with its column's heading, which narrow screens show beside it. */
function fillRows(tbody: HTMLTableSectionElement, rows: HTMLTableRowElement[]): void {
  const headings = [...(tbody.parentElement as HTMLTableElement).tHead!.rows[0]!.cells].map((th) => th.textContent ?? "");
  for (const tr of rows) [...tr.cells].forEach((td, n) => (td.dataset.label = headings[n] ?? ""));
  tbody.replaceChildren(...rows);
}
function emptyRow(tbody: HTMLElement, columns: number, text: string): void {
  const td = el("td", text, "empty");
  td.colSpan = columns;
  const tr = el("tr");
  tr.append(td);
  tbody.replaceChildren(tr);
}

function showMessage(text: string, kind?: "info" | "error"): void {
  const box = $("message");
  box.className = kind === "info" ? "info" : "";
  box.textContent = text;
  box.hidden = !text;
}
function showAuth(message: string, kind: "info" | "error"): void {
  $("auth").hidden = false;
  $("data").hidden = true;
  $("signout").hidden = true;
  // Data fetched with a key that is gone must not stay on screen.
  for (const id of ["jobs-body", "holders-body", "models-body"]) $(id).replaceChildren();
  for (const series of [history.slots, history.queued, history.audioSeconds]) series.length = 0;
  showMessage(message, kind);
  $("key").focus();
}

async function getJson<T>(path: string, key: string, acceptStatus?: number): Promise<T> {
  const headers: Record<string, string> = key ? { authorization: `Bearer ${key}` } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  if (res.status === 401) throw new Unauthorized();
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON: reported below by status.
  }
  if (!res.ok && !(acceptStatus === res.status && body)) {
    const message = (body as { error?: { message?: string } } | null)?.error?.message;
    throw new Error(`${path} answered HTTP ${res.status}${message ? `: ${message}` : ""}`);
  }
  return body as T;
}

function renderCapacity(cap: CapacityResponse): void {
  const i = cap.instance;
  const c = cap.cluster;
  $("plan-instance").replaceChildren(id(i.id));
  setText("plan-role", i.role === "api" ? "api (transcribes nothing: jobs and audio requests go to the workers)" : i.role);
  setText("plan-memory", `${bytes(i.memoryBytes)} (from ${i.memorySource})`);
  setText("plan-cpus", `${i.cpus} (from ${i.cpuSource})`);
  setText("plan-slots", i.slots);
  setText("plan-copies", i.modelCopies === 0 ? "none (this instance loads no model)" : `${i.modelCopies} of each model, shared by every slot`);
  setText("plan-threads", i.threads);
  setText("plan-limited", i.limitedBy);
  setText("use-slots", `${i.windows.inUse} / ${i.slots}`);
  const meter = $<HTMLMeterElement>("use-meter");
  meter.max = Math.max(1, i.slots);
  meter.value = i.windows.inUse;
  setText("use-batch", i.batch ? `${i.batch.rows} row${i.batch.rows === 1 ? "" : "s"} decoding now, largest batch ${i.batch.largest}` : "—");
  setText("use-windows-queued", i.windows.queued);
  const { active, limit, queued, waitingForLease } = i.transcriptions;
  setText("use-transcriptions", `${active} active of ${limit}${waitingForLease ? ` (${waitingForLease} waiting for a cluster lease)` : ""}, ${queued} queued`);
  setText("cluster-store", c.reachable ? c.store : `${c.store}: does not answer`);
  setText("cluster-cap", c.cap === null ? (c.reachable ? "not set (this instance only)" : "—") : c.cap);
  setText("cluster-held", c.held ?? "—");
  setText("cluster-free", c.free ?? "—");
  const tbody = $<HTMLTableSectionElement>("holders-body");
  if (!c.reachable) return emptyRow(tbody, 3, "The lease store does not answer: the cluster's transcriptions are unknown.");
  if (c.instances.length === 0) return emptyRow(tbody, 3, "No instance holds a slot.");
  fillRows(
    tbody,
    c.instances.map((h) => {
      const tr = el("tr");
      const instance = el("td");
      instance.append(id(h.instance));
      const jobs = el("span");
      // A job fetching its media holds no slot yet: named, but not counted in Running.
      const held: [job: string, note: string][] = [
        ...h.jobs.map((job): [string, string] => [job, ""]),
        ...h.fetching.map((job): [string, string] => [job, " (fetching its media)"]),
      ];
      held.forEach(([job, note], n) => {
        if (n) jobs.append(", ");
        jobs.append(id(job), note);
      });
      const jobsCell = el("td");
      jobsCell.append(jobs);
      tr.append(instance, el("td", h.held, "num"), jobsCell);
      return tr;
    }),
  );
}

function renderChart(cap: CapacityResponse, now: number): void {
  const i = cap.instance;
  history.capacity = Math.max(1, i.slots);
  history.slots.push({ at: now, value: i.windows.inUse });
  history.queued.push({ at: now, value: i.windows.queued });
  history.audioSeconds.push({ at: now, value: i.audioSeconds });
  // One sample before the span stays, so the line starts at the left edge instead of partway in.
  for (const series of [history.slots, history.queued, history.audioSeconds]) {
    while (series.length > 2 && series[1]!.at < now - CHART_SPAN_MS) series.shift();
  }
  const rtf = rates(history.audioSeconds);
  const draw = (id: string, samples: Sample[], max: number, value: string) => {
    $(id).setAttribute("d", stepPath(samples, now, CHART_SPAN_MS, max, 300, 40));
    setText(`${id}-value`, value);
  };
  const peak = (samples: Sample[]) => Math.max(1, ...samples.map((s) => s.value));
  draw("trend-slots", history.slots, history.capacity, `${i.windows.inUse} / ${i.slots}`);
  draw("trend-queued", history.queued, peak(history.queued), String(i.windows.queued));
  const last = rtf.at(-1);
  draw("trend-rtf", rtf, peak(rtf), last ? `${last.value.toFixed(1)}×` : "—");
  $("trends").dataset.samples = String(history.slots.length);
}

function renderReadiness(r: ReadinessResponse): void {
  $("ready").replaceChildren(badge(r.ready ? "yes" : "no"));
  const tbody = $<HTMLTableSectionElement>("models-body");
  if (r.role === "api") {
    setText("ready-queue", "none on this instance");
    return emptyRow(tbody, 4, "None: this instance loads no model.");
  }
  setText("ready-queue", `${r.capacity.queued} queued of ${r.capacity.queueSize} allowed`);
  if (r.models.length === 0) return emptyRow(tbody, 4, "No model loaded yet.");
  fillRows(
    tbody,
    r.models.map((m) => {
      const tr = el("tr");
      const model = el("td");
      model.append(id(m.id));
      const state = el("td");
      state.append(badge(m.state));
      tr.append(model, el("td", m.dtype), state, el("td", m.error ?? "—"));
      return tr;
    }),
  );
}

function progressOf(job: Job): number | null {
  if (job.status === "succeeded") return 100;
  const total = job.progress.total_seconds;
  if (!total) return null;
  return Math.min(100, Math.floor((job.progress.done_seconds / total) * 100));
}
function durationOf(job: Job, now: number): number | null {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  return Math.max(0, (end - Date.parse(job.started_at)) / 1000);
}

function renderJobs(list: JobListResponse): void {
  const tbody = $<HTMLTableSectionElement>("jobs-body");
  if (list.data.length === 0) return emptyRow(tbody, 6, "No jobs yet.");
  const now = Date.now();
  fillRows(
    tbody,
    list.data.map((job) => {
      const tr = el("tr");
      tr.dataset.jobId = job.id;
      const idCell = el("td");
      idCell.append(id(job.id));
      const status = el("span");
      status.append(badge(job.status));
      if (job.error) status.append(" ", el("span", job.error.message));
      const statusCell = el("td");
      statusCell.append(status);
      const pct = progressOf(job);
      const progress = el("td", null, "num progress");
      const bar = el("span", null, "bar");
      if (pct !== null) {
        const meter = el("progress");
        meter.max = 100;
        meter.value = pct;
        meter.setAttribute("aria-hidden", "true");
        bar.append(meter);
      }
      bar.append(el("span", pct === null ? "—" : `${pct}%`, "pct"));
      progress.append(bar);
      const created = el("td");
      created.append(when(job.created_at));
      tr.append(idCell, statusCell, progress, el("td", seconds(job.progress.total_seconds), "num"), created, el("td", seconds(durationOf(job, now)), "num"));
      return tr;
    }),
  );
}

function renderSummary(cap: CapacityResponse, r: ReadinessResponse, list: JobListResponse): void {
  const i = cap.instance;
  const running = list.data.filter((j) => j.status === "running").length;
  const queued = list.data.filter((j) => j.status === "queued").length;
  // A polite live region is announced only when its text changes, so an unchanged state stays quiet.
  setText(
    "summary",
    `${r.ready ? "Ready" : "Not ready"}. ${i.windows.inUse} of ${i.slots} slots in use, ${i.windows.queued} windows queued. ` +
      `${running} job${running === 1 ? "" : "s"} running, ${queued} queued.`,
  );
}

async function refresh(): Promise<void> {
  const mine = generation;
  const key = readKey();
  clearTimeout(timer);
  try {
    const [cap, ready, jobs] = await Promise.all([
      getJson<CapacityResponse>("/v1/capacity", key),
      getJson<ReadinessResponse>("/readyz", key, 503), // 503 still carries the readiness body
      getJson<JobListResponse>("/v1/jobs?limit=10", key),
    ]);
    if (mine !== generation) return;
    renderCapacity(cap);
    renderChart(cap, Date.now());
    renderReadiness(ready);
    renderJobs(jobs);
    renderSummary(cap, ready, jobs);
    const now = new Date();
    const updated = $<HTMLTimeElement>("updated");
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
      showAuth(
        key ? "The API key was not accepted (401 Unauthorized). Check it and enter it again." : "This server needs an API key (401 Unauthorized). Enter one to see its status.",
        key ? "error" : "info",
      );
      return;
    }
    showMessage(`Could not refresh: ${err instanceof Error ? err.message : String(err)}. Retrying every 2 s.`);
    // The figures stay for reference, but the page cannot vouch for a server it cannot see.
    $("ready").replaceChildren(badge("unknown"));
    setText("summary", `Status unknown: no answer since ${$("updated").textContent}; the figures below are from then.`);
  }
  // Two refreshes can overlap (a timer and a tab coming back); only one loop may survive.
  clearTimeout(timer);
  timer = window.setTimeout(tick, REFRESH_MS);
}

function tick(): void {
  // A hidden tab need not poll the server; it catches up when it is shown again.
  if (document.hidden) timer = window.setTimeout(tick, REFRESH_MS);
  else void refresh();
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !$("data").hidden) void refresh();
});

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("key");
  const key = input.value.trim();
  if (!key) {
    showMessage("Enter an API key first.");
    input.focus();
    return;
  }
  // fetch refuses such a header, and storing the key would only repeat its error every 2 s.
  if (/[\0\r\n]|[^\0-\xff]/.test(key)) {
    showMessage("This key cannot be sent: it holds a line break or a character outside Latin-1 (a typographic quote, say). Check it and enter it again.");
    input.focus();
    return;
  }
  input.value = "";
  writeKey(key);
  generation++;
  showMessage("Checking the key…", "info");
  void refresh();
});

$("signout").addEventListener("click", () => {
  writeKey("");
  generation++;
  clearTimeout(timer);
  showAuth("Signed out: the key was removed from this tab.", "info");
});

void refresh();
