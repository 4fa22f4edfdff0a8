import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve, type ServerType } from "@hono/node-server";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FFMPEG_STALL_MS, FfmpegFailure, stallFailure } from "../lib/audio/ffmpeg.ts";
import type { VadMode } from "../lib/audio/speech-regions.ts";
import { QSTASH_CALLBACK_ATTEMPT_PATH, QSTASH_CALLBACK_FAILED_PATH, QSTASH_RUN_FAILED_PATH, QSTASH_RUN_PATH } from "../lib/cluster/qstash.ts";
import { DomainError, StoreUnavailable } from "../lib/errors.ts";
import type { JobRecord } from "../lib/jobs/ports.ts";
import { JobService } from "../lib/jobs/service.ts";
import type { TranscriberStatus } from "../lib/services.ts";
import type { Transcript } from "../lib/transcript.ts";
import type { TranscribeRequest } from "../lib/transcription-service.ts";
import { createApp } from "./app.ts";
import type { HttpDeps } from "./deps.ts";

const KEY = "test-key";
const auth = { authorization: `Bearer ${KEY}` };

function job(overrides: Partial<JobRecord> = {}): JobRecord {
  return {
    id: "job_abc",
    status: "queued",
    request: { model: "m", task: "transcribe", responseFormat: "json", callbackIncludeResult: false },
    input: { kind: "url", url: "https://example.com/a.mp3" },
    createdAt: new Date(0).toISOString(),
    runs: 0,
    progress: { doneSeconds: 0, totalSeconds: null },
    ...overrides,
  };
}

const status: TranscriberStatus = {
  models: [{ id: "m", dtype: "q8", state: "ready", preloaded: true }],
  slots: 2,
  threads: 2,
  limitedBy: "cpu",
  windows: { inUse: 0, queued: 0 },
  transcriptions: { limit: 4, active: 0, queued: 0, queueSize: 16, waitingForLease: 0 },
  audioSeconds: 12,
};

/** Small fakes of the ports the HTTP layer uses; each test changes what it needs. */
function fakes(
  scratch: string,
  { vad = "silero", corsOrigins = [], cluster = false, maxUploadBytes = 4096 }: { vad?: VadMode; corsOrigins?: string[]; cluster?: boolean; maxUploadBytes?: number } = {},
) {
  const state = {
    jobs: new Map<string, JobRecord>([["job_abc", job()]]),
    queueFull: false,
    transcriptionsFull: false,
    transcribed: [] as string[],
    /** What each transcription was asked, beside its upload. */
    requests: [] as TranscribeRequest[],
    submitted: [] as JobRecord[],
    status,
    /** The level of each request's log line, with its status. */
    requestLogs: [] as { level: string; status: number }[],
    /** Each request's log line whole, with its level. */
    requestLines: [] as Record<string, unknown>[],
    /** The labels of each request's duration, as the metric records it. */
    requestMetrics: [] as Record<string, string>[],
    /** Every other line logged at error level. */
    errorLogs: [] as string[],
    warnLogs: [] as string[],
    /** What the transcription throws, if anything: once under way, or before (`failsBeforeStart`). */
    transcribeFails: null as unknown,
    failsBeforeStart: false,
    /** What extraction throws, if anything. */
    extractFails: null as unknown,
    /** With `transcribeFails`: fails a moment after it got under way, when its stream has started. */
    failsLater: false,
    /** The transcription, once under way (or before, with `failsBeforeStart`), runs until its request is aborted. */
    runsUntilAborted: false,
    /** The texts of the segments the transcription reports as it goes, one report each; the transcript's text is theirs joined, trimmed. */
    segmentTexts: [] as string[],
  };
  const requestLog = (level: string) => (fields: object, msg?: string) => {
    if (msg === "request") {
      state.requestLogs.push({ level, status: (fields as { status: number }).status });
      state.requestLines.push({ level, ...fields });
    } else if (level === "error") state.errorLogs.push(msg ?? "");
    else if (level === "warn") state.warnLogs.push(msg ?? "");
  };
  const full = () => new DomainError("rate_limited", "full", { retryAfterSeconds: 7 });
  const transcript: Transcript = { task: "transcribe", language: "en", duration: 1, text: "hello", segments: [] };
  const deps: HttpDeps = {
    config: { ROLE: "all", MAX_UPLOAD_BYTES: maxUploadBytes, PUBLIC_URL: undefined, MAX_DOWNLOAD_BYTES: 4096, DOWNLOAD_TIMEOUT: 1000, CORS_ORIGINS: corsOrigins },
    log: { info: requestLog("info"), warn: requestLog("warn"), error: requestLog("error") },
    metrics: { httpDuration: { observe: (labels) => void state.requestMetrics.push(labels as Record<string, string>) }, errors: { inc() {} }, registry: new Registry() },
    apiKeys: { required: true, accepts: (key) => key === KEY },
    instanceId: "test",
    machine: { memoryBytes: 1, memorySource: "test", cpus: 2, cpuSource: "test" },
    transcriber: {
      status: () => state.status,
      batch: async () => ({ rows: 3, largest: 5 }),
      transcription: {
        assertRoom: () => {
          if (state.transcriptionsFull) throw full();
        },
        transcribeFile: async (path, request) => {
          const untilAborted = () => new Promise((_, reject) => request.signal?.addEventListener("abort", () => reject(request.signal?.reason)));
          if (state.runsUntilAborted && state.failsBeforeStart) await untilAborted();
          if (state.transcribeFails && state.failsBeforeStart) throw state.transcribeFails;
          request.onStart?.();
          if (state.failsLater) await new Promise((resolve) => setTimeout(resolve, 50));
          if (state.transcribeFails) throw state.transcribeFails;
          if (state.runsUntilAborted) await untilAborted();
          state.requests.push(request);
          state.transcribed.push(path);
          if (state.segmentTexts.length === 0) return transcript;
          const segments = state.segmentTexts.map((text, id) => ({ id, start: id, end: id + 1, text, tokens: [1] }));
          for (const segment of segments) request.onSegments?.([segment]);
          return { ...transcript, text: state.segmentTexts.join("").trim(), segments };
        },
        extract: async () => {
          if (state.extractFails) throw state.extractFails;
          return { durationSeconds: 1 };
        },
      },
    },
    workerForwarder: null,
    catalog: { list: async () => ["m", "org/m"] },
    leases: { kind: "embedded", snapshot: async () => ({ cap: null, held: 0, free: null, instances: [] }) },
    tempDir: scratch,
    jobs: { get: async (id) => state.jobs.get(id) ?? null, list: async () => ({ jobs: [...state.jobs.values()], nextCursor: null }) },
    jobService: new JobService({
      store: { findByIdempotencyKey: async (key) => [...state.jobs.values()].find((j) => j.idempotencyKey === key) ?? null },
      blobs: { save: async (_id, path, meta) => ({ kind: "upload", path, ...meta }), localPath: async () => "", remove: async () => undefined },
      runner: {
        assertRoom: async () => {
          if (state.queueFull) throw full();
        },
        submit: async (record) => (state.submitted.push(record), { job: record, created: true }),
        replayed: async (job) => job,
        cancel: async (id) => state.jobs.get(id) ?? null,
      },
      catalog: { resolve: (name = "m") => ({ name, id: name, dtype: "q8" }), timestamped: () => null },
      policy: { allow: [] },
      webhookSecrets: [],
      vad,
    }),
    policy: { allow: [] },
    // Signatures are checked for real in lib/cluster/qstash.test.ts; here every token but the forged ones
    // passes as signed, and "forged-by-upstash" claims QStash issued it.
    qstash: cluster
      ? {
          receiver: {
            signedByUs: (signature) => signature !== undefined && !signature.startsWith("forged"),
            claimsUpstash: (signature) => signature === "forged-by-upstash",
            verify: async () => true,
          },
          deliveryUrl: "http://test",
          publicUrl: "http://test",
          runner: { handleDelivery: async () => "ran", redeliver: async () => "skipped" },
          jobs: { get: async () => null, update: async () => null, pendingCallbacks: async () => [] },
          cancelMessage: async () => undefined,
          onCallbackAttempt: () => undefined,
        }
      : null,
    baseUrl: () => "http://test",
    draining: false,
    interrupted: new AbortController().signal,
  };
  return { state, app: createApp(deps) };
}

function upload(bytes: number, fields: Record<string, string> = {}): FormData {
  const form = new FormData();
  form.set("file", new Blob([new Uint8Array(bytes)]), "a.wav");
  for (const [name, value] of Object.entries(fields)) form.set(name, value);
  return form;
}

let scratch: string;
beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), "slotscribe-app-"));
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function errorOf(res: Response): Promise<string> {
  return ((await res.json()) as { error: { code: string } }).error.code;
}

/** 16 MiB offered in 16 KiB chunks with no Content-Length, counting how much of it was read. */
function chunkedBody(): { body: ReadableStream<Uint8Array>; pulled: () => number } {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulled >= 16 << 20) return controller.close();
      pulled += 16 << 10;
      controller.enqueue(new Uint8Array(16 << 10).fill(0x20));
    },
  });
  return { body, pulled: () => pulled };
}

describe("the HTTP API in process", () => {
  it("lets the pages of CORS_ORIGINS call it from a browser, errors included, and no other origin", async () => {
    const page = "https://app.example";
    const preflight = (app: ReturnType<typeof fakes>["app"], origin: string) =>
      app.request("/v1/audio/transcriptions", {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,x-stainless-os" },
      });
    const { app, state } = fakes(scratch, { corsOrigins: [page] });
    const allowed = await preflight(app, page);
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(page);
    expect(allowed.headers.get("access-control-allow-methods")).toContain("POST");
    expect(allowed.headers.get("access-control-allow-headers")).toBe("authorization,x-stainless-os");
    const models = await app.request("/v1/models", { headers: { ...auth, origin: page } });
    expect(models.status).toBe(200);
    expect(models.headers.get("access-control-allow-origin")).toBe(page);
    expect(models.headers.get("access-control-expose-headers")).toContain("retry-after");
    // A page can read why it was refused.
    const unauthorized = await app.request("/v1/models", { headers: { origin: page } });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get("access-control-allow-origin")).toBe(page);
    state.transcriptionsFull = true;
    const full = await app.request("/v1/audio/transcriptions", { method: "POST", headers: { ...auth, origin: page }, body: upload(16, { model: "m" }) });
    expect(full.status).toBe(429);
    expect(full.headers.get("access-control-allow-origin")).toBe(page);
    expect(full.headers.get("retry-after")).toBe("7");

    const other = await preflight(app, "https://elsewhere.example");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    expect((await app.request("/v1/models", { headers: { ...auth, origin: "https://elsewhere.example" } })).headers.get("access-control-allow-origin")).toBeNull();

    const any = fakes(scratch, { corsOrigins: ["*"] }).app;
    expect((await preflight(any, "https://elsewhere.example")).headers.get("access-control-allow-origin")).toBe("*");
    // Unset, a preflight is a request like any other (without a key: 401).
    const none = fakes(scratch).app;
    const refused = await preflight(none, page);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("refuses a request without a valid API key with 401, before reading the body", async () => {
    const { app } = fakes(scratch);
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", body: upload(100) });
    expect(res.status).toBe(401);
    expect(await readdir(scratch)).toEqual([]);
  });

  it("lists models and answers unknown routes with 404", async () => {
    const { app } = fakes(scratch);
    const models = await app.request("/v1/models", { headers: auth });
    expect(models.status).toBe(200);
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toEqual(["m", "org/m"]);
    // An id with a slash, encoded as the SDKs send it or as it is.
    for (const path of ["/v1/models/org%2Fm", "/v1/models/org/m"]) {
      const res = await app.request(path, { headers: auth });
      expect(res.status, path).toBe(200);
      expect(((await res.json()) as { id: string }).id).toBe("org/m");
    }
    expect(await errorOf(await app.request("/v1/models/org/x", { headers: auth }))).toBe("not_found");
    expect(await errorOf(await app.request("/v1/nothing", { headers: auth }))).toBe("not_found");
    // QStash's endpoints exist only in cluster mode.
    expect(await errorOf(await app.request("/internal/qstash/run", { method: "POST", body: "{}" }))).toBe("not_found");
  });

  it("refuses a body sent without its length once past what its route reads, not after the upload limit", async () => {
    const { app } = fakes(scratch, { maxUploadBytes: 8 << 20 });
    const cases = [
      { path: "/v1/jobs", type: "application/json", code: "payload_too_large" },
      { path: "/v1/audio/transcriptions", type: "application/octet-stream", code: "unsupported_media" },
    ];
    for (const { path, type, code } of cases) {
      const offered = chunkedBody();
      const res = await app.request(path, { method: "POST", body: offered.body, duplex: "half", headers: { ...auth, "content-type": type } } as RequestInit);
      expect(await errorOf(res), path).toBe(code);
      // Read no further than the JSON limit (64 KiB) and a chunk or two the stream pulls ahead.
      expect(offered.pulled(), path).toBeLessThanOrEqual(128 << 10);
    }
  });

  it("refuses a language named like a property every object has, as any unknown language", async () => {
    const { app, state } = fakes(scratch);
    for (const language of ["constructor", "__proto__", "toString"]) {
      const res = await app.request("/v1/audio/transcriptions", { method: "POST", body: upload(8, { model: "whisper-1", language }), headers: auth });
      expect(res.status, language).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param).toBe("language");
    }
    expect(state.transcribed).toEqual([]);
  });

  it("refuses a streamed transcript in a format a stream does not carry, and streams json and text", async () => {
    const { app, state } = fakes(scratch);
    for (const path of ["/v1/audio/transcriptions", "/v1/audio/translations"]) {
      for (const response_format of ["srt", "vtt", "verbose_json"]) {
        const res = await app.request(path, { method: "POST", headers: auth, body: upload(8, { stream: "true", response_format }) });
        expect(res.status, `${path} ${response_format}`).toBe(400);
        expect(((await res.json()) as { error: { param: string } }).error.param).toBe("response_format");
      }
    }
    expect(state.transcribed).toEqual([]);
    for (const response_format of ["json", "text"]) {
      const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(8, { stream: "true", response_format }) });
      expect(res.headers.get("content-type"), response_format).toMatch(/^text\/event-stream/);
      await res.text();
    }
  });

  it("takes a temperature written in decimal on every route, a blank one as none, and refuses any other spelling", async () => {
    const { app, state } = fakes(scratch);
    const form = (path: string, temperature: string) => app.request(path, { method: "POST", headers: auth, body: upload(8, { temperature }) });
    const json = (temperature: unknown) =>
      app.request("/v1/jobs", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ url: "https://8.8.8.8/a.mp3", temperature }) });
    for (const path of ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/jobs"]) {
      for (const temperature of ["0x1", "1e0", "true", "2", "-0.2"]) {
        const res = await form(path, temperature);
        expect(res.status, `${path} ${temperature}`).toBe(400);
        expect(((await res.json()) as { error: { param: string } }).error.param).toBe("temperature");
      }
      expect((await form(path, "")).status, path).toBeLessThan(300);
      expect((await form(path, " 0.4 ")).status, path).toBeLessThan(300);
    }
    for (const temperature of ["0x1", null, true]) expect((await json(temperature)).status, String(temperature)).toBe(400);
    expect((await json(0.6)).status).toBe(202);
    expect(state.requests.map((r) => r.temperature)).toEqual([undefined, 0.4, undefined, 0.4]);
    expect(state.submitted.map((s) => s.request.temperature)).toEqual([undefined, 0.4, 0.6]);
  });

  it("refuses a prompt holding Whisper's special tokens on every route that takes one, and passes on text that only looks like them", async () => {
    const { app, state } = fakes(scratch);
    const audio = (path: string, prompt: string, fields: Record<string, string> = {}) =>
      app.request(path, { method: "POST", headers: auth, body: upload(8, { prompt, ...fields }) });
    const jobJson = (prompt: string) =>
      app.request("/v1/jobs", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ url: "https://8.8.8.8/a.mp3", prompt }) });
    const refusals = [
      ["transcriptions", await audio("/v1/audio/transcriptions", "Names: Anna, Bo.<|endoftext|>")],
      ["streamed", await audio("/v1/audio/transcriptions", "<|de|> Guten Tag", { stream: "true" })],
      ["translations", await audio("/v1/audio/translations", "<|startofprev|>")],
      ["job upload", await audio("/v1/jobs", "hello <|0.00|>")],
      ["job url", await jobJson("<|notimestamps|> hi")],
    ] as const;
    for (const [route, res] of refusals) {
      expect(res.status, route).toBe(400);
      const { error } = (await res.json()) as { error: { code: string; param: string; message: string } };
      expect(error, route).toMatchObject({ code: "invalid_request", param: "prompt", message: expect.stringContaining("special token") });
    }
    expect(state.transcribed).toEqual([]);
    expect(state.submitted).toEqual([]);
    // Not a token of Whisper's vocabulary: the tokenizer reads these as text.
    const lookalike = "<|EN|> a|>b <| c |> <|de";
    expect((await audio("/v1/audio/transcriptions", lookalike)).status).toBe(200);
    expect((await jobJson(lookalike)).status).toBe(202);
    expect([state.requests[0]!.prompt, state.submitted[0]!.request.prompt]).toEqual([lookalike, lookalike]);
  });

  it("takes a prompt of up to 256 KiB, as a whole previous transcript, while every other field and a second prompt stay within 64 KiB", async () => {
    const { app, state } = fakes(scratch);
    const post = (path: string, form: FormData) => app.request(path, { method: "POST", headers: auth, body: form });
    const transcript = "the previous chunk said this. ".repeat(8000);
    for (const path of ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/jobs"])
      expect((await post(path, upload(8, { prompt: transcript }))).status, path).toBeLessThan(300);
    // Only its end reaches the decoder: stored jobs and forwarded requests carry no more.
    for (const prompt of [...state.requests.map((r) => r.prompt), state.submitted[0]!.request.prompt]) {
      expect(transcript.endsWith(prompt!)).toBe(true);
      expect(prompt!.length).toBeLessThan(10_000);
    }
    const refusals = [
      ["prompt", await post("/v1/audio/transcriptions", upload(8, { prompt: "a".repeat(256 * 1024 + 1) })), 256 * 1024],
      ["language", await post("/v1/audio/transcriptions", upload(8, { language: "a".repeat(64 * 1024 + 1) })), 64 * 1024],
      ["metadata", await post("/v1/jobs", upload(8, { metadata: "a".repeat(100 * 1024) })), 64 * 1024],
    ] as const;
    const twice = upload(8, { prompt: "short" });
    twice.append("prompt", "a".repeat(64 * 1024 + 1));
    for (const [param, res, limit] of [...refusals, ["prompt", await post("/v1/audio/transcriptions", twice), 64 * 1024] as const]) {
      expect(res.status, param).toBe(400);
      expect((await res.json()) as unknown, param).toMatchObject({ error: { param, message: expect.stringContaining(`longer than ${limit} bytes`) } });
    }
  });

  it("leaves no spooled upload behind when a failing part and the file arrive in one chunk", async () => {
    const { app } = fakes(scratch, { maxUploadBytes: 1 << 20 });
    const form = new FormData();
    // The file sent as a text field first: refused, and the file part after it in the same chunk is not taken.
    form.append("file", "oops");
    form.append("file", new Blob([new Uint8Array(4096)]), "a.wav");
    // One buffer, so the parser is given both parts at once.
    const encoded = new Response(form);
    const body = new Uint8Array(await encoded.arrayBuffer());
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", body, headers: { ...auth, "content-type": encoded.headers.get("content-type")! } });
    expect(await errorOf(res)).toBe("invalid_request");
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await readdir(scratch)).filter((name) => name.endsWith(".upload"))).toEqual([]);
  });

  it("streams deltas that join into the done event's text exactly, spaces at either end included", async () => {
    const { app, state } = fakes(scratch);
    state.segmentTexts = [" ", " Hello. ", " ", "World ", " "];
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", body: upload(8, { model: "whisper-1", stream: "true" }), headers: auth });
    expect(res.status).toBe(200);
    const events = (await res.text())
      .split("\n")
      .filter((line) => line.startsWith("data: "))
      .map((line) => JSON.parse(line.slice(6)) as { type: string; delta?: string; text?: string });
    const done = events.at(-1)!;
    expect(done).toMatchObject({ type: "transcript.text.done", text: "Hello.  World" });
    expect(
      events
        .filter((e) => e.type === "transcript.text.delta")
        .map((e) => e.delta)
        .join(""),
    ).toBe(done.text);
  });

  it("refuses a QStash delivery its token was not signed for before reading its body", async () => {
    const { app, state } = fakes(scratch, { cluster: true, maxUploadBytes: 8 << 20 });
    for (const headers of [{ "upstash-signature": "forged" }, {}] as Record<string, string>[]) {
      const offered = chunkedBody();
      const res = await app.request(QSTASH_RUN_PATH, { method: "POST", body: offered.body, duplex: "half", headers } as RequestInit);
      expect(res.status).toBe(401);
      expect(await errorOf(res)).toBe("unauthorized");
      expect(offered.pulled()).toBeLessThanOrEqual(128 << 10);
    }
    expect(state.errorLogs).toEqual([]);
    // Another method than QStash's POST is answered as anywhere else.
    const got = await app.request(QSTASH_RUN_PATH, { method: "GET" });
    expect(got.status).toBe(405);
    expect(got.headers.get("allow")).toBe("POST");
    // Anyone's forgery is only a 401; a token QStash says it issued points at the instance's signing keys.
    expect(state.warnLogs).toEqual([]);
    const misconfigured = await app.request(QSTASH_RUN_PATH, { method: "POST", body: "{}", headers: { "upstash-signature": "forged-by-upstash" } });
    expect(misconfigured.status).toBe(401);
    expect(state.warnLogs).toEqual([expect.stringContaining("QSTASH_CURRENT_SIGNING_KEY")]);
  });

  it("answers a signed QStash delivery whose body is not JSON with 400, not 500", async () => {
    const { app, state } = fakes(scratch, { cluster: true });
    for (const path of [QSTASH_RUN_PATH, QSTASH_RUN_FAILED_PATH, QSTASH_CALLBACK_FAILED_PATH, QSTASH_CALLBACK_ATTEMPT_PATH]) {
      const res = await app.request(path, { method: "POST", body: "not json", headers: { "upstash-signature": "signed" } });
      expect(res.status, path).toBe(400);
      expect(await errorOf(res), path).toBe("invalid_request");
    }
    expect(state.errorLogs).toEqual([]);
  });

  it("answers a method a route does not take with 405 and the methods it takes", async () => {
    const { app } = fakes(scratch);
    const cases = [
      { method: "GET", path: "/v1/audio/transcriptions", allow: "POST" },
      { method: "HEAD", path: "/v1/audio/transcriptions", allow: "POST" },
      { method: "PUT", path: "/v1/jobs", allow: "GET, POST, HEAD" },
      { method: "POST", path: "/v1/jobs/job_abc", allow: "GET, DELETE, HEAD" },
      { method: "DELETE", path: "/v1/models/whisper-1", allow: "GET, HEAD" },
    ];
    for (const { method, path, allow } of cases) {
      const res = await app.request(path, { method, headers: auth });
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(res.headers.get("allow"), `${method} ${path}`).toBe(allow);
      if (method !== "HEAD") expect(await errorOf(res)).toBe("method_not_allowed");
    }
    expect((await app.request("/v1/jobs/job_abc/nothing", { method: "POST", headers: auth })).status).toBe(404);
  });

  it("gets, lists, cancels jobs and refuses a result that is not ready", async () => {
    const { app } = fakes(scratch);
    expect((await app.request("/v1/jobs/job_abc", { headers: auth })).status).toBe(200);
    expect((await app.request("/v1/jobs/job_nope", { headers: auth })).status).toBe(404);
    expect((await app.request("/v1/jobs/not-an-id", { headers: auth })).status).toBe(400);
    expect((await app.request("/v1/jobs?limit=1000", { headers: auth })).status).toBe(400);
    expect((await app.request("/v1/jobs?status=queued", { headers: auth })).status).toBe(200);
    expect((await app.request("/v1/jobs/job_nope", { method: "DELETE", headers: auth })).status).toBe(404);
    const result = await app.request("/v1/jobs/job_abc/result", { headers: auth });
    expect(result.status).toBe(409);
  });

  it("shows when a pending callback is tried next, and nothing once it is settled", async () => {
    const { app, state } = fakes(scratch);
    const attempt = { at: "2026-12-06T10:00:00.000Z", status: 500, latencyMs: 12 };
    const request = { ...job().request, callbackUrl: "https://hooks.example/x" };
    const callbackOf = async (id: string) => ((await (await app.request(`/v1/jobs/${id}`, { headers: auth })).json()) as { callback: Record<string, unknown> }).callback;
    state.jobs.set(
      "job_retry",
      job({ id: "job_retry", status: "failed", request, callback: { webhookId: "msg_1", state: "pending", attempts: [attempt], nextAttemptAt: "2026-12-06T10:05:00.000Z" } }),
    );
    expect(await callbackOf("job_retry")).toMatchObject({ state: "pending", attempts: [{ status: 500, latency_ms: 12 }], next_attempt_at: "2026-12-06T10:05:00.000Z" });
    state.jobs.set(
      "job_done",
      job({ id: "job_done", status: "failed", request, callback: { webhookId: "msg_2", state: "delivered", attempts: [attempt], nextAttemptAt: "2026-12-06T10:05:00.000Z" } }),
    );
    expect(await callbackOf("job_done")).toMatchObject({ state: "delivered", next_attempt_at: null });
  });

  it("serves a finished job's result in each format's content type", async () => {
    const { app, state } = fakes(scratch);
    const result: Transcript = { task: "transcribe", language: "en", duration: 1.2, text: " hello", segments: [{ id: 0, start: 0, end: 1.2, text: " hello", tokens: [1] }] };
    state.jobs.set("job_done", job({ id: "job_done", status: "succeeded", result }));
    const get = (format: string) => app.request(`/v1/jobs/job_done/result?format=${format}`, { headers: auth });
    const json = await get("json");
    expect(json.headers.get("content-type")).toBe("application/json");
    expect(await json.json()).toEqual({ text: " hello", usage: { type: "duration", seconds: 2 } });
    const vtt = await get("vtt");
    expect(vtt.headers.get("content-type")).toBe("text/vtt; charset=utf-8");
    expect(await vtt.text()).toBe("WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nhello\n\n");
    expect(await (await get("text")).text()).toBe("hello\n");
  });

  it("transcribes an upload spooled to scratch space and removes it afterwards", async () => {
    const { app, state } = fakes(scratch);
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(1000, { response_format: "text" }) });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("hello");
    expect(state.transcribed).toHaveLength(1);
    expect(await readdir(scratch)).toEqual([]);
  });

  it('takes chunking_strategy as the SDKs send an object, as JSON or as "auto", and refuses anything else naming it', async () => {
    const { app, state } = fakes(scratch);
    const post = (fields: Record<string, string>) => app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(100, fields) });
    const accepted: Record<string, string>[] = [
      {},
      { chunking_strategy: "auto" },
      { "chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.7", "chunking_strategy[silence_duration_ms]": "500" },
      { chunking_strategy: '{"type": "server_vad", "prefix_padding_ms": 200}' },
    ];
    for (const fields of accepted) expect((await post(fields)).status, JSON.stringify(fields)).toBe(200);
    expect(state.requests.map((r) => r.speechDetection)).toEqual([
      undefined,
      undefined,
      { threshold: 0.7, minSilenceMs: 500, padMs: undefined },
      { threshold: undefined, minSilenceMs: undefined, padMs: 200 },
    ]);
    const refused: Record<string, string>[] = [
      { chunking_strategy: "none" },
      { chunking_strategy: "{" },
      { chunking_strategy: '{"type": "semantic_vad"}' },
      { chunking_strategy: '{"type": "server_vad", "threshold": 1.5}' },
      { chunking_strategy: '{"type": "server_vad", "treshold": 0.5}' },
      { "chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "-5" },
      { "chunking_strategy[threshold]": "0.5" },
      { chunking_strategy: "auto", "chunking_strategy[type]": "server_vad" },
    ];
    for (const fields of refused) {
      const res = await post(fields);
      expect(res.status, JSON.stringify(fields)).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param).toBe("chunking_strategy");
    }
    expect(state.requests).toHaveLength(accepted.length);
    expect(await readdir(scratch)).toEqual([]);
  });

  it("keeps a job's chunking_strategy, from a form or a JSON body, and refuses it where speech detection has no settings", async () => {
    const { app, state } = fakes(scratch);
    const form = await app.request("/v1/jobs", {
      method: "POST",
      headers: auth,
      body: upload(100, { "chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "400" }),
    });
    expect(form.status).toBe(202);
    const json = (chunking_strategy: unknown) =>
      app.request("/v1/jobs", {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ url: "https://8.8.8.8/a.mp3", chunking_strategy }),
      });
    expect((await json({ type: "server_vad", threshold: 0.3 })).status).toBe(202);
    expect((await json("auto")).status).toBe(202);
    expect(state.submitted.map((j) => j.request.speechDetection)).toEqual([
      { threshold: undefined, minSilenceMs: 400, padMs: undefined },
      { threshold: 0.3, minSilenceMs: undefined, padMs: undefined },
      undefined,
    ]);
    const bad = await json({ type: "server_vad", silence_duration_ms: 1.5 });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("chunking_strategy");

    const energy = fakes(scratch, { vad: "energy" });
    const refused = await energy.app.request("/v1/jobs", { method: "POST", headers: auth, body: upload(100, { chunking_strategy: '{"type": "server_vad"}' }) });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain("VAD=energy");
    expect(energy.state.submitted).toEqual([]);
    expect(await readdir(scratch)).toEqual([]);
  });

  it("keeps a job's word timestamps and logprobs, from a form (either spelling) or a JSON body, and refuses other values", async () => {
    const { app, state } = fakes(scratch);
    const form = (fields: Record<string, string>) => app.request("/v1/jobs", { method: "POST", headers: auth, body: upload(100, fields) });
    const json = (body: Record<string, unknown>) =>
      app.request("/v1/jobs", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ url: "https://8.8.8.8/a.mp3", ...body }) });
    expect((await form({ "timestamp_granularities[]": "word", "include[]": "logprobs" })).status).toBe(202);
    expect((await form({ timestamp_granularities: "segment" })).status).toBe(202);
    expect((await json({ timestamp_granularities: ["segment", "word"], include: ["logprobs"] })).status).toBe(202);
    expect((await json({})).status).toBe(202);
    expect(state.submitted.map((j) => [j.request.wordTimestamps, j.request.includeLogprobs])).toEqual([
      [true, true],
      [undefined, undefined],
      [true, true],
      [undefined, undefined],
    ]);
    for (const bad of [{ timestamp_granularities: ["letter"] }, { include: ["everything"] }, { timestamp_granularities: 3 }]) {
      const res = await json(bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
    expect(state.submitted).toHaveLength(4);
  });

  it("says a file part without a filename arrived as text, whatever its size", async () => {
    const { app, state } = fakes(scratch);
    for (const bytes of [100, 70_000]) {
      const body = `--x\r\ncontent-disposition: form-data; name="file"\r\n\r\n${"a".repeat(bytes)}\r\n--x--\r\n`;
      const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: { ...auth, "content-type": "multipart/form-data; boundary=x" }, body });
      expect(res.status, `${bytes} bytes`).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toContain('"file" arrived as a text field');
    }
    const urlencoded = await app.request("/v1/audio/transcriptions", {
      method: "POST",
      headers: { ...auth, "content-type": "application/x-www-form-urlencoded" },
      body: "file=abc&model=m",
    });
    expect(((await urlencoded.json()) as { error: { message: string } }).error.message).toContain("multipart/form-data");
    expect(state.transcribed).toEqual([]);
  });

  it("answers 400, 413 and 415 for uploads it cannot take, leaving nothing behind", async () => {
    const { app } = fakes(scratch);
    const post = (body: BodyInit, headers: Record<string, string> = {}) => app.request("/v1/audio/transcriptions", { method: "POST", headers: { ...auth, ...headers }, body });
    expect(await errorOf(await post(upload(5000)))).toBe("payload_too_large");
    expect(await errorOf(await post("hello", { "content-type": "text/plain" }))).toBe("unsupported_media");
    const noFile = new FormData();
    noFile.set("model", "m");
    expect(await errorOf(await post(noFile))).toBe("invalid_request");
    expect(await errorOf(await post('--x\r\ncontent-disposition: form-data; name="file"; filename="a"\r\n\r\nabc', { "content-type": "multipart/form-data; boundary=x" }))).toBe(
      "invalid_request",
    );
    const twoFiles = upload(10);
    twoFiles.append("file", new Blob(["b"]), "b.wav");
    expect(await errorOf(await post(twoFiles))).toBe("invalid_request");
    expect(await readdir(scratch)).toEqual([]);
  });

  it("answers an extraction whose ffmpeg got no further with the file with 422, without its stderr, leaving nothing behind", async () => {
    const { app, state } = fakes(scratch);
    state.extractFails = stallFailure(FFMPEG_STALL_MS, new FfmpegFailure({ code: null, signal: "SIGKILL" }, `${scratch}/upload: still reading`));
    const res = await app.request("/v1/audio/extract", { method: "POST", headers: auth, body: upload(1000) });
    expect(res.status).toBe(422);
    const body = await res.text();
    expect(JSON.parse(body)).toMatchObject({
      error: { code: "unprocessable_audio", type: "invalid_request_error", message: "audio could not be decoded: ffmpeg got no further with the file for 60 s" },
    });
    expect(body).not.toContain(scratch);
    expect(await readdir(scratch)).toEqual([]);
  });

  it("refuses with 429 and Retry-After before reading an upload when the line is full", async () => {
    const { app, state } = fakes(scratch);
    state.transcriptionsFull = true;
    const sync = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(1000) });
    expect(sync.status).toBe(429);
    expect(sync.headers.get("retry-after")).toBe("7");
    state.queueFull = true;
    const job = await app.request("/v1/jobs", { method: "POST", headers: auth, body: upload(1000) });
    expect(job.status).toBe(429);
    expect(state.submitted).toEqual([]);
    expect(await readdir(scratch)).toEqual([]);
  });

  it("accepts a job upload, and replays an Idempotency-Key with the queue full (a job from before requests were digested, too)", async () => {
    const { app, state } = fakes(scratch);
    state.jobs.set("job_k", job({ id: "job_k", idempotencyKey: "k1" }));
    const first = await app.request("/v1/jobs", { method: "POST", headers: auth, body: upload(1000) });
    expect(first.status).toBe(202);
    expect(state.submitted[0]?.input).toMatchObject({ kind: "upload", bytes: 1000, filename: "a.wav" });
    state.queueFull = true;
    const replay = await app.request("/v1/jobs", { method: "POST", headers: { ...auth, "idempotency-key": "k1" }, body: upload(1000) });
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(((await replay.json()) as { id: string }).id).toBe("job_k");
    expect(await readdir(scratch)).toEqual([]);
  });

  it("refuses an Idempotency-Key reused for another file or other parameters with 422, and replays the same request sent again", async () => {
    const { app, state } = fakes(scratch);
    const send = (body: FormData, key = "k2") => app.request("/v1/jobs", { method: "POST", headers: { ...auth, "idempotency-key": key }, body });
    const audio = (fill: number) => {
      const form = new FormData();
      form.set("file", new Blob([new Uint8Array(1000).fill(fill)]), "a.wav");
      return form;
    };
    const withFields = (fill: number, fields: Record<string, string>) => {
      const form = audio(fill);
      for (const [name, value] of Object.entries(fields)) form.set(name, value);
      return form;
    };
    const first = await send(withFields(1, { language: "en", metadata: '{"a":1,"b":{"c":2,"d":3}}' }));
    expect(first.status).toBe(202);
    const created = state.submitted[0]!;
    state.jobs.set(created.id, created);

    // The same bytes under another name, the metadata's keys in another order: the same request.
    const retry = withFields(1, { metadata: '{"b":{"d":3,"c":2},"a":1}', language: "en" });
    retry.set("file", new Blob([new Uint8Array(1000).fill(1)]), "renamed.wav");
    const replay = await send(retry);
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(((await replay.json()) as { id: string }).id).toBe(created.id);

    for (const other of [
      withFields(2, { language: "en", metadata: '{"a":1,"b":{"c":2,"d":3}}' }),
      withFields(1, { language: "fr", metadata: '{"a":1,"b":{"c":2,"d":3}}' }),
      audio(1),
    ]) {
      const refused = await send(other);
      expect(refused.status).toBe(422);
      const body = (await refused.json()) as { error: { code: string; param: string; message: string } };
      expect(body.error).toMatchObject({ code: "idempotency_key_reused", param: "Idempotency-Key" });
      expect(body.error.message).toContain(created.id);
    }
    expect(state.submitted).toHaveLength(1);
    expect(await readdir(scratch)).toEqual([]);
  });

  it("reports readiness and capacity from the transcriber's status", async () => {
    const { app, state } = fakes(scratch);
    const readyz = async () => {
      const res = await app.request("/readyz");
      return { status: res.status, notReady: ((await res.json()) as { notReady: string[] }).notReady };
    };
    expect(await readyz()).toEqual({ status: 200, notReady: [] });
    const capacity = await app.request("/v1/capacity", { headers: auth });
    expect(capacity.status).toBe(200);
    expect(((await capacity.json()) as { instance: { slots: number } }).instance.slots).toBe(2);
    // Ready while the next request would be taken: a transcription free, or a place in the line.
    state.status = { ...status, transcriptions: { limit: 4, active: 4, queued: 15, queueSize: 16, waitingForLease: 0 } };
    expect((await app.request("/readyz")).status).toBe(200);
    state.status = { ...status, transcriptions: { limit: 4, active: 4, queued: 16, queueSize: 16, waitingForLease: 0 } };
    expect(await readyz()).toEqual({ status: 503, notReady: ["every transcription place is taken and the queue is full"] });
    // QUEUE_SIZE=0: no line, so an instance with a transcription free is ready.
    state.status = { ...status, transcriptions: { limit: 4, active: 3, queued: 0, queueSize: 0, waitingForLease: 0 } };
    expect((await app.request("/readyz")).status).toBe(200);
    state.status = { ...status, transcriptions: { limit: 4, active: 4, queued: 0, queueSize: 0, waitingForLease: 0 } };
    expect((await app.request("/readyz")).status).toBe(503);
    state.status = { ...status, models: [{ id: "m", dtype: "q8", state: "loading", preloaded: true }] };
    expect(await readyz()).toEqual({ status: 503, notReady: ["model m (q8) is loading"] });
    // A model a request asked for that fails to load fails that request; the instance still serves its own.
    state.status = { ...status, models: [...status.models, { id: "org/typo", dtype: "q8", state: "failed", preloaded: false, error: "not found" }] };
    expect((await app.request("/readyz")).status).toBe(200);
    // Public: why a model failed, without where the server keeps its files.
    state.status = {
      ...status,
      models: [{ id: "org/m", dtype: "q8", state: "failed", preloaded: true, error: 'file was not found locally at "/srv/app/models/org/m/config.json"; see C:\\models\\x.onnx' }],
    };
    const failed = (await (await app.request("/readyz")).json()) as { models: { error: string }[] };
    expect(failed.models[0]!.error).toBe('file was not found locally at "config.json"; see x.onnx');
  });

  it("logs a 500 at error level and a not-ready 503 as a warning", async () => {
    const { app, state } = fakes(scratch);
    state.transcribeFails = new Error("a bug");
    const failed = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m" }) });
    expect(failed.status).toBe(500);
    state.status = { ...status, models: [{ id: "m", dtype: "q8", state: "loading", preloaded: true }] };
    expect((await app.request("/readyz")).status).toBe(503);
    expect((await app.request("/healthz")).status).toBe(200);
    expect(state.requestLogs).toEqual([
      { level: "error", status: 500 },
      { level: "warn", status: 503 },
      { level: "info", status: 200 },
    ]);
    expect(state.errorLogs).toEqual(["unhandled error"]);
  });

  it("puts what a failing dependency said in the 503's request line, not in the answer", async () => {
    const { app, state } = fakes(scratch);
    // As the lease store fails a sync request: our error, the store's, then what Redis said.
    state.transcribeFails = new DomainError("unavailable", "The cluster's lease store is unreachable; retry shortly.", {
      cause: new StoreUnavailable("lease store unreachable", new Error("UNAUTHORIZED: token revoked")),
    });
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m" }) });
    expect(res.status).toBe(503);
    expect(JSON.stringify(await res.json())).not.toContain("revoked");
    expect(state.requestLines).toEqual([
      expect.objectContaining({ level: "warn", status: 503, error: "unavailable", cause: "lease store unreachable: UNAUTHORIZED: token revoked" }),
    ]);
  });

  it("answers a full disk with 503 and Retry-After, and tells the operator", async () => {
    const { app, state } = fakes(scratch);
    // The kernel's own answer for a full disk: /dev/full refuses every write with ENOSPC.
    state.transcribeFails = await writeFile("/dev/full", "x").then(
      () => null,
      (err: unknown) => err,
    );
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m" }) });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("60");
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string } };
    expect(body.error).toMatchObject({ code: "unavailable", message: expect.stringContaining("no room") });
    expect(body.error.message).not.toContain("ENOSPC");
    expect(state.requestLogs).toEqual([{ level: "warn", status: 503 }]);
    expect(state.errorLogs).toEqual([expect.stringContaining("DATA_DIR")]);
  });

  it("answers a streamed request refused before its transcription is under way as it answers one without stream", async () => {
    const { app, state } = fakes(scratch);
    state.failsBeforeStart = true;
    const refusals = [
      { error: new DomainError("rate_limited", "still full after the queue's timeout", { retryAfterSeconds: 9 }), status: 429, code: "rate_limited", retryAfter: "9" },
      { error: new DomainError("invalid_request", "Unknown model", { details: { param: "model" } }), status: 400, code: "invalid_request", retryAfter: null },
      { error: new DomainError("unsupported_media", "not audio"), status: 400, code: "invalid_request", retryAfter: null },
    ];
    for (const { error, status, code, retryAfter } of refusals) {
      state.transcribeFails = error;
      for (const stream of ["true", "false"]) {
        const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m", stream }) });
        expect(res.status, `${error.message}, stream ${stream}`).toBe(status);
        expect(res.headers.get("content-type")).toContain("application/json");
        expect(res.headers.get("retry-after")).toBe(retryAfter);
        expect(await errorOf(res)).toBe(code);
      }
    }
    // The upload is removed with the refused request, as the stream would have removed it.
    expect(await readdir(scratch)).toEqual([]);
  });

  it("logs no error when the client leaves while its request waits, streamed or not", async () => {
    const { app, state } = fakes(scratch);
    state.runsUntilAborted = true;
    state.failsBeforeStart = true;
    for (const stream of ["true", "false"]) {
      const leave = new AbortController();
      const answer = app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m", stream }), signal: leave.signal });
      await new Promise((resolve) => setTimeout(resolve, 50));
      // As @hono/node-server aborts it: the reason is a string.
      leave.abort("Client connection prematurely closed.");
      expect((await answer).status).toBe(400);
    }
    expect(state.errorLogs).toEqual([]);
    expect(state.requestLogs).toEqual([
      { level: "info", status: 400 },
      { level: "info", status: 400 },
    ]);
  });

  it("logs nothing when the client leaves a stream, and stops its transcription", async () => {
    const { app, state } = fakes(scratch);
    state.runsUntilAborted = true;
    const leave = new AbortController();
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m", stream: "true" }), signal: leave.signal });
    expect(res.status).toBe(200);
    leave.abort(new Error("Client connection prematurely closed."));
    expect(await res.text()).not.toContain('"type":"error"');
    expect(state.errorLogs).toEqual([]);
    expect(state.requestLogs).toEqual([{ level: "info", status: 200 }]);
  });

  it("logs a bug found after a stream started, and ends the stream with an error event", async () => {
    const { app, state } = fakes(scratch);
    state.transcribeFails = new Error("a bug mid-stream");
    const res = await app.request("/v1/audio/transcriptions", { method: "POST", headers: auth, body: upload(16, { model: "m", stream: "true" }) });
    expect(res.status).toBe(200);
    const events = (await res.text())
      .split("\n")
      .filter((line) => line.startsWith("data: "))
      .map((line) => JSON.parse(line.slice(6)) as { type: string; error?: { code: string } });
    expect(events).toEqual([expect.objectContaining({ type: "error", error: expect.objectContaining({ code: "internal" }) })]);
    expect(state.errorLogs).toEqual(["unhandled error"]);
  });

  it("on the Node server, records a stream that failed after its 200 went out with the failure's code, in the request line and the metric", async () => {
    const { app, state } = fakes(scratch);
    state.transcribeFails = new Error("a bug mid-stream");
    state.failsLater = true;
    const server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
    });
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/v1/audio/transcriptions`, { method: "POST", headers: auth, body: upload(16, { model: "m", stream: "true" }) });
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('"type":"error"');
      await vi.waitFor(() => expect(state.requestLines).toEqual([expect.objectContaining({ level: "error", status: 200, error: "internal" })]));
      expect(state.requestLines[0]).not.toHaveProperty("aborted");
      expect(state.requestMetrics).toEqual([{ method: "POST", route: "/v1/audio/transcriptions", status: "200", error: "internal" }]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
