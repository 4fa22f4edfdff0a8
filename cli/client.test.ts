import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { renderTranscript, verboseTranscript } from "../lib/formats.ts";
import { RESPONSE_FORMATS, type ResponseFormat, type Transcript } from "../lib/transcript.ts";
import type { JobView } from "../lib/jobs/view.ts";
import { ApiError, SlotscribeClient } from "./client.ts";
import { jobsCommand } from "./jobs.ts";
import { transcribeCommand } from "./transcribe.ts";
import { startCli as startCliProcess } from "../test/support/cli-process.ts";

const API_KEY = `sk-cli-${Math.random().toString(36).slice(2)}`;
const _ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

// ---- A fake slotscribe server speaking the HTTP contract the CLI is written against ----

interface Recorded {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  fields: Record<string, string>;
  file?: { name: string; size: number; bytes: Buffer };
  json?: Record<string, unknown>;
}

interface FakeJob {
  view: JobView;
  polls: number;
  transcript: Transcript;
}

const fake = {
  requests: [] as Recorded[],
  jobs: new Map<string, FakeJob>(),
  byIdempotencyKey: new Map<string, string>(),
  /** 429s to answer before serving again. */
  rateLimitNext: 0,
  /** 503s "Starting up." to answer before serving again, as a server being built or draining does. */
  unavailableNext: 0,
  /** 503s to answer as a proxy with no backend does: not the service's error JSON. */
  proxyUnavailableNext: 0,
  /** The Retry-After of those; none when empty. */
  retryAfter: "1",
  /** Creates the next job, then drops the connection before answering. */
  dropNextSubmit: false,
  requestCount: 0,
  jobCount: 0,
};

function transcriptFor(what: string): Transcript {
  const text = ` Heard ${what}.`;
  return { task: "transcribe", language: "english", duration: 30, text, segments: [{ id: 0, start: 0, end: 30, text, tokens: [1, 2, 3] }] };
}

function rendered(what: string, format: ResponseFormat): string {
  return renderTranscript(transcriptFor(what), format).body;
}

async function readRequest(req: http.IncomingMessage, path: string): Promise<Recorded> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const recorded: Recorded = { method: req.method ?? "", path, headers: req.headers, fields: {} };
  const type = req.headers["content-type"] ?? "";
  if (type.startsWith("multipart/form-data")) {
    const form = await new Response(body, { headers: { "content-type": type } }).formData();
    for (const [name, value] of form) {
      if (typeof value === "string") recorded.fields[name] = value;
      else recorded.file = { name: value.name, size: value.size, bytes: Buffer.from(await value.arrayBuffer()) };
    }
  } else if (type.startsWith("application/json")) {
    recorded.json = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
  }
  return recorded;
}

/** Each poll moves a job on: queued, running at 12 s and 24 s of 30, then finished. */
function advance(job: FakeJob): void {
  const view = job.view;
  if (view.status !== "queued" && view.status !== "running") return;
  job.polls += 1;
  if (job.polls === 2) {
    view.status = "running";
    view.started_at = new Date(Date.now() - 4000).toISOString();
    view.progress = { done_seconds: 12, total_seconds: 30 };
  } else if (job.polls === 3) {
    view.progress = { done_seconds: 24, total_seconds: 30 };
  } else if (job.polls >= 4) {
    const fails = job.transcript.text.includes("broken");
    view.status = fails ? "failed" : "succeeded";
    view.finished_at = new Date().toISOString();
    view.progress = fails ? { done_seconds: 24, total_seconds: 30 } : { done_seconds: 30, total_seconds: 30 };
    if (fails) view.error = { code: "unprocessable_audio", message: "The audio stream is truncated" };
    else view.result = verboseTranscript(job.transcript);
  }
}

function createJob(recorded: Recorded): FakeJob {
  const input = recorded.json ?? recorded.fields;
  const field = (name: string) => (typeof input[name] === "string" ? (input[name] as string) : null);
  const metadata = typeof input.metadata === "string" ? (JSON.parse(input.metadata) as Record<string, unknown>) : ((input.metadata as Record<string, unknown>) ?? null);
  const id = `job_${++fake.jobCount}`;
  const callbackUrl = field("callback_url");
  const view: JobView = {
    id,
    object: "transcription.job",
    status: "queued",
    model: field("model") ?? "whisper-1",
    task: "transcribe",
    language: field("language"),
    response_format: field("response_format") ?? "json",
    created_at: new Date(Date.UTC(2025, 0, 1, 0, 0, fake.jobCount)).toISOString(),
    started_at: null,
    finished_at: null,
    expires_at: null,
    progress: { done_seconds: 0, total_seconds: null },
    error: null,
    metadata,
    callback: callbackUrl ? { url: callbackUrl, state: "pending", webhook_id: `msg_${id}`, attempts: [], next_attempt_at: null } : null,
    links: { self: `${base}/v1/jobs/${id}`, result: `${base}/v1/jobs/${id}/result` },
    result: null,
  };
  const what = recorded.file ? `${recorded.file.name} (${recorded.file.size} bytes)` : String(input.url);
  const job = { view, polls: 0, transcript: transcriptFor(what) };
  fake.jobs.set(id, job);
  return job;
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const requestId = `req_${++fake.requestCount}`;
  res.setHeader("x-request-id", requestId);
  const url = new URL(req.url ?? "/", "http://fake");
  const recorded = await readRequest(req, url.pathname + url.search);
  fake.requests.push(recorded);
  const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, { "content-type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json", ...headers });
    res.end(text);
  };
  const fail = (status: number, code: string, message: string, headers: Record<string, string> = {}) => send(status, { error: { code, message, request_id: requestId } }, headers);

  if (req.headers.authorization !== `Bearer ${API_KEY}`) return fail(401, "unauthorized", "Missing or invalid API key");
  if (fake.rateLimitNext > 0) {
    fake.rateLimitNext -= 1;
    return fail(429, "rate_limited", "The queue is full", { "retry-after": fake.retryAfter });
  }
  const retryAfter: Record<string, string> = fake.retryAfter ? { "retry-after": fake.retryAfter } : {};
  if (fake.unavailableNext > 0) {
    fake.unavailableNext -= 1;
    return fail(503, "unavailable", "Starting up.", retryAfter);
  }
  if (fake.proxyUnavailableNext > 0) {
    fake.proxyUnavailableNext -= 1;
    res.writeHead(503, { "content-type": "text/html", ...retryAfter });
    return void res.end("<html>no healthy upstream</html>");
  }

  if (req.method === "POST" && url.pathname === "/v1/audio/transcriptions") {
    if (!recorded.file) return fail(400, "invalid_request", "file is required");
    const format = (recorded.fields.response_format ?? "json") as ResponseFormat;
    return send(200, rendered(`${recorded.file.name} (${recorded.file.size} bytes)`, format));
  }
  if (req.method === "POST" && url.pathname === "/v1/jobs") {
    const key = req.headers["idempotency-key"];
    const existing = typeof key === "string" ? fake.jobs.get(fake.byIdempotencyKey.get(key) ?? "") : undefined;
    if (existing) return send(202, existing.view);
    const job = createJob(recorded);
    if (typeof key === "string") fake.byIdempotencyKey.set(key, job.view.id);
    if (fake.dropNextSubmit) {
      fake.dropNextSubmit = false;
      req.socket.destroy();
      return;
    }
    return send(202, job.view);
  }
  if (req.method === "GET" && url.pathname === "/v1/jobs") {
    const status = url.searchParams.get("status");
    const limit = Number(url.searchParams.get("limit") ?? 20);
    const start = Number(url.searchParams.get("cursor") ?? 0);
    const all = [...fake.jobs.values()]
      .map((job) => job.view)
      .filter((view) => !status || view.status === status)
      .reverse();
    const data = all.slice(start, start + limit);
    return send(200, { object: "list", data, next_cursor: start + limit < all.length ? String(start + limit) : null });
  }
  if (url.pathname === "/v1/jobs/from-a-proxy") return send(502, "<html>Bad Gateway</html>");
  // A proxy's debug page that shows the request it could not forward, headers and all.
  if (url.pathname === "/v1/jobs/from-a-chatty-proxy") return send(502, `<pre>GET ${url.pathname}\nauthorization: ${req.headers.authorization}</pre>`);
  const match = /^\/v1\/jobs\/([^/]+)(\/result)?$/.exec(url.pathname);
  const job = match ? fake.jobs.get(decodeURIComponent(match[1]!)) : undefined;
  if (match && !job) return fail(404, "not_found", `No job "${decodeURIComponent(match[1]!)}"`);
  if (job && req.method === "GET" && match![2]) {
    if (job.view.status !== "succeeded") return fail(409, "conflict", `Job ${job.view.id} is ${job.view.status}; its result is not ready`);
    const format = (url.searchParams.get("format") ?? job.view.response_format) as ResponseFormat;
    return send(200, renderTranscript(job.transcript, format).body);
  }
  if (job && req.method === "GET") {
    advance(job);
    return send(200, job.view);
  }
  if (job && req.method === "DELETE") {
    if (job.view.status !== "queued" && job.view.status !== "running") return fail(409, "conflict", `Job ${job.view.id} is already ${job.view.status}`);
    job.view.status = "canceled";
    job.view.finished_at = new Date().toISOString();
    return send(200, job.view);
  }
  return fail(404, "not_found", `No route ${req.method} ${url.pathname}`);
}

let server: http.Server;
let base: string;
let closedBase: string;
let work: string;
let audio: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // A port that was just free: nothing answers there.
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  closedBase = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
  await new Promise((resolve) => probe.close(resolve));
  work = await mkdtemp(join(tmpdir(), "slotscribe-cli-"));
  audio = join(work, "meeting.wav");
  await writeFile(audio, Buffer.alloc(1234, 7));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(work, { recursive: true, force: true });
});

beforeEach(() => {
  fake.requests.length = 0;
  fake.rateLimitNext = 0;
  fake.unavailableNext = 0;
  fake.proxyUnavailableNext = 0;
  fake.retryAfter = "1";
  fake.dropNextSubmit = false;
});

function client(notes: string[] = [], options: { maxRetries?: number; server?: string } = {}): SlotscribeClient {
  return new SlotscribeClient({ server: options.server ?? base, apiKey: API_KEY, maxRetries: options.maxRetries, notify: (line) => notes.push(line) });
}

async function rejection(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error("expected the promise to reject");
}

/** A job polled through to its end, as a fixture for the commands that read jobs. */
async function finishedJob(url = "https://media.example/finished.mp3"): Promise<JobView> {
  const api = client();
  const job = await api.submitJob({ url }, { format: "srt" });
  return api.waitForJob(job.id);
}

describe("SlotscribeClient", () => {
  it("uploads a file to the OpenAI-compatible endpoint with the key and returns the rendered transcript", async () => {
    const text = await client().transcribe(audio, { model: "base.en", language: "en", format: "srt" });
    expect(text).toBe(rendered("meeting.wav (1234 bytes)", "srt"));
    const [request] = fake.requests;
    expect(request?.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(request?.fields).toEqual({ model: "base.en", language: "en", response_format: "srt" });
    expect(request?.file?.bytes.equals(Buffer.alloc(1234, 7))).toBe(true);
  });

  it("sends the prompt, the first temperature and word timing as the endpoints take them, in a form and in JSON", async () => {
    const api = client();
    const decoding = { format: "verbose_json" as const, prompt: "Kubernetes, Grafana", temperature: 0.2, words: true };
    await api.transcribe(audio, decoding);
    await api.submitJob({ file: audio }, decoding);
    await api.submitJob({ url: "https://media.example/talk.mp3" }, decoding);
    const form = { response_format: "verbose_json", prompt: "Kubernetes, Grafana", temperature: "0.2", "timestamp_granularities[]": "word" };
    expect(fake.requests[0]?.fields).toEqual(form);
    expect(fake.requests[1]?.fields).toEqual(form);
    expect(fake.requests[2]?.json).toEqual({
      url: "https://media.example/talk.mp3",
      response_format: "verbose_json",
      prompt: "Kubernetes, Grafana",
      temperature: 0.2,
      timestamp_granularities: ["word"],
    });
  });

  it("waits out a 429 for its Retry-After and retries, saying so", async () => {
    fake.rateLimitNext = 1;
    const notes: string[] = [];
    const started = Date.now();
    const text = await client(notes).transcribe(audio, { format: "text" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(text).toBe("Heard meeting.wav (1234 bytes).\n");
    expect(fake.requests).toHaveLength(2);
    expect(fake.requests[1]?.file?.size).toBe(1234);
    expect(notes).toEqual([expect.stringMatching(/^slotscribe: rate limited \(request req_\d+\); retrying in 1 s \(retry 1 of 3\)$/)]);
  });

  it("gives up with the 429 after its retries, and at once when asked to wait over a minute", async () => {
    fake.rateLimitNext = 5;
    const err = await rejection(client([], { maxRetries: 1 }).getJob("job_1"));
    expect(err).toMatchObject({ status: 429, code: "rate_limited", message: "The queue is full", retryAfterSeconds: 1 });
    expect(fake.requests).toHaveLength(2);

    fake.requests.length = 0;
    fake.retryAfter = "120";
    const started = Date.now();
    const notes: string[] = [];
    expect(await rejection(client(notes).getJob("job_1"))).toMatchObject({ status: 429, retryAfterSeconds: 120 });
    expect(Date.now() - started).toBeLessThan(500);
    expect(fake.requests).toHaveLength(1);
    expect(notes).toEqual([]);
  });

  it("waits out the service's 503 with Retry-After (starting, draining) like a 429, on a listing and on an upload", async () => {
    fake.unavailableNext = 1;
    const notes: string[] = [];
    await expect(client(notes).listJobs()).resolves.toMatchObject({ object: "list" });
    expect(fake.requests.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /v1/jobs", "GET /v1/jobs"]);
    expect(notes).toEqual([expect.stringMatching(/^slotscribe: unavailable: Starting up\. \(request req_\d+\); retrying in 1 s \(retry 1 of 3\)$/)]);

    fake.requests.length = 0;
    fake.unavailableNext = 1;
    expect(await client().transcribe(audio, { format: "text" })).toBe("Heard meeting.wav (1234 bytes).\n");
    expect(fake.requests.map((r) => r.file?.size)).toEqual([1234, 1234]);
  });

  it("gives up at once on a 503 without Retry-After, one asking for over a minute, and an upload's 503 from a proxy", async () => {
    for (const retryAfter of ["", "120"]) {
      fake.requests.length = 0;
      fake.unavailableNext = 1;
      fake.retryAfter = retryAfter;
      expect(await rejection(client().listJobs())).toMatchObject({ status: 503, code: "unavailable" });
      expect(fake.requests).toHaveLength(1);
    }
    // It may have taken the upload before failing: sending it again could transcribe it twice.
    fake.requests.length = 0;
    fake.proxyUnavailableNext = 1;
    fake.retryAfter = "1";
    expect(await rejection(client().transcribe(audio))).toMatchObject({ status: 503, code: "http_503" });
    expect(fake.requests).toHaveLength(1);
    // A listing is safe to repeat, whoever answered.
    fake.requests.length = 0;
    fake.proxyUnavailableNext = 1;
    await expect(client().listJobs()).resolves.toMatchObject({ object: "list" });
    expect(fake.requests).toHaveLength(2);
  });

  it("turns the error JSON into an ApiError with status, code, message and request id", async () => {
    const err = await rejection(client().getJob("job_missing"));
    expect(err.name).toBe("ApiError");
    expect(err).toMatchObject({ status: 404, code: "not_found", message: 'No job "job_missing"' });
    expect(err.requestId).toMatch(/^req_\d+$/);

    const unauthorized = await rejection(new SlotscribeClient({ server: base, apiKey: "wrong" }).getJob("job_1"));
    expect(unauthorized).toMatchObject({ status: 401, code: "unauthorized" });
  });

  it("reports a non-JSON error from something in front of the server by its status", async () => {
    const err = await rejection(client().getJob("from-a-proxy"));
    expect(err).toMatchObject({ status: 502, code: "http_502", message: "502 Bad Gateway: <html>Bad Gateway</html>" });
    expect(err.requestId).toMatch(/^req_\d+$/);
  });

  it("never repeats the key, even when something in front of the server echoes the request", async () => {
    const err = await rejection(client().getJob("from-a-chatty-proxy"));
    expect(err).toMatchObject({ status: 502, code: "http_502" });
    expect(err.message).toContain("authorization: Bearer ***");
    expect(err.message).not.toContain(API_KEY);
  });

  it("refuses a key that is no header value without quoting it, and takes one with a trailing line break as fetch does", async () => {
    for (const key of [`${API_KEY}\nsecond-line`, `${API_KEY}€`, `${API_KEY}\0`]) {
      let refused: unknown;
      try {
        new SlotscribeClient({ server: base, apiKey: key });
      } catch (err) {
        refused = err;
      }
      expect(refused, JSON.stringify(key)).toBeInstanceOf(TypeError);
      expect((refused as Error).message).toMatch(/^the API key \(--api-key or SLOTSCRIBE_API_KEY\) cannot be sent/);
      expect((refused as Error).message).not.toContain(API_KEY);
    }
    const fromKeyFile = new SlotscribeClient({ server: base, apiKey: `${API_KEY}\r\n` });
    expect(await rejection(fromKeyFile.getJob("job_none"))).toMatchObject({ status: 404 });
    expect(fake.requests[0]?.headers.authorization).toBe(`Bearer ${API_KEY}`);
  });

  it("refuses a server URL with a query or fragment, which the API paths would land after", () => {
    for (const server of ["http://127.0.0.1:8080/?tenant=a", "http://127.0.0.1:8080/#v1"]) {
      expect(() => new SlotscribeClient({ server })).toThrow(`Invalid server URL "${server}"`);
    }
  });

  it("refuses a server URL with credentials, masking them", () => {
    for (const [server, shown] of [
      ["http://admin:topsecret@127.0.0.1:8080", "http://***@127.0.0.1:8080"],
      ["admin:topsecret@127.0.0.1:8080", "***@127.0.0.1:8080"],
      // Generated passwords hold "/", "?" or "#", which end a URL's authority: still all masked.
      ["http://admin:top/secret@127.0.0.1:8080", "http://***@127.0.0.1:8080"],
      ["http://admin:top?secret@127.0.0.1:8080", "http://***@127.0.0.1:8080"],
      ["http://admin:top#secret@127.0.0.1:8080/", "http://***@127.0.0.1:8080/"],
    ]) {
      expect(() => new SlotscribeClient({ server })).toThrow(`Invalid server URL "${shown}"`);
      expect(() => new SlotscribeClient({ server })).not.toThrow(/topsecret/);
    }
  });

  it("fails fast with status 0 when nothing listens, without retrying", async () => {
    const notes: string[] = [];
    const started = Date.now();
    const err = await rejection(client(notes, { server: closedBase }).getJob("job_1"));
    expect(err).toMatchObject({ status: 0, code: "network_error", requestId: null });
    expect(err.message).toBe(`cannot reach ${closedBase}: connect ECONNREFUSED ${closedBase.slice("http://".length)}`);
    expect(Date.now() - started).toBeLessThan(500);
    expect(notes).toEqual([]);
  });

  it("submits a file job as multipart and a URL job as JSON, each with an idempotency key", async () => {
    const api = client();
    const fileJob = await api.submitJob(
      { file: audio },
      { model: "tiny", format: "vtt", callbackUrl: "https://hooks.example/done", callbackIncludeResult: true, metadata: { ticket: 42 } },
    );
    expect(fileJob).toMatchObject({ status: "queued", model: "tiny", response_format: "vtt", metadata: { ticket: 42 } });
    expect(fileJob.callback?.url).toBe("https://hooks.example/done");
    const multipart = fake.requests[0]!;
    expect(multipart.headers["idempotency-key"]).toMatch(UUID);
    expect(multipart.file).toMatchObject({ name: "meeting.wav", size: 1234 });
    expect(multipart.fields).toEqual({
      model: "tiny",
      response_format: "vtt",
      callback_url: "https://hooks.example/done",
      callback_include_result: "true",
      metadata: '{"ticket":42}',
    });

    await api.submitJob({ url: "https://media.example/talk.mp3" }, { language: "de", callbackUrl: "https://hooks.example/x", callbackIncludeResult: false, metadata: { a: [1] } });
    const json = fake.requests[1]!;
    expect(json.headers["content-type"]).toBe("application/json");
    expect(json.headers["idempotency-key"]).toMatch(UUID);
    expect(json.headers["idempotency-key"]).not.toBe(multipart.headers["idempotency-key"]);
    expect(json.json).toEqual({
      url: "https://media.example/talk.mp3",
      language: "de",
      callback_url: "https://hooks.example/x",
      callback_include_result: false,
      metadata: { a: [1] },
    });
  });

  it("resubmits with the same idempotency key when the connection drops, getting the one job created", async () => {
    fake.dropNextSubmit = true;
    const jobsBefore = fake.jobs.size;
    const notes: string[] = [];
    const job = await client(notes).submitJob({ file: audio });
    expect(fake.jobs.size).toBe(jobsBefore + 1);
    const submits = fake.requests.filter((r) => r.path === "/v1/jobs");
    expect(submits).toHaveLength(2);
    expect(submits[1]?.headers["idempotency-key"]).toBe(submits[0]?.headers["idempotency-key"]);
    expect(submits[1]?.file?.size).toBe(1234);
    expect(job.id).toBe(`job_${fake.jobCount}`);
    expect(notes).toEqual([expect.stringMatching(/^slotscribe: lost the connection to .*; retrying in 1 s \(retry 1 of 3\)$/)]);
  });

  it("polls a job from queued through running to succeeded, and refuses its result before then", async () => {
    const api = client();
    const job = await api.submitJob({ url: "https://media.example/talk.mp3" }, { format: "text" });
    expect(await rejection(api.jobResult(job.id))).toMatchObject({ status: 409, code: "conflict" });
    const seen: string[] = [];
    const final = await api.waitForJob(job.id, (update) => seen.push(`${update.status} ${update.progress.done_seconds}`));
    expect(seen).toEqual(["queued 0", "running 12", "running 24", "succeeded 30"]);
    expect(final.status).toBe("succeeded");
    expect(await api.jobResult(job.id)).toBe("Heard https://media.example/talk.mp3.\n");
    expect(await api.jobResult(job.id, "json")).toBe('{"text":" Heard https://media.example/talk.mp3.","usage":{"type":"duration","seconds":30}}');
    expect(fake.requests.at(-1)?.path).toBe(`/v1/jobs/${job.id}/result?format=json`);
  });

  it("lists with filters and a cursor, and cancels", async () => {
    const api = client();
    const queued = await api.submitJob({ url: "https://media.example/cancel-me.mp3" });
    const canceled = await api.cancelJob(queued.id);
    expect(canceled).toMatchObject({ id: queued.id, status: "canceled" });
    expect(fake.requests.at(-1)).toMatchObject({ method: "DELETE", path: `/v1/jobs/${queued.id}` });
    expect(await rejection(api.cancelJob(queued.id))).toMatchObject({ status: 409, code: "conflict" });

    const page = await api.listJobs({ status: "canceled", limit: 1 });
    expect(fake.requests.at(-1)?.path).toBe("/v1/jobs?status=canceled&limit=1");
    expect(page).toMatchObject({ object: "list", next_cursor: null });
    expect(page.data.map((job) => job.id)).toEqual([queued.id]);

    const first = await api.listJobs({ limit: 1 });
    expect(first.next_cursor).toBe("1");
    const second = await api.listJobs({ limit: 1, cursor: first.next_cursor! });
    expect(fake.requests.at(-1)?.path).toBe("/v1/jobs?limit=1&cursor=1");
    expect(second.data[0]?.id).not.toBe(first.data[0]?.id);
  });

  it("takes the server and key from SLOTSCRIBE_URL and SLOTSCRIBE_API_KEY, and refuses a server that is not a URL", async () => {
    const saved = { url: process.env.SLOTSCRIBE_URL, key: process.env.SLOTSCRIBE_API_KEY };
    try {
      delete process.env.SLOTSCRIBE_URL;
      expect(new SlotscribeClient().server).toBe("http://127.0.0.1:8080");
      process.env.SLOTSCRIBE_URL = `${base}/`;
      process.env.SLOTSCRIBE_API_KEY = API_KEY;
      const fromEnv = new SlotscribeClient();
      expect(fromEnv.server).toBe(base);
      expect(await rejection(fromEnv.getJob("job_none"))).toMatchObject({ status: 404, code: "not_found" });
      expect(fake.requests[0]?.headers.authorization).toBe(`Bearer ${API_KEY}`);
      expect(new SlotscribeClient({ server: "https://other.example" }).server).toBe("https://other.example");
      expect(() => new SlotscribeClient({ server: "localhost:8080" })).toThrow(/Invalid server URL "localhost:8080"/);
    } finally {
      for (const [name, value] of [
        ["SLOTSCRIBE_URL", saved.url],
        ["SLOTSCRIBE_API_KEY", saved.key],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});

// ---- The commands, run as the real CLI in child processes ----

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command function here, capturing what it prints. */
async function inProcess(command: (argv: string[]) => Promise<number>, args: string[]): Promise<Run> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const spies = [
    vi.spyOn(console, "log").mockImplementation((line: string) => void stdout.push(`${line}\n`)),
    vi.spyOn(console, "error").mockImplementation((line: string) => void stderr.push(`${line}\n`)),
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => stdout.push(String(chunk)) > 0),
  ];
  try {
    const code = await command(args);
    return { code, stdout: stdout.join(""), stderr: stderr.join("") };
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
}

/** The CLI in a child process, for the tests that signal it; `cli` for the others. */
function startCli(args: string[], env: Record<string, string> = {}) {
  return startCliProcess(args, { SLOTSCRIBE_URL: base, SLOTSCRIBE_API_KEY: API_KEY, ...env });
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return startCli(args, env).done;
}

describe("slotscribe transcribe", () => {
  it("uploads a file and prints the transcript as text by default", async () => {
    const run = await cli(["transcribe", audio, "--model", "base.en"]);
    expect(run).toMatchObject({ code: 0, stdout: "Heard meeting.wav (1234 bytes).\n", stderr: "" });
    expect(fake.requests.map((r) => r.path)).toEqual(["/v1/audio/transcriptions"]);
    expect(fake.requests[0]?.fields).toEqual({ model: "base.en", response_format: "text" });
  });

  it("--words asks for word times and prints verbose_json; --prompt and --temperature go along; other formats and temperatures are usage errors", async () => {
    const run = await cli(["transcribe", audio, "--words", "--prompt", "Grafana", "--temperature", "0.4"]);
    expect(run.code).toBe(0);
    expect(fake.requests[0]?.fields).toEqual({ response_format: "verbose_json", prompt: "Grafana", temperature: "0.4", "timestamp_granularities[]": "word" });
    for (const args of [
      ["--words", "--format", "srt"],
      ["--temperature", "2"],
      ["--temperature", "warm"],
    ]) {
      const refused = await cli(["transcribe", audio, ...args]);
      expect(refused.code, args.join(" ")).toBe(2);
    }
    expect(fake.requests).toHaveLength(1);
  });

  it("checks --out before uploading anything, and takes a server URL given as the OpenAI SDK's baseURL (…/v1)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "slotscribe-out-"));
    try {
      for (const out of [dir, join(dir, "missing", "x.srt")]) {
        const refused = await cli(["transcribe", audio, "--out", out]);
        expect(refused.code, out).toBe(2);
        expect(refused.stderr).toMatch(/--out/);
      }
      expect(fake.requests).toHaveLength(0);
      const run = await cli(["transcribe", audio], { SLOTSCRIBE_URL: `${base}/v1/` });
      expect(run).toMatchObject({ code: 0, stdout: "Heard meeting.wav (1234 bytes).\n" });
      expect(fake.requests.map((r) => r.path)).toEqual(["/v1/audio/transcriptions"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("writes every format to --out byte for byte, printing nothing", async () => {
    await Promise.all(
      RESPONSE_FORMATS.map(async (format) => {
        const out = join(work, `sync.${format}`);
        const run = await cli(["transcribe", audio, "--format", format, "--out", out]);
        expect(run).toMatchObject({ code: 0, stdout: "", stderr: "" });
        expect(await readFile(out, "utf8")).toBe(rendered("meeting.wav (1234 bytes)", format));
      }),
    );
  });

  it("uses --server and --api-key over the environment", async () => {
    const run = await cli(["transcribe", audio, "--server", base, "--api-key", API_KEY], { SLOTSCRIBE_URL: closedBase, SLOTSCRIBE_API_KEY: "wrong" });
    expect(run).toMatchObject({ code: 0, stdout: "Heard meeting.wav (1234 bytes).\n" });
  });

  it("retries after a 429 with a note on stderr", async () => {
    fake.rateLimitNext = 1;
    const run = await cli(["transcribe", audio, "--format", "json"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('{"text":" Heard meeting.wav (1234 bytes).","usage":{"type":"duration","seconds":30}}\n');
    expect(run.stderr).toMatch(/^slotscribe: rate limited \(request req_\d+\); retrying in 1 s \(retry 1 of 3\)\n$/);
  });

  it("submits a URL as a job and waits for it, with plain progress lines when stderr is not a terminal", async () => {
    const out = join(work, "url.vtt");
    const run = await cli(["transcribe", "https://media.example/podcast.mp3", "--format", "vtt", "--out", out, "--language", "en"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe("");
    expect(await readFile(out, "utf8")).toBe(rendered("https://media.example/podcast.mp3", "vtt"));
    const id = `job_${fake.jobCount}`;
    const lines = run.stderr.trimEnd().split("\n");
    expect(lines[0]).toBe(`job ${id} queued`);
    expect(lines[1]).toMatch(new RegExp(`^job ${id} running  40%  0:12/0:30  ETA 0:0\\d$`));
    expect(lines.at(-1)).toBe(`job ${id} succeeded`);
    expect(fake.requests[0]).toMatchObject({ method: "POST", path: "/v1/jobs", json: { url: "https://media.example/podcast.mp3", language: "en", response_format: "vtt" } });
    expect(fake.requests.at(-1)?.path).toBe(`/v1/jobs/${id}/result?format=vtt`);
  });

  it("--async submits a file job, prints its id and exits", async () => {
    const run = await cli(["transcribe", audio, "--async", "--callback", "https://hooks.example/in", "--include-result", "--metadata", '{"ticket":7}']);
    const id = `job_${fake.jobCount}`;
    expect(run).toMatchObject({ code: 0, stdout: `${id}\n` });
    expect(run.stderr).toBe(`submitted job ${id} (queued); slotscribe jobs get ${id} shows it\n`);
    expect(fake.requests).toHaveLength(1);
    const [submit] = fake.requests;
    expect(submit?.headers["idempotency-key"]).toMatch(UUID);
    expect(submit?.file?.name).toBe("meeting.wav");
    expect(submit?.fields).toEqual({
      response_format: "text",
      callback_url: "https://hooks.example/in",
      callback_include_result: "true",
      metadata: '{"ticket":7}',
    });
  });

  it("--callback and --metadata send a file as a job and wait for it, on a terminal or not", async () => {
    const run = await cli(["transcribe", audio, "--metadata", '{"ticket":7}', "--callback", "https://hooks.example/in"]);
    expect(run).toMatchObject({ code: 0, stdout: "Heard meeting.wav (1234 bytes).\n" });
    expect(run.stderr).toContain(`job job_${fake.jobCount} succeeded`);
    expect(fake.requests[0]).toMatchObject({ method: "POST", path: "/v1/jobs", fields: { callback_url: "https://hooks.example/in", metadata: '{"ticket":7}' } });
  });

  it("--async --wait polls the job to the end and prints the result", async () => {
    const run = await cli(["transcribe", audio, "--async", "--wait", "--format", "srt"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`${rendered("meeting.wav (1234 bytes)", "srt")}`);
    expect(run.stderr).toContain(`job job_${fake.jobCount} succeeded`);
    expect(fake.requests.filter((r) => r.method === "GET" && r.path === `/v1/jobs/job_${fake.jobCount}`)).toHaveLength(4);
  });

  it("stopped by a supervisor (SIGTERM) while waiting, says how to pick the job up again", async () => {
    const { child, done } = startCli(["transcribe", "https://media.example/long.mp3"]);
    await vi.waitFor(() => expect(fake.requests.some((r) => r.method === "GET" && r.path.startsWith("/v1/jobs/"))).toBe(true), { timeout: 10_000 });
    child.kill("SIGTERM");
    const run = await done;
    const id = `job_${fake.jobCount}`;
    expect(run.code).toBe(143);
    expect(run.stdout).toBe("");
    expect(run.stderr.trimEnd().split("\n").at(-1)).toBe(`slotscribe: stopped waiting; job ${id} continues (slotscribe jobs get ${id})`);
  });

  it("exits 1 with the job's error when the job fails", async () => {
    const run = await cli(["transcribe", "https://media.example/broken.mp3"]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr.trimEnd().split("\n").at(-1)).toBe(`slotscribe: unprocessable_audio: The audio stream is truncated (job job_${fake.jobCount})`);
  });

  it("exits 1 with code, message and request id on an API error, and on no server at all", async () => {
    const unauthorized = await cli(["transcribe", audio], { SLOTSCRIBE_API_KEY: "wrong" });
    expect(unauthorized.code).toBe(1);
    expect(unauthorized.stdout).toBe("");
    expect(unauthorized.stderr).toMatch(
      /^slotscribe: unauthorized: Missing or invalid API key \(request req_\d+\)\nslotscribe: give the server's API key with --api-key or SLOTSCRIBE_API_KEY\n$/,
    );

    const down = await cli(["transcribe", audio], { SLOTSCRIBE_URL: closedBase });
    expect(down.code).toBe(1);
    expect(down.stderr).toBe(`slotscribe: network_error: cannot reach ${closedBase}: connect ECONNREFUSED ${closedBase.slice("http://".length)}\n`);
  });

  it("says when to try again after a refusal whose Retry-After is too long to wait out", async () => {
    fake.rateLimitNext = 1;
    fake.retryAfter = "120";
    const run = await cli(["transcribe", audio]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^slotscribe: rate_limited: The queue is full \(request req_\d+\); the server asks to try again in 120 s\n$/);
  });

  it("exits 2 on a key that cannot be sent, without printing it or sending anything", async () => {
    for (const args of [
      ["transcribe", audio],
      ["jobs", "list"],
    ]) {
      const run = await cli(args, { SLOTSCRIBE_API_KEY: `${API_KEY}\nsecond-line` });
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^slotscribe: the API key \(--api-key or SLOTSCRIBE_API_KEY\) cannot be sent/);
      expect(run.stderr).not.toContain(API_KEY);
    }
    expect(fake.requests).toEqual([]);
  });

  it("exits 2 on a usage error, with the usage, before any request", async () => {
    const run = await cli(["transcribe", audio, "--format", "docx"]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^slotscribe: unknown format "docx"; one of json, text, srt, vtt, verbose_json\n\nslotscribe transcribe <file\|url>/);
    expect(fake.requests).toEqual([]);
  });

  it("--help prints the usage on stdout, so it can be paged or searched, and exits 0", async () => {
    for (const [command, args, usage] of [
      [transcribeCommand, ["--help"], "slotscribe transcribe <file|url>"],
      [jobsCommand, ["list", "-h"], "slotscribe jobs get <id>"],
    ] as const) {
      const run = await inProcess(command, [...args]);
      expect(run).toMatchObject({ code: 0, stderr: "" });
      expect(run.stdout).toMatch(new RegExp(`^${usage.replace(/[|<>]/g, "\\$&")}`));
    }
    expect(fake.requests).toEqual([]);
  });

  // In process: the child-process case above covers the exit path, and these need no server.
  it.for([
    [[], /missing the file or URL/],
    [["a.wav", "b.wav"], /one file or URL at a time/],
    [["AUDIO", "--frobnicate"], /Unknown option '--frobnicate'/],
    [["AUDIO", "--async", "--include-result"], /--include-result needs --callback/],
    [["AUDIO", "--async", "--metadata", "[1]"], /--metadata must be a JSON object/],
    [["AUDIO", "--async", "--metadata", "{nope"], /--metadata is not JSON/],
    [["AUDIO", "--async", "--out", "x.txt"], /--out needs the transcript/],
    [["/no/such/file.wav"], /no such file: \/no\/such\/file.wav/],
    [["AUDIO", "--temperature", ""], /--temperature is a number from 0 to 1; got $/m],
    [["AUDIO", "--server", "localhost:8080"], /Invalid server URL "localhost:8080"/],
  ] as [string[], RegExp][])("returns 2 for %j", async ([args, message]) => {
    const run = await inProcess(
      transcribeCommand,
      args.map((arg) => (arg === "AUDIO" ? audio : arg)),
    );
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(message);
    expect(run.stderr).toContain("slotscribe transcribe <file|url>");
    expect(fake.requests).toEqual([]);
  });
});

describe("slotscribe jobs", () => {
  it("get prints the job as JSON, or its transcript with --format", async () => {
    const job = await finishedJob();
    const run = await cli(["jobs", "get", job.id]);
    expect(run).toMatchObject({ code: 0, stderr: "" });
    expect(run.stdout).toBe(`${JSON.stringify(JSON.parse(run.stdout), null, 2)}\n`);
    expect(JSON.parse(run.stdout)).toMatchObject({ id: job.id, object: "transcription.job", status: "succeeded", response_format: "srt" });

    const text = await cli(["jobs", "get", job.id, "--format", "text"]);
    expect(text).toMatchObject({ code: 0, stdout: "Heard https://media.example/finished.mp3.\n" });
  });

  it("result prints or writes the transcript, in the submitted format unless told", async () => {
    const job = await finishedJob();
    const run = await cli(["jobs", "result", job.id]);
    expect(run).toMatchObject({ code: 0, stdout: rendered("https://media.example/finished.mp3", "srt") });
    const out = join(work, "result.verbose.json");
    const written = await cli(["jobs", "result", job.id, "--format", "verbose_json", "--out", out]);
    expect(written).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(await readFile(out, "utf8")).toBe(rendered("https://media.example/finished.mp3", "verbose_json"));
  });

  it("result of an unfinished job exits 1 with the conflict", async () => {
    const job = await client().submitJob({ url: "https://media.example/slow.mp3" });
    const run = await cli(["jobs", "result", job.id]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^slotscribe: conflict: Job ${job.id} is queued; its result is not ready \\(request req_\\d+\\)\\n$`));
  });

  it("cancel prints the canceled job; cancelling it again exits 1", async () => {
    const job = await client().submitJob({ url: "https://media.example/cancel.mp3" });
    const run = await cli(["jobs", "cancel", job.id]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ id: job.id, status: "canceled" });
    const again = await cli(["jobs", "cancel", job.id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^slotscribe: conflict: Job job_\d+ is already canceled \(request req_\d+\)\n$/);
  });

  it("get of an unknown job exits 1 with not_found", async () => {
    const run = await cli(["jobs", "get", "job_nope"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^slotscribe: not_found: No job "job_nope" \(request req_\d+\)\n$/);
  });

  it("list prints a table filtered by status, pointing at the next page, or the page as JSON", async () => {
    // So there is a next page, whichever tests ran before.
    await finishedJob("https://media.example/zero.mp3");
    const first = await finishedJob("https://media.example/one.mp3");
    const second = await finishedJob("https://media.example/two.mp3");
    const run = await cli(["jobs", "list", "--status", "succeeded", "--limit", "2", "--server", base]);
    expect(run.code).toBe(0);
    expect(fake.requests.at(-1)?.path).toBe("/v1/jobs?status=succeeded&limit=2");
    const lines = run.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+PROGRESS\s+MODEL\s+CREATED$/);
    expect(lines.slice(1).map((line) => line.split(/\s+/).slice(0, 4))).toEqual([
      [second.id, "succeeded", "100%", "whisper-1"],
      [first.id, "succeeded", "100%", "whisper-1"],
    ]);
    expect(run.stderr).toBe(`more: slotscribe jobs list --status succeeded --limit 2 --server ${base} --cursor 2\n`);

    const json = await cli(["jobs", "list", "--status", "succeeded", "--limit", "1", "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ object: "list", data: [{ id: second.id }], next_cursor: "1" });

    const none = await cli(["jobs", "list", "--status", "running"]);
    expect(none).toMatchObject({ code: 0, stdout: "", stderr: "no jobs\n" });
  });

  it("exits 2 on a usage error, with the usage, before any request", async () => {
    const run = await cli(["jobs", "list", "--status", "done"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^slotscribe: unknown status "done"; one of queued, running, succeeded, failed, canceled\n\nslotscribe jobs get <id>/);
    expect(fake.requests).toEqual([]);
  });

  it.for([
    [[], /missing the jobs action/],
    [["show", "job_1"], /unknown jobs action "show"/],
    [["get"], /jobs get takes one job id/],
    [["list", "extra"], /jobs list takes no arguments/],
    [["list", "--limit", "0"], /--limit must be a positive whole number/],
    [["list", "--limit", "1.5"], /--limit must be a positive whole number/],
    [["cancel", "job_1", "--out", "x"], /--out does not apply to jobs cancel/],
    [["get", "job_1", "--json"], /--json does not apply to jobs get/],
    [["get", "job_1", "--format", "pdf"], /unknown format "pdf"/],
  ] as [string[], RegExp][])("returns 2 for %j", async ([args, message]) => {
    const run = await inProcess(jobsCommand, args);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(message);
    expect(run.stderr).toContain("slotscribe jobs get <id>");
    expect(fake.requests).toEqual([]);
  });
});
