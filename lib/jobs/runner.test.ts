import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EmbeddedLeaseStore } from "../admission/embedded-lease-store.ts";
import { Limiter } from "../admission/limiter.ts";
import { InferenceError } from "../engine/engine.ts";
import { deferred } from "../deferred.ts";
import { DomainError } from "../errors.ts";
import { createLogger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { parseAllowlist } from "../net/outbound-policy.ts";
import type { Transcript } from "../transcript.ts";
import type { Admission, TranscribeRequest, TranscriptionService } from "../transcription-service.ts";
import { EmbeddedCallbackSender, type CallbackPayload, type CallbackSender } from "../webhooks/delivery.ts";
import { parseSchedule } from "../webhooks/retry-schedule.ts";
import { generateWebhookSecret, parseWebhookSecrets } from "../webhooks/standard-webhooks.ts";
import { FileBlobs } from "./blobs.ts";
import { EmbeddedJobStore, inputsDir } from "./embedded-job-store.ts";
import { deduplicationId, type Dispatch, type JobDispatcher, type JobRecord, type JobRequest, type JobStore } from "./ports.ts";
import { EmbeddedJobDispatcher } from "./embedded-dispatcher.ts";
import { JobRunner, type JobRunnerDeps } from "./runner.ts";
import { isRunning, stuckFfmpeg, stuckFfmpegPid } from "../../test/support/stuck-ffmpeg.ts";

const TRANSCRIPT: Transcript = { task: "transcribe", language: "english", duration: 1, text: "alpha", segments: [{ id: 0, start: 0, end: 1, text: "alpha", tokens: [1] }] };
const log = createLogger("silent");
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function receiver(secret: string) {
  const received: { webhookId: string; payload: CallbackPayload }[] = [];
  const webhook = new Webhook(secret);
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const headers = Object.fromEntries(["webhook-id", "webhook-timestamp", "webhook-signature"].map((h) => [h, String(req.headers[h])]));
      received.push({ webhookId: headers["webhook-id"]!, payload: webhook.verify(Buffer.concat(chunks).toString(), headers) as CallbackPayload });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received };
}

/** A runner over a real store whose transcription yields TRANSCRIPT unless `transcribeFile` says otherwise. */
function runner(
  store: JobStore,
  dataDir: string,
  callbacks: CallbackSender,
  transcribeFile: TranscriptionService["transcribeFile"] = async () => TRANSCRIPT,
  queueSize = 10,
  overrides: Partial<JobRunnerDeps> = {},
): JobRunner {
  return new JobRunner({
    store,
    dispatcher: new EmbeddedJobDispatcher({ store, concurrency: 1, log }),
    blobs: new FileBlobs(inputsDir(dataDir)),
    transcription: { transcribeFile, retryAfterSeconds: () => 1 } as unknown as TranscriptionService,
    callbacks,
    leases: new EmbeddedLeaseStore({ cap: null }),
    instanceId: "here",
    policy: parseAllowlist("127.0.0.1"),
    maxDownloadBytes: 1 << 20,
    downloadTimeoutMs: 1000,
    scratchDir: dataDir,
    concurrency: 1,
    queueSize,
    maxWaitMs: 60_000,
    maxDeferMs: 1000,
    log,
    metrics: { jobDuration: { observe: () => undefined } } as unknown as Metrics,
    ...overrides,
  });
}

/** A data directory removed after the test. */
async function tempDataDir(): Promise<string> {
  const dataDir = await mkdtemp(join(tmpdir(), "slotscribe-runner-"));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  return dataDir;
}

/** An embedded job store in its own data directory, both gone after the test. */
async function storeInTempDir(): Promise<{ dataDir: string; store: EmbeddedJobStore }> {
  const dataDir = await tempDataDir();
  const store = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
  cleanups.push(() => store.close());
  return { dataDir, store };
}

/** A dispatcher as QStash's behaves to the runner: room now or a deferral, each message handed to `dispatch`. */
function qstashLike(dispatch: (d: Dispatch) => Promise<void>): JobDispatcher {
  return { admission: "now", waiting: 0, start: async () => undefined, stop: () => undefined, dispatch };
}

const NO_CALLBACKS: CallbackSender = { enqueue: async () => undefined, start: async () => undefined, close: async () => undefined };

/** A queued job whose upload is already in the input store: bytes the fake transcription never reads. */
async function queuedUpload(dataDir: string, id: string, request: Partial<JobRequest> = {}): Promise<JobRecord> {
  const path = join(inputsDir(dataDir), id);
  await writeFile(path, "not audio, never decoded here");
  return {
    id,
    status: "queued",
    request: { model: "m", task: "transcribe", responseFormat: "json", callbackIncludeResult: false, ...request },
    input: { kind: "upload", path, filename: "a.wav", bytes: 29 },
    createdAt: new Date().toISOString(),
    runs: 0,
    progress: { doneSeconds: 0, totalSeconds: null },
  };
}

describe("a job's callback", () => {
  it("is sent after a crash right after the job was marked finished, before its delivery was taken on", async () => {
    const dataDir = await tempDataDir();
    const secret = generateWebhookSecret();
    const hook = await receiver(secret);

    // The first process dies at the instant after the write that marks the job succeeded: nothing
    // it would have done next (queueing the delivery, sending it) happens.
    const store = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
    const crashed: CallbackSender = { enqueue: () => new Promise(() => undefined), start: async () => undefined, close: async () => undefined };
    const first = runner(store, dataDir, crashed);
    await first.start();
    await first.submit(await queuedUpload(dataDir, "job_1", { callbackUrl: hook.url }));
    await vi.waitFor(async () => expect((await store.get("job_1"))?.status).toBe("succeeded"), { timeout: 10_000 });
    await store.close();

    // The next process finds the callback pending and sends it.
    const reopened = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
    cleanups.push(() => reopened.close());
    const sender = new EmbeddedCallbackSender({
      store: reopened,
      secrets: parseWebhookSecrets(secret),
      schedule: parseSchedule("0s"),
      policy: parseAllowlist("127.0.0.1"),
      publicUrl: "http://localhost",
      log,
    });
    cleanups.push(() => sender.close(AbortSignal.abort()));
    await sender.start();
    await vi.waitFor(() => expect(hook.received).toHaveLength(1), { timeout: 10_000 });
    expect(hook.received[0]!.payload).toMatchObject({ type: "job.succeeded", data: { id: "job_1", status: "succeeded" } });
    await vi.waitFor(async () => expect((await reopened.get("job_1"))?.callback).toMatchObject({ state: "delivered", webhookId: hook.received[0]!.webhookId }), {
      timeout: 10_000,
    });
  });
});

describe("a job whose runs end with the process running it (killed, out of memory)", () => {
  it("runs again when a process died during its run, and that run counts", async () => {
    const { dataDir, store } = await storeInTempDir();
    await store.create({ ...(await queuedUpload(dataDir, "job_died")), status: "running", runs: 1 });
    const jobs = runner(store, dataDir, NO_CALLBACKS);
    cleanups.push(() => jobs.stop());
    await jobs.start();
    await vi.waitFor(async () => expect(await store.get("job_died")).toMatchObject({ status: "succeeded", runs: 2 }), { timeout: 10_000 });
  });

  it("fails, with its callback, once every run it had ended with its process, rather than take down the next", async () => {
    const { dataDir, store } = await storeInTempDir();
    await store.create({ ...(await queuedUpload(dataDir, "job_poison", { callbackUrl: "http://127.0.0.1:9/hook" })), status: "running", runs: 3 });
    const enqueued: string[] = [];
    const callbacks: CallbackSender = { ...NO_CALLBACKS, enqueue: async (id) => void enqueued.push(id) };
    let transcribed = 0;
    const jobs = runner(store, dataDir, callbacks, async () => {
      transcribed++;
      return TRANSCRIPT;
    });
    cleanups.push(() => jobs.stop());
    await jobs.start();
    await vi.waitFor(async () => expect((await store.get("job_poison"))?.status).toBe("failed"), { timeout: 10_000 });
    expect((await store.get("job_poison"))?.error).toMatchObject({ code: "internal", message: expect.stringMatching(/3 runs ended with the server/) });
    // Delivered while its record still says running, as QStash redelivers a job whose worker died.
    await store.create({ ...(await queuedUpload(dataDir, "job_poison_running", { callbackUrl: "http://127.0.0.1:9/hook" })), status: "running", runs: 3 });
    expect(await jobs.handleDelivery("job_poison_running", 1)).toBe("ran");
    expect((await store.get("job_poison_running"))?.status).toBe("failed");
    expect(transcribed).toBe(0);
    expect(enqueued).toEqual(["job_poison", "job_poison_running"]);
  });

  it("stops waiting for a run that does not end when told to once the stop's deadline has passed", async () => {
    const { dataDir, store } = await storeInTempDir();
    let transcribing = false;
    const deaf: TranscriptionService["transcribeFile"] = () => {
      transcribing = true;
      return new Promise(() => undefined);
    };
    const jobs = runner(store, dataDir, NO_CALLBACKS, deaf);
    await jobs.start();
    await jobs.submit(await queuedUpload(dataDir, "job_deaf"));
    await vi.waitFor(() => expect(transcribing).toBe(true), { timeout: 10_000 });
    const stopped = jobs.stop(0, AbortSignal.timeout(200)).then(() => "stopped");
    expect(await Promise.race([stopped, new Promise((resolve) => setTimeout(() => resolve("still waiting"), 10_000))])).toBe("stopped");
  });

  it("does not count a run the shutdown handed back, nor show its start and progress while it waits again", async () => {
    const { dataDir, store } = await storeInTempDir();
    let transcribing = false;
    const untilAborted: TranscriptionService["transcribeFile"] = (_path, request) => {
      transcribing = true;
      request.onProgress?.(12);
      const signal = request.signal!;
      return new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    };
    const jobs = runner(store, dataDir, NO_CALLBACKS, untilAborted);
    await jobs.start();
    await jobs.submit(await queuedUpload(dataDir, "job_long"));
    await vi.waitFor(() => expect(transcribing).toBe(true), { timeout: 10_000 });
    await vi.waitFor(async () => expect((await store.get("job_long"))?.progress.doneSeconds).toBe(12), { timeout: 10_000 });
    await jobs.stop(0);
    const handedBack = await store.get("job_long");
    expect(handedBack).toMatchObject({ status: "queued", runs: 0, progress: { doneSeconds: 0 } });
    expect(handedBack).not.toHaveProperty("startedAt");
  });
});

describe("a job that meets a full disk", () => {
  it("runs again rather than failing, and succeeds once there is room", async () => {
    const dataDir = await tempDataDir();
    // The kernel's own answer for a full disk: /dev/full refuses every write with ENOSPC.
    const diskFull = await writeFile("/dev/full", "x").then(
      () => null,
      (err: unknown) => err,
    );
    expect((diskFull as NodeJS.ErrnoException).code).toBe("ENOSPC");
    let runs = 0;
    const store = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
    cleanups.push(() => store.close());
    const jobs = runner(store, dataDir, NO_CALLBACKS, async () => {
      runs++;
      if (runs === 1) throw diskFull;
      return TRANSCRIPT;
    });
    cleanups.push(() => jobs.stop());
    await jobs.start();
    await jobs.submit(await queuedUpload(dataDir, "job_full"));
    await vi.waitFor(async () => expect((await store.get("job_full"))?.status).toBe("succeeded"), { timeout: 15_000 });
    expect(runs).toBe(2);
    // The run the full disk cut short is not one of its runs.
    expect((await store.get("job_full"))?.runs).toBe(1);
  });
});

/** The embedded store on a disk that can fill up: while `full`, every write fails as the kernel fails it. */
async function fillableStore(dataDir: string) {
  const store = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
  const enospc = await writeFile("/dev/full", "x").then(
    () => null,
    (err: unknown) => err,
  );
  expect((enospc as NodeJS.ErrnoException).code).toBe("ENOSPC");
  const disk = { full: false };
  const write =
    <A extends unknown[], R>(op: (...args: A) => Promise<R>) =>
    (...args: A) =>
      disk.full ? Promise.reject(enospc) : op(...args);
  const fillable: JobStore = {
    ...Object.fromEntries((["get", "findByIdempotencyKey", "list", "count", "unfinished", "pendingCallbacks", "sweep", "close"] as const).map((m) => [m, store[m].bind(store)])),
    create: write(store.create.bind(store)),
    update: write(store.update.bind(store)),
  } as JobStore;
  return { store: fillable, disk };
}

describe("a full disk under the job store", () => {
  it("a job taken while it is full runs once there is room", async () => {
    const dataDir = await tempDataDir();
    const { store, disk } = await fillableStore(dataDir);
    cleanups.push(() => store.close());
    await store.create(await queuedUpload(dataDir, "job_waits"));
    const jobs = runner(store, dataDir, NO_CALLBACKS);
    cleanups.push(() => jobs.stop());
    // The runner takes the queued job while no state can be written (not even "running").
    disk.full = true;
    await jobs.start();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await store.get("job_waits"))?.status).toBe("queued");
    disk.full = false;
    await vi.waitFor(async () => expect((await store.get("job_waits"))?.status).toBe("succeeded"), { timeout: 10_000 });
  });

  it("a cancel that cannot be written fails and leaves the job running; once there is room it cancels", async () => {
    const dataDir = await tempDataDir();
    const { store, disk } = await fillableStore(dataDir);
    cleanups.push(() => store.close());
    let started!: () => void;
    const transcribing = new Promise<void>((resolve) => (started = resolve));
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    const jobs = runner(store, dataDir, NO_CALLBACKS, async (_path, request) => {
      started();
      await new Promise<void>((_, reject) => request.signal?.addEventListener("abort", () => (stop(), reject(request.signal?.reason))));
      return TRANSCRIPT;
    });
    cleanups.push(() => jobs.stop());
    await jobs.start();
    await jobs.submit(await queuedUpload(dataDir, "job_cancel"));
    await transcribing;
    disk.full = true;
    await expect(jobs.cancel("job_cancel")).rejects.toMatchObject({ code: "ENOSPC" });
    expect(jobs.stats.running).toBe(1);
    disk.full = false;
    expect(await jobs.cancel("job_cancel")).toMatchObject({ status: "canceled" });
    await stopped;
    expect(jobs.stats.running).toBe(0);
    expect((await store.get("job_cancel"))?.status).toBe("canceled");
  });
});

describe("a job whose media ffmpeg gets no further with", () => {
  it("is canceled at once while its duration is probed, and ffmpeg stopped", { timeout: 30_000 }, async () => {
    const { dataDir, store } = await storeInTempDir();
    const ffmpeg = await stuckFfmpeg(dataDir);
    vi.stubEnv("FFMPEG_PATH", ffmpeg);
    cleanups.push(async () => vi.unstubAllEnvs());
    const jobs = runner(store, dataDir, NO_CALLBACKS);
    cleanups.push(() => jobs.stop());
    await jobs.start();
    await jobs.submit(await queuedUpload(dataDir, "job_probed"));
    const pid = await stuckFfmpegPid(ffmpeg);
    expect(await jobs.cancel("job_probed")).toMatchObject({ status: "canceled" });
    expect(isRunning(pid)).toBe(false);
    expect(jobs.stats.running).toBe(0);
  });
});

describe("the job queue's bound", () => {
  it("holds for submissions that arrive at once", async () => {
    const { dataDir, store } = await storeInTempDir();
    // Not started: every accepted job stays queued.
    const jobs = runner(store, dataDir, NO_CALLBACKS, undefined, 2);
    const records = await Promise.all(Array.from({ length: 8 }, (_, i) => queuedUpload(dataDir, `job_${i}`)));
    const outcomes = await Promise.allSettled(records.map((record) => jobs.submit(record)));
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(2);
    expect(outcomes.flatMap((o) => (o.status === "rejected" ? [(o.reason as { code: string }).code] : []))).toEqual(Array(6).fill("rate_limited"));
    expect(await store.count("queued")).toBe(2);
  });
});

describe("a job's decoding settings", () => {
  it("reach its transcription as they were submitted, through the store, with the duration the runner probed", async () => {
    const dataDir = await tempDataDir();
    const asked: TranscribeRequest[] = [];
    const store = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
    cleanups.push(() => store.close());
    const jobs = runner(store, dataDir, NO_CALLBACKS, async (_path, request) => {
      asked.push(request);
      return TRANSCRIPT;
    });
    cleanups.push(() => jobs.stop());
    await jobs.start();
    await jobs.submit(
      await queuedUpload(dataDir, "job_vad", {
        language: "de",
        task: "translate",
        prompt: "Grüße",
        temperature: 0.4,
        speechDetection: { threshold: 0.6, minSilenceMs: 300, padMs: 100 },
        wordTimestamps: true,
        includeLogprobs: true,
      }),
    );
    await vi.waitFor(async () => expect((await store.get("job_vad"))?.status).toBe("succeeded"), { timeout: 10_000 });
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({
      id: "job_vad",
      model: "m",
      language: "de",
      task: "translate",
      prompt: "Grüße",
      temperature: 0.4,
      speechDetection: { threshold: 0.6, minSilenceMs: 300, padMs: 100 },
      wordTimestamps: true,
      includeLogprobs: true,
      // The runner's own probe of the file (it declares no duration), so the transcription does not probe it again.
      declaredSeconds: null,
    });
  });
});

describe("a job whose media URL fails", () => {
  async function urlJob(url: string) {
    const { dataDir, store } = await storeInTempDir();
    const jobs = runner(store, dataDir, NO_CALLBACKS);
    await jobs.start();
    cleanups.push(() => jobs.stop());
    const job: JobRecord = {
      id: "job_url",
      status: "queued",
      request: { model: "m", task: "transcribe", responseFormat: "json", callbackIncludeResult: false },
      input: { kind: "url", url },
      createdAt: new Date().toISOString(),
      runs: 0,
      progress: { doneSeconds: 0, totalSeconds: null },
    };
    await jobs.submit(job);
    return store;
  }

  it("fails at once on the host's 404, which no later run could change", async () => {
    const media = http.createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => media.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => media.close(resolve)));
    const store = await urlJob(`http://127.0.0.1:${(media.address() as AddressInfo).port}/gone.mp3`);
    await vi.waitFor(async () => expect((await store.get("job_url"))?.status).toBe("failed"), { timeout: 10_000 });
    const failed = (await store.get("job_url"))!;
    expect(failed.error).toMatchObject({ code: "upstream_failed", message: expect.stringMatching(/HTTP 404/) });
    expect(failed.runs).toBe(1);
  });

  it("names the host that refused the connection, as the upstream's failure, not ours", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const store = await urlJob(`http://127.0.0.1:${port}/x.mp3`);
    // Three runs, 2 s and 4 s apart: a host that is down may be back.
    await vi.waitFor(async () => expect((await store.get("job_url"))?.status).toBe("failed"), { timeout: 15_000, interval: 200 });
    const failed = (await store.get("job_url"))!;
    expect(failed.error).toMatchObject({ code: "upstream_failed", message: expect.stringMatching(/127\.0\.0\.1.*ECONNREFUSED/) });
    expect(failed.runs).toBe(3);
  });
});

describe("a job whose store is unreachable when it ends", () => {
  it("is delivered again, not left running, and succeeds once the store answers", async () => {
    const dataDir = await tempDataDir();
    const real = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
    cleanups.push(() => real.close());
    let reachable = true;
    const unreachable = () => Promise.reject(new DomainError("unavailable", "job store unreachable"));
    // The store goes away while the transcription runs (as Redis behind Upstash may for seconds).
    const store = new Proxy(real, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => (reachable || name === "close" ? (value as (...a: unknown[]) => unknown).apply(target, args) : unreachable());
      },
    });
    let runs = 0;
    const jobs = runner(store, dataDir, NO_CALLBACKS, async () => {
      runs++;
      if (runs === 1) reachable = false;
      return TRANSCRIPT;
    });
    await jobs.start();
    cleanups.push(() => jobs.stop());
    await jobs.submit(await queuedUpload(dataDir, "job_outage"));
    await vi.waitFor(() => expect(runs).toBe(1), { timeout: 5_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    reachable = true;
    // The failed delivery comes again after a pause (5 s) and runs the job from its stored state.
    await vi.waitFor(async () => expect((await real.get("job_outage"))?.status).toBe("succeeded"), { timeout: 15_000, interval: 200 });
    expect(runs).toBe(2);
  });
});

describe("a job its dispatcher could not deliver", () => {
  it("is sent again while it may wait, fails with its callback once it has waited too long, and a finished one is left alone", async () => {
    const { dataDir, store } = await storeInTempDir();
    const enqueued: string[] = [];
    const jobs = runner(store, dataDir, { ...NO_CALLBACKS, enqueue: async (id) => void enqueued.push(id) });
    await jobs.start();
    cleanups.push(() => jobs.stop());

    await store.create(await queuedUpload(dataDir, "job_fresh"));
    expect(await jobs.redeliver("job_fresh", 4)).toBe("redelivered");
    await vi.waitFor(async () => expect((await store.get("job_fresh"))?.status).toBe("succeeded"), { timeout: 10_000 });
    expect(await jobs.redeliver("job_fresh", 5)).toBe("skipped");

    // Queued longer than JOB_MAX_WAIT (60 s here).
    const stale = await queuedUpload(dataDir, "job_stale", { callbackUrl: "http://127.0.0.1:9/hook" });
    await store.create({ ...stale, createdAt: new Date(Date.now() - 120_000).toISOString() });
    expect(await jobs.redeliver("job_stale", 9)).toBe("failed");
    expect(await store.get("job_stale")).toMatchObject({ status: "failed", error: { code: "unavailable", message: expect.stringMatching(/No instance took the job/) } });
    expect(enqueued).toEqual(["job_stale"]);
  });
});

describe("a submission its dispatcher refuses", () => {
  it("keeps nothing: no job, no key, so the retry the 503 asks for creates the job", async () => {
    const { dataDir, store } = await storeInTempDir();
    let up = false;
    const dispatched: string[] = [];
    const dispatcher = qstashLike(async ({ jobId }) => {
      if (!up) throw new DomainError("unavailable", "The job could not be handed to QStash; retry shortly.");
      dispatched.push(jobId);
    });
    const jobs = runner(store, dataDir, NO_CALLBACKS, undefined, 10, { dispatcher });
    await jobs.start();
    cleanups.push(() => jobs.stop());

    const job = { ...(await queuedUpload(dataDir, "job_refused")), idempotencyKey: "order-7" };
    await expect(jobs.submit(job)).rejects.toMatchObject({ code: "unavailable" });
    expect(await store.get("job_refused")).toBeNull();
    expect(await store.findByIdempotencyKey("order-7")).toBeNull();
    expect((await store.list({ limit: 10 })).jobs).toEqual([]);

    up = true;
    const retried = await jobs.submit({ ...job, id: "job_retried" });
    expect(retried).toMatchObject({ created: true, job: { id: "job_retried", status: "queued" } });
    expect(dispatched).toEqual(["job_retried"]);
  });
});

describe("a replay of an idempotency key while its submission is still sending the job's message", () => {
  /** A QStash-like dispatcher whose sends wait for the gates given in turn; a gate that rejects fails its send. */
  async function submitting(gates: Promise<void>[]) {
    const { dataDir, store } = await storeInTempDir();
    const sending: string[] = [];
    const sent: string[] = [];
    const dispatcher = qstashLike(async (d) => {
      sending.push(deduplicationId(d));
      await gates.shift();
      sent.push(deduplicationId(d));
    });
    const jobs = runner(store, dataDir, NO_CALLBACKS, undefined, 10, { dispatcher });
    await jobs.start();
    cleanups.push(() => jobs.stop());
    const job = { ...(await queuedUpload(dataDir, "job_keyed")), idempotencyKey: "order-8" };
    const first = jobs.submit(job);
    first.catch(() => undefined);
    // What JobService does with a request carrying a key it finds.
    const found = () =>
      vi.waitFor(async () => {
        const job = await store.findByIdempotencyKey("order-8");
        if (!job) throw new Error("not stored yet");
        return job;
      });
    return { store, sending, sent, first, replay: async () => jobs.replayed(await found()) };
  }
  const gate = () => deferred<void>();

  it("sends the message itself, under the same deduplication id, and the job stands when the submission's own send fails", async () => {
    const firstSend = gate();
    const { store, sent, first, replay } = await submitting([firstSend.promise, Promise.resolve()]);
    expect(await replay()).toMatchObject({ id: "job_keyed", status: "queued" });
    firstSend.reject(new DomainError("unavailable", "The job could not be handed to QStash; retry shortly."));
    expect(await first).toMatchObject({ created: true, job: { id: "job_keyed", status: "queued" } });
    expect(await store.get("job_keyed")).toMatchObject({ status: "queued" });
    expect(await store.findByIdempotencyKey("order-8")).toMatchObject({ id: "job_keyed" });
    expect(sent).toEqual([`job_keyed:submitted:${Date.parse((await store.get("job_keyed"))!.createdAt)}:0:1`]);
  });

  it("is refused with 503, as its submission is, when that submission's send fails first; the key is then free", async () => {
    const firstSend = gate();
    const replaySend = gate();
    const { store, sending, first, replay: replayed } = await submitting([firstSend.promise, replaySend.promise]);
    const replay = replayed();
    replay.catch(() => undefined);
    await vi.waitFor(() => expect(sending).toHaveLength(2));
    firstSend.reject(new DomainError("unavailable", "The job could not be handed to QStash; retry shortly."));
    await expect(first).rejects.toMatchObject({ code: "unavailable" });
    replaySend.resolve();
    await expect(replay).rejects.toMatchObject({ code: "unavailable", retryable: true });
    expect(await store.get("job_keyed")).toBeNull();
    expect(await store.findByIdempotencyKey("order-8")).toBeNull();
  });

  it("sends nothing more when QStash took the first message though the submission heard a failure, and the job runs once", async () => {
    const { dataDir, store } = await storeInTempDir();
    const finishRun = deferred<void>();
    const admission = new Limiter({ permits: 1, queueSize: 0, queueTimeoutMs: 0, retryAfterSeconds: () => 1 });
    const transcription = {
      admit: async (): Promise<Admission | null> => {
        const permit = admission.tryAcquire();
        return permit && { lost: new Promise<void>(() => undefined), release: async () => permit.release() };
      },
      transcribeFile: vi.fn(async () => (await finishRun.promise, TRANSCRIPT)),
      retryAfterSeconds: () => 1,
    } as unknown as TranscriptionService;
    const sent: string[] = [];
    let jobs!: JobRunner;
    const dispatcher = qstashLike(async (d) => {
      sent.push(deduplicationId(d));
      if (sent.length > 1) return;
      // QStash took the message and delivered it; the client's request then timed out.
      void jobs.handleDelivery(d.jobId, 1);
      await vi.waitFor(async () => expect((await store.get(d.jobId))?.status).toBe("running"));
      throw new DomainError("unavailable", "The job could not be handed to QStash; retry shortly.");
    });
    jobs = runner(store, dataDir, NO_CALLBACKS, undefined, 10, { dispatcher, transcription });
    cleanups.push(async () => finishRun.resolve());
    const job = { ...(await queuedUpload(dataDir, "job_taken_anyway")), idempotencyKey: "order-9" };
    expect(await jobs.submit(job)).toMatchObject({ created: true, job: { status: "running" } });
    expect((await store.get("job_taken_anyway"))!.submission).toBeUndefined();
    expect(await jobs.replayed((await store.findByIdempotencyKey("order-9"))!)).toMatchObject({ status: "running" });
    finishRun.resolve();
    await vi.waitFor(async () => expect((await store.get("job_taken_anyway"))?.status).toBe("succeeded"));
    expect(sent).toHaveLength(1);
    expect(transcription.transcribeFile).toHaveBeenCalledTimes(1);
  });

  it("answers with the job, without sending again, once the submission's message is out", async () => {
    const { store, sent, first, replay } = await submitting([Promise.resolve()]);
    await first;
    expect(await replay()).toMatchObject({ id: "job_keyed", status: "queued" });
    expect(sent).toHaveLength(1);
    expect((await store.get("job_keyed"))!.submission).toBeUndefined();
  });
});

/**
 * A runner as a cluster worker runs: QStash's dispatcher (room now or a deferral) over admission
 * room counted by a real Limiter; `admit` waits for `gate` when one is set.
 */
function clusterWorker(
  store: JobStore,
  dataDir: string,
  transcribeFile: TranscriptionService["transcribeFile"],
  options: { gate?: Promise<void>; leases?: JobRunnerDeps["leases"]; callbacks?: CallbackSender; instanceId?: string } = {},
) {
  const admission = new Limiter({ permits: 2, queueSize: 0, queueTimeoutMs: 0, retryAfterSeconds: () => 1 });
  const admitted = vi.fn(async (): Promise<Admission | null> => {
    await options.gate;
    const permit = admission.tryAcquire();
    return permit && { lost: new Promise<void>(() => undefined), release: async () => permit.release() };
  });
  const dispatched: Dispatch[] = [];
  const dispatcher = qstashLike(async (d) => void dispatched.push(d));
  const roomNow = vi.fn(async () => admission.stats.inUse < admission.stats.permits);
  const transcription = { admit: admitted, roomNow, transcribeFile: vi.fn(transcribeFile), retryAfterSeconds: () => 1 } as unknown as TranscriptionService;
  const jobs = runner(store, dataDir, options.callbacks ?? NO_CALLBACKS, undefined, 10, {
    dispatcher,
    transcription,
    ...(options.leases ? { leases: options.leases } : {}),
    ...(options.instanceId ? { instanceId: options.instanceId } : {}),
  });
  cleanups.push(() => jobs.stop());
  return { jobs, admission, admitted, dispatched, transcribeFile: transcription.transcribeFile as ReturnType<typeof vi.fn> };
}

describe("a cluster worker", () => {
  it("gives back the room a job was admitted with when the job fails before its transcription", async () => {
    const { dataDir, store } = await storeInTempDir();
    const media = http.createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => media.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => media.close(resolve)));
    // A model the instance refuses (checked in the transcription, before it takes its own room).
    const leases = new EmbeddedLeaseStore({ cap: null });
    const worker = clusterWorker(
      store,
      dataDir,
      async () => {
        throw new DomainError("invalid_request", 'Model "x" does not fit on this instance.');
      },
      { leases },
    );
    const url = await queuedUpload(dataDir, "job_url");
    await store.create({ ...url, input: { kind: "url", url: `http://127.0.0.1:${(media.address() as AddressInfo).port}/gone.mp3` } });
    await store.create(await queuedUpload(dataDir, "job_refused"));
    // More failed jobs than the instance has room for: none may keep its room.
    await store.create(await queuedUpload(dataDir, "job_refused_too"));
    for (const id of ["job_url", "job_refused", "job_refused_too"]) expect(await worker.jobs.handleDelivery(id, 1)).toBe("ran");
    expect((await store.get("job_url"))?.error?.code).toBe("upstream_failed");
    expect((await store.get("job_refused_too"))?.error?.code).toBe("invalid_request");
    expect(worker.admission.stats.inUse).toBe(0);
    // Nor the hold the URL job fetched under.
    expect((await leases.snapshot()).instances).toEqual([]);
  });

  it("does not run a job canceled while its delivery was being admitted", async () => {
    const { dataDir, store } = await storeInTempDir();
    let open!: () => void;
    const worker = clusterWorker(store, dataDir, async () => TRANSCRIPT, { gate: new Promise<void>((resolve) => (open = resolve)) });
    await store.create(await queuedUpload(dataDir, "job_c"));
    const delivery = worker.jobs.handleDelivery("job_c", 1);
    await vi.waitFor(() => expect(worker.admitted).toHaveBeenCalled());
    expect(await worker.jobs.cancel("job_c")).toMatchObject({ status: "canceled" });
    open();
    await delivery;
    expect((await store.get("job_c"))?.status).toBe("canceled");
    expect(worker.transcribeFile).not.toHaveBeenCalled();
    expect(worker.admission.stats.inUse).toBe(0);
  });

  it("leaves a job canceled on another instance canceled when its run here then fails", async () => {
    const { dataDir, store } = await storeInTempDir();
    const worker = clusterWorker(store, dataDir, async (_path, request) => {
      await store.update(request.id, (j) => ({ ...j, status: "canceled", finishedAt: new Date().toISOString() }));
      throw new InferenceError("the inference thread crashed");
    });
    await store.create(await queuedUpload(dataDir, "job_x"));
    await worker.jobs.handleDelivery("job_x", 1);
    expect((await store.get("job_x"))?.status).toBe("canceled");
    expect(worker.dispatched).toEqual([]);
  });

  it("gives the room back once the job's outcome is stored, before its callback is handed over", async () => {
    const { dataDir, store } = await storeInTempDir();
    const handOver = deferred<void>();
    const enqueue = vi.fn(() => handOver.promise);
    const worker = clusterWorker(store, dataDir, async () => TRANSCRIPT, { callbacks: { ...NO_CALLBACKS, enqueue } });
    await store.create(await queuedUpload(dataDir, "job_called_back", { callbackUrl: "http://127.0.0.1:9/hook" }));
    const delivery = worker.jobs.handleDelivery("job_called_back", 1);
    // In cluster mode the hand-over is a store read, an update and a QStash publish.
    await vi.waitFor(() => expect(enqueue).toHaveBeenCalled());
    expect(await store.get("job_called_back")).toMatchObject({ status: "succeeded" });
    expect(worker.admission.stats.inUse).toBe(0);
    handOver.resolve();
    expect(await delivery).toBe("ran");
  });

  it("runs a job once when two deliveries of it arrive at once", async () => {
    const { dataDir, store } = await storeInTempDir();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const a = clusterWorker(store, dataDir, async () => TRANSCRIPT, { gate });
    const b = clusterWorker(store, dataDir, async () => TRANSCRIPT, { gate });
    await store.create(await queuedUpload(dataDir, "job_twice"));
    const deliveries = [a.jobs.handleDelivery("job_twice", 1), b.jobs.handleDelivery("job_twice", 2)];
    await vi.waitFor(() => expect(a.admitted.mock.calls.length + b.admitted.mock.calls.length).toBe(2));
    open();
    await Promise.all(deliveries);
    expect(a.transcribeFile.mock.calls.length + b.transcribeFile.mock.calls.length).toBe(1);
    expect(await store.get("job_twice")).toMatchObject({ status: "succeeded", runs: 1 });
    expect(a.admission.stats.inUse + b.admission.stats.inUse).toBe(0);
  });

  it("keeps looking at a job another instance is running however long ago it was submitted", async () => {
    const { dataDir, store } = await storeInTempDir();
    const leases = new EmbeddedLeaseStore({ cap: null });
    const worker = clusterWorker(store, dataDir, async () => TRANSCRIPT, { leases });
    const job = await queuedUpload(dataDir, "job_long");
    await store.create({ ...job, status: "running", runs: 1, createdAt: new Date(Date.now() - 2 * 3_600_000).toISOString() });
    const lease = await leases.tryAcquire({ instance: "other", job: "job_long" });
    expect(await worker.jobs.handleDelivery("job_long", 7)).toBe("deferred");
    expect(await worker.jobs.redeliver("job_long", 3)).toBe("redelivered");
    expect((await store.get("job_long"))?.status).toBe("running");
    expect(worker.dispatched.map((d) => d.reason)).toEqual(["deferred", "redelivered"]);
    // Its instance gone (its lease expired), the next delivery runs it.
    await lease!.release();
    expect(await worker.jobs.handleDelivery("job_long", 8)).toBe("ran");
    expect((await store.get("job_long"))?.status).toBe("succeeded");
  });

  it("forgets a job that met a full disk here once the job may no longer wait, though it finished elsewhere", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    cleanups.push(async () => vi.useRealTimers());
    const { dataDir, store } = await storeInTempDir();
    const diskFull = await writeFile("/dev/full", "x").then(
      () => null,
      (err: unknown) => err,
    );
    const worker = clusterWorker(store, dataDir, async () => {
      throw diskFull;
    });
    await store.create(await queuedUpload(dataDir, "job_full_here"));
    await worker.jobs.handleDelivery("job_full_here", 1);
    expect(worker.dispatched).toMatchObject([{ jobId: "job_full_here", reason: "deferred" }]);
    // Its next delivery reaches another instance, which runs it.
    await store.update("job_full_here", (j) => ({ ...j, status: "succeeded", finishedAt: new Date().toISOString() }));
    // Past how long a job may wait (maxWaitMs), another job meets the full disk here.
    vi.setSystemTime(Date.now() + 60_001);
    await store.create(await queuedUpload(dataDir, "job_full_later"));
    await worker.jobs.handleDelivery("job_full_later", 1);
    // Memory is the only trace such a job leaves here.
    expect([...(worker.jobs as unknown as { storageWaits: Map<string, unknown> }).storageWaits.keys()]).toEqual(["job_full_later"]);
  });

  it("answers a cancel that meets the job finishing with a conflict, not with the finished job", async () => {
    const { dataDir, store } = await storeInTempDir();
    await store.create(await queuedUpload(dataDir, "job_done"));
    // The job finishes between the cancel's read and its write.
    const racing = new Proxy(store, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver) as unknown;
        if (name !== "get" || typeof value !== "function") return typeof value === "function" ? value.bind(target) : value;
        return async (id: string) => {
          const read = await target.get(id);
          await target.update(id, (j) => ({ ...j, status: "succeeded", finishedAt: new Date().toISOString() }));
          return read;
        };
      },
    });
    const jobs = runner(racing, dataDir, NO_CALLBACKS);
    await expect(jobs.cancel("job_done")).rejects.toMatchObject({ code: "conflict" });
  });
});

/** A media host that answers each request only once told to. */
async function slowMediaHost() {
  const requests: string[] = [];
  const answer = deferred<void>();
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? "");
    void answer.promise.then(() => res.writeHead(200, { "content-type": "audio/mpeg" }).end("not audio, never decoded here"));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/talk.mp3`, requests, answer: () => answer.resolve() };
}

describe("a cluster worker's job with a media URL", () => {
  async function urlJob(store: JobStore, dataDir: string, id: string, url: string): Promise<JobRecord> {
    const job = { ...(await queuedUpload(dataDir, id)), input: { kind: "url" as const, url }, queuedAt: new Date(Date.now() - 10_000).toISOString() };
    await store.create(job);
    return job;
  }

  it("holds no transcription place while its media comes, is left to its run by a delivery elsewhere meanwhile, and takes its place once the media is here", async () => {
    const { dataDir, store } = await storeInTempDir();
    const leases = new EmbeddedLeaseStore({ cap: 1 });
    const here = clusterWorker(store, dataDir, async () => TRANSCRIPT, { leases });
    const elsewhere = clusterWorker(store, dataDir, async () => TRANSCRIPT, { leases, instanceId: "elsewhere" });
    const host = await slowMediaHost();
    await urlJob(store, dataDir, "job_slow_host", host.url);

    const delivery = here.jobs.handleDelivery("job_slow_host", 1);
    await vi.waitFor(() => expect(host.requests).toHaveLength(1));
    expect(here.admission.stats.inUse).toBe(0);
    expect(here.admitted).not.toHaveBeenCalled();
    // The cluster's one transcription place is free for others meanwhile.
    expect(await leases.snapshot()).toEqual({ cap: 1, held: 0, free: 1, instances: [{ instance: "here", held: 0, jobs: [], fetching: ["job_slow_host"] }] });
    expect(await store.get("job_slow_host")).toMatchObject({ status: "running", runs: 1 });

    // QStash delivers the message again (the first delivery outlasted its response time).
    expect(await elsewhere.jobs.handleDelivery("job_slow_host", 2)).toBe("deferred");
    expect(host.requests).toHaveLength(1);
    // The instance's one place is free too: an upload delivered meanwhile runs.
    await store.create(await queuedUpload(dataDir, "job_upload"));
    expect(await here.jobs.handleDelivery("job_upload", 1)).toBe("ran");
    // Its one fetch is taken: another job's media is not fetched now.
    await urlJob(store, dataDir, "job_next_url", host.url);
    expect(await here.jobs.handleDelivery("job_next_url", 1)).toBe("deferred");
    expect(host.requests).toHaveLength(1);

    host.answer();
    expect(await delivery).toBe("ran");
    expect(here.admitted).toHaveBeenCalledTimes(2);
    expect(here.transcribeFile).toHaveBeenCalledTimes(2);
    expect(elsewhere.transcribeFile).not.toHaveBeenCalled();
    expect(await store.get("job_slow_host")).toMatchObject({ status: "succeeded", runs: 1 });
    expect(here.admission.stats.inUse).toBe(0);
    expect(await leases.snapshot()).toMatchObject({ held: 0, instances: [] });
  });

  it("is deferred without fetching its media when there is no room now", async () => {
    const { dataDir, store } = await storeInTempDir();
    const worker = clusterWorker(store, dataDir, async () => TRANSCRIPT);
    const host = await slowMediaHost();
    await urlJob(store, dataDir, "job_no_room", host.url);
    const taken = [worker.admission.tryAcquire(), worker.admission.tryAcquire()];
    expect(await worker.jobs.handleDelivery("job_no_room", 1)).toBe("deferred");
    expect(host.requests).toEqual([]);
    expect(await store.get("job_no_room")).toMatchObject({ status: "queued", runs: 0 });
    expect(worker.dispatched.map((d) => d.reason)).toEqual(["deferred"]);
    for (const permit of taken) permit?.release();
  });

  it("waits again when its room went while its media came: its run is not counted and its wait for room goes on", async () => {
    const { dataDir, store } = await storeInTempDir();
    const leases = new EmbeddedLeaseStore({ cap: null });
    const worker = clusterWorker(store, dataDir, async () => TRANSCRIPT, { leases });
    const host = await slowMediaHost();
    const job = await urlJob(store, dataDir, "job_room_gone", host.url);

    const delivery = worker.jobs.handleDelivery("job_room_gone", 3);
    await vi.waitFor(() => expect(host.requests).toHaveLength(1));
    // Both of the instance's places taken by other work while the media comes.
    const taken = [worker.admission.tryAcquire(), worker.admission.tryAcquire()];
    host.answer();
    expect(await delivery).toBe("ran");
    expect(worker.transcribeFile).not.toHaveBeenCalled();
    const waiting = (await store.get("job_room_gone"))!;
    expect(waiting).toMatchObject({ status: "queued", runs: 0, queuedAt: job.queuedAt });
    expect(waiting.startedAt).toBeUndefined();
    expect(worker.dispatched).toEqual([expect.objectContaining({ jobId: "job_room_gone", reason: "deferred", attempt: 4, runs: 0, queuedAt: job.queuedAt })]);
    expect(await leases.snapshot()).toMatchObject({ held: 0, instances: [] });
    for (const permit of taken) permit?.release();

    // The next delivery fetches the media again and runs it.
    expect(await worker.jobs.handleDelivery("job_room_gone", 4)).toBe("ran");
    expect(await store.get("job_room_gone")).toMatchObject({ status: "succeeded", runs: 1 });
  });
});

describe("a job with a media URL on one machine", () => {
  /** A runner with one place, fed by the embedded line as a server feeds it (a place's worth of deliveries and as many fetches). */
  function oneMachine(store: JobStore, dataDir: string, transcribeFile: TranscriptionService["transcribeFile"], overrides: Partial<JobRunnerDeps> = {}) {
    const jobs = runner(store, dataDir, NO_CALLBACKS, transcribeFile, 10, { dispatcher: new EmbeddedJobDispatcher({ store, concurrency: 2, log }), ...overrides });
    cleanups.push(() => jobs.stop());
    return jobs;
  }
  const urlJob = async (dataDir: string, id: string, url: string): Promise<JobRecord> => ({ ...(await queuedUpload(dataDir, id)), input: { kind: "url", url } });
  const finished = (store: JobStore, id: string) => vi.waitFor(async () => expect(await store.get(id)).toMatchObject({ status: "succeeded" }));

  it("holds no place while its media comes: a job submitted after it, whose media is here, runs meanwhile", async () => {
    const { dataDir, store } = await storeInTempDir();
    const leases = new EmbeddedLeaseStore({ cap: null });
    const transcribed: string[] = [];
    const jobs = oneMachine(
      store,
      dataDir,
      async (_path, request) => {
        transcribed.push(request.id);
        return TRANSCRIPT;
      },
      { leases },
    );
    const host = await slowMediaHost();
    await jobs.start();
    await jobs.submit(await urlJob(dataDir, "job_slow_host", host.url));
    await vi.waitFor(() => expect(host.requests).toHaveLength(1));

    await jobs.submit(await queuedUpload(dataDir, "job_upload"));
    await finished(store, "job_upload");
    expect(await store.get("job_slow_host")).toMatchObject({ status: "running", runs: 1 });
    expect(await leases.snapshot()).toMatchObject({ held: 0, instances: [{ instance: "here", jobs: [], fetching: ["job_slow_host"] }] });

    host.answer();
    await finished(store, "job_slow_host");
    expect(transcribed).toEqual(["job_upload", "job_slow_host"]);
    expect(await leases.snapshot()).toMatchObject({ held: 0, instances: [] });
  });

  it("fetches media for no more jobs at once than it has places; the next fetch starts when one is here", async () => {
    const { dataDir, store } = await storeInTempDir();
    const jobs = oneMachine(store, dataDir, async () => TRANSCRIPT);
    const host = await slowMediaHost();
    await jobs.start();
    await jobs.submit(await urlJob(dataDir, "job_first", host.url));
    await jobs.submit(await urlJob(dataDir, "job_second", host.url));
    await vi.waitFor(() => expect(host.requests).toHaveLength(1));
    // Long enough for a second fetch to have reached the host, were it started.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(host.requests).toHaveLength(1);
    expect(await store.get("job_second")).toMatchObject({ status: "queued", runs: 0 });

    host.answer();
    await finished(store, "job_first");
    await finished(store, "job_second");
    expect(host.requests).toHaveLength(2);
  });

  it("leaves a job that was waiting for its place queued at a stop, however long it has waited, for the next start", async () => {
    const { dataDir, store } = await storeInTempDir();
    const started = deferred<void>();
    const jobs = oneMachine(
      store,
      dataDir,
      (_path, request) => {
        started.resolve();
        // Runs until the stop aborts it.
        return new Promise((_, reject) => request.signal?.addEventListener("abort", () => reject(request.signal?.reason)));
      },
      { maxWaitMs: 1 },
    );
    await jobs.start();
    await jobs.submit(await queuedUpload(dataDir, "job_running"));
    await started.promise;
    await jobs.submit({ ...(await queuedUpload(dataDir, "job_waiting")), createdAt: new Date(Date.now() - 60_000).toISOString() });
    // Delivered at once (the line takes two), its job waiting for the one place: still counted as queued.
    await vi.waitFor(() => expect(jobs.stats).toEqual({ queued: 1, running: 1 }));

    await jobs.stop();
    expect(await store.get("job_waiting")).toMatchObject({ status: "queued", runs: 0 });
    expect(await store.get("job_running")).toMatchObject({ status: "queued", runs: 0 });
  });
});

describe("a job in cluster mode, through hand-backs, repeats and takeovers", () => {
  /** A transcription that runs until its request is aborted (a shutdown's hand-back). */
  const untilAborted: TranscriptionService["transcribeFile"] = (_path, request) =>
    new Promise((_resolve, reject) => request.signal?.addEventListener("abort", () => reject(request.signal?.reason), { once: true }));
  /** Takes every place a worker has, so that a delivery finds no room. */
  const fill = (worker: ReturnType<typeof clusterWorker>) => [worker.admission.tryAcquire(), worker.admission.tryAcquire()];

  it("has a message of its own behind it after a deferral, a hand-back and another deferral (QStash drops a repeated id)", async () => {
    const { dataDir, store } = await storeInTempDir();
    const a = clusterWorker(store, dataDir, untilAborted);
    const b = clusterWorker(store, dataDir, async () => TRANSCRIPT);
    const held = fill(a);
    await a.jobs.submit(await queuedUpload(dataDir, "job_deploy"));
    expect(await a.jobs.handleDelivery("job_deploy", 1)).toBe("deferred");
    for (const permit of held) permit?.release();
    const running = a.jobs.handleDelivery("job_deploy", 2);
    await vi.waitFor(() => expect(a.transcribeFile).toHaveBeenCalled());
    // A deploy stops A: the job is handed back, its run given back.
    await a.jobs.stop();
    await running;
    expect(await store.get("job_deploy")).toMatchObject({ status: "queued", runs: 0 });
    // B has no room for it yet.
    fill(b);
    expect(await b.jobs.handleDelivery("job_deploy", 1)).toBe("deferred");
    const sent = [...a.dispatched, ...b.dispatched];
    expect(sent.map((d) => d.reason)).toEqual(["submitted", "deferred", "handed-back", "deferred"]);
    // Each a message of its own: none would be dropped as a repeat of an earlier one.
    expect(new Set(sent.map(deduplicationId)).size).toBe(4);
  });

  it("keeps a message behind a job while it runs here, when its message comes again", async () => {
    const { dataDir, store } = await storeInTempDir();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const worker = clusterWorker(store, dataDir, async () => {
      await gate;
      return TRANSCRIPT;
    });
    // Before the worker's stop, should an expectation fail while the run waits.
    cleanups.push(async () => open());
    await store.create(await queuedUpload(dataDir, "job_long_here"));
    const running = worker.jobs.handleDelivery("job_long_here", 1);
    await vi.waitFor(() => expect(worker.transcribeFile).toHaveBeenCalled());
    // QStash sends the message again (its delivery outlasted the response time) to this instance.
    expect(await worker.jobs.handleDelivery("job_long_here", 2)).toBe("deferred");
    expect(worker.dispatched).toMatchObject([{ jobId: "job_long_here", reason: "deferred", attempt: 3 }]);
    open();
    expect(await running).toBe("ran");
    expect(worker.transcribeFile).toHaveBeenCalledTimes(1);
    expect(await worker.jobs.handleDelivery("job_long_here", 3)).toBe("skipped");
  });

  it("has its whole wait for room again after a hand-back, however long ago it was submitted", async () => {
    const { dataDir, store } = await storeInTempDir();
    const a = clusterWorker(store, dataDir, untilAborted);
    const b = clusterWorker(store, dataDir, async () => TRANSCRIPT);
    // Submitted two hours ago (a job may wait 60 s here), and running for most of them.
    await store.create({ ...(await queuedUpload(dataDir, "job_old")), createdAt: new Date(Date.now() - 2 * 3_600_000).toISOString() });
    const running = a.jobs.handleDelivery("job_old", 1);
    await vi.waitFor(() => expect(a.transcribeFile).toHaveBeenCalled());
    await a.jobs.stop();
    await running;
    fill(b);
    expect(await b.jobs.handleDelivery("job_old", 1)).toBe("deferred");
    expect((await store.get("job_old"))?.status).toBe("queued");
  });

  it("leaves a job another run has taken over to that run when its own run here fails", async () => {
    const { dataDir, store } = await storeInTempDir();
    let failA!: (err: Error) => void;
    let openB!: () => void;
    const gateB = new Promise<void>((resolve) => (openB = resolve));
    const a = clusterWorker(store, dataDir, () => new Promise((_resolve, reject) => (failA = reject)));
    // B does not see A's lease (lost in a store outage): to B the running job is one whose instance died.
    const b = clusterWorker(store, dataDir, async () => {
      await gateB;
      return TRANSCRIPT;
    });
    cleanups.push(async () => {
      failA?.(new Error("test over"));
      openB();
    });
    await store.create(await queuedUpload(dataDir, "job_taken"));
    const runA = a.jobs.handleDelivery("job_taken", 1);
    await vi.waitFor(() => expect(a.transcribeFile).toHaveBeenCalled());
    const runB = b.jobs.handleDelivery("job_taken", 2);
    await vi.waitFor(() => expect(b.transcribeFile).toHaveBeenCalled());
    expect(await store.get("job_taken")).toMatchObject({ status: "running", runs: 2 });
    // A's run fails in a way that would run the job again, and then in a way that would fail it.
    failA(new InferenceError("the inference thread crashed"));
    await runA;
    expect(await store.get("job_taken")).toMatchObject({ status: "running", runs: 2 });
    expect(a.dispatched).toEqual([]);
    openB();
    await runB;
    expect(await store.get("job_taken")).toMatchObject({ status: "succeeded", runs: 2 });
  });
});

describe("a run whose progress cannot be saved", () => {
  it("says so once per outage, not once per window", async () => {
    const { dataDir, store } = await storeInTempDir();
    let storeDown = false;
    // The store's methods bound to it (it keeps private fields), its updates failing while storeDown.
    const flaky = new Proxy(store, {
      get: (target, property) => {
        if (property === "update") {
          return (...args: Parameters<JobStore["update"]>) => (storeDown ? Promise.reject(new Error("job store unreachable")) : target.update(...args));
        }
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const warnings: string[] = [];
    const logger = { ...log, warn: (_fields: object, message: string) => void warnings.push(message) } as unknown as JobRunnerDeps["log"];
    const progressWith = async (request: TranscribeRequest, down: boolean, seconds: number) => {
      storeDown = down;
      request.onProgress?.(seconds);
      storeDown = false;
      await new Promise((resolve) => setImmediate(resolve));
    };
    const jobs = runner(
      flaky,
      dataDir,
      NO_CALLBACKS,
      async (_path, request) => {
        for (let window = 1; window <= 5; window++) await progressWith(request, true, window * 30);
        await progressWith(request, false, 180);
        // Saved again (the save's answer seen) before the store goes down a second time.
        await vi.waitFor(async () => expect((await store.get("job_outage"))?.progress.doneSeconds).toBe(180));
        await new Promise((resolve) => setImmediate(resolve));
        await progressWith(request, true, 210);
        return TRANSCRIPT;
      },
      10,
      { log: logger },
    );
    await flaky.create(await queuedUpload(dataDir, "job_outage"));
    expect(await jobs.handleDelivery("job_outage", 1)).toBe("ran");
    expect(warnings.filter((w) => w.startsWith("progress not saved"))).toHaveLength(2);
    expect((await store.get("job_outage"))?.status).toBe("succeeded");
  });
});

describe("a running job whose instance died", () => {
  const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000).toISOString();

  it("waits for room from its crash, not from when it was first queued: a long run is not a long wait", async () => {
    const { dataDir, store } = await storeInTempDir();
    const worker = clusterWorker(store, dataDir, async () => TRANSCRIPT);
    // Queued 2 h ago (JOB_MAX_WAIT here is a minute), ran since, its instance killed; the cluster is full now.
    await store.create({ ...(await queuedUpload(dataDir, "job_crashed")), status: "running", runs: 1, createdAt: hoursAgo(2), queuedAt: hoursAgo(2), startedAt: hoursAgo(1.9) });
    worker.admission.tryAcquire();
    worker.admission.tryAcquire();
    expect(await worker.jobs.handleDelivery("job_crashed", 3)).toBe("deferred");
    const waiting = await store.get("job_crashed");
    expect(waiting).toMatchObject({ status: "queued", runs: 1 });
    expect(Date.now() - Date.parse(waiting!.queuedAt!)).toBeLessThan(60_000);
    expect(worker.dispatched).toEqual([expect.objectContaining({ jobId: "job_crashed", reason: "deferred", queuedAt: waiting!.queuedAt })]);
    // QStash's report that it gave up on a message of it: sent again, not failed, for the same reason.
    await store.update("job_crashed", (j) => ({ ...j, status: "running", queuedAt: hoursAgo(2) }));
    expect(await worker.jobs.redeliver("job_crashed", 4)).toBe("redelivered");
    expect((await store.get("job_crashed"))?.status).toBe("queued");
  });

  it("runs once when two deliveries find it so at once: the one that puts it back in line second leaves it to the first", async () => {
    const { dataDir, store } = await storeInTempDir();
    await store.create({ ...(await queuedUpload(dataDir, "job_twice")), status: "running", runs: 1, createdAt: hoursAgo(1) });
    const leases = new EmbeddedLeaseStore({ cap: null });
    const started: string[] = [];
    const hold = deferred<void>();
    const instance = (name: string, jobStore: JobStore) => {
      const admit = async (id: string): Promise<Admission | null> => {
        const lease = await leases.tryAcquire({ instance: name, job: id });
        return lease && { lost: lease.lost, release: () => lease.release() };
      };
      const transcribeFile = async () => {
        started.push(name);
        await hold.promise;
        return TRANSCRIPT;
      };
      const dispatched: Dispatch[] = [];
      const transcription = { admit, transcribeFile, retryAfterSeconds: () => 1 } as unknown as TranscriptionService;
      const jobs = runner(jobStore, dataDir, NO_CALLBACKS, undefined, 10, { dispatcher: qstashLike(async (d) => void dispatched.push(d)), transcription, leases });
      cleanups.push(() => jobs.stop());
      return { jobs, dispatched };
    };
    // C has looked (running, no lease) and is about to put the job back in line when B does so and claims it.
    const cMayWrite = deferred<void>();
    let cWrites = 0;
    const storeOfC = new Proxy(store, {
      get: (target, property) => {
        if (property === "update") {
          return async (...args: Parameters<JobStore["update"]>) => {
            if (cWrites++ === 0) await cMayWrite.promise;
            return target.update(...args);
          };
        }
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const b = instance("B", store);
    const c = instance("C", storeOfC);
    const delivered = c.jobs.handleDelivery("job_twice", 2);
    await vi.waitFor(() => expect(cWrites).toBe(1));
    const run = b.jobs.handleDelivery("job_twice", 2);
    await vi.waitFor(() => expect(started).toEqual(["B"]));
    cMayWrite.resolve();
    expect(await delivered).toBe("deferred");
    expect(c.dispatched).toEqual([expect.objectContaining({ jobId: "job_twice", reason: "deferred" })]);
    hold.resolve();
    expect(await run).toBe("ran");
    expect(started).toEqual(["B"]);
    expect(await store.get("job_twice")).toMatchObject({ status: "succeeded", runs: 2 });
  });

  it("is left as found when it cannot be sent (QStash down), and sent at a later look", async () => {
    const { dataDir, store } = await storeInTempDir();
    const leases = new EmbeddedLeaseStore({ cap: null });
    const dispatched: Dispatch[] = [];
    await store.create({ ...(await queuedUpload(dataDir, "job_unsent")), status: "running", runs: 1, createdAt: hoursAgo(3) });
    const found = await store.get("job_unsent");
    let qstashDown = true;
    const jobs = runner(store, dataDir, NO_CALLBACKS, undefined, 10, {
      dispatcher: qstashLike(async (d) => {
        if (qstashDown) throw new DomainError("unavailable", "The job could not be handed to QStash; retry shortly.");
        dispatched.push(d);
      }),
      leases,
      strandable: true,
    });
    expect(await jobs.sweepStranded()).toEqual({ failed: 0, resent: 0 });
    expect(await jobs.sweepStranded()).toEqual({ failed: 0, resent: 0 });
    // Not queued with no message behind it, which only the stranded sweep would look at, to fail it.
    expect(await store.get("job_unsent")).toEqual(found);
    qstashDown = false;
    expect(await jobs.sweepStranded()).toEqual({ failed: 0, resent: 1 });
    expect(dispatched).toEqual([expect.objectContaining({ jobId: "job_unsent", reason: "redelivered" })]);
    expect((await store.get("job_unsent"))?.status).toBe("queued");
  });

  it("is sent again in cluster mode once no lease has held it at two looks in a row, and only then", async () => {
    const { dataDir, store } = await storeInTempDir();
    const dispatched: Dispatch[] = [];
    const leases = new EmbeddedLeaseStore({ cap: null });
    const jobs = runner(store, dataDir, NO_CALLBACKS, undefined, 10, { dispatcher: qstashLike(async (d) => void dispatched.push(d)), leases, strandable: true });
    await store.create({ ...(await queuedUpload(dataDir, "job_lost")), status: "running", runs: 1, createdAt: hoursAgo(3) });
    await store.create({ ...(await queuedUpload(dataDir, "job_held")), status: "running", runs: 1, createdAt: hoursAgo(3) });
    await store.create({ ...(await queuedUpload(dataDir, "job_rerun")), status: "running", runs: 1, createdAt: hoursAgo(3) });
    await leases.tryAcquire({ instance: "other", job: "job_held" });

    // A lease may be between renewals or a message on its way: the first look only notes the job.
    expect(await jobs.sweepStranded()).toEqual({ failed: 0, resent: 0 });
    expect(dispatched).toEqual([]);
    // Taken up again between the looks (a QStash retry reached an instance): a later run, not lost.
    await store.update("job_rerun", (j) => ({ ...j, runs: 2 }));
    expect(await jobs.sweepStranded()).toEqual({ failed: 0, resent: 1 });
    expect(dispatched).toEqual([expect.objectContaining({ jobId: "job_lost", reason: "redelivered", runs: 1 })]);
    expect(await store.get("job_lost")).toMatchObject({ status: "queued", queuedAt: dispatched[0]!.queuedAt });
    expect((await store.get("job_held"))?.status).toBe("running");
    expect((await store.get("job_rerun"))?.status).toBe("running");
    // Embedded, the line holds every job and a restart runs the running ones: nothing to send.
    const embedded = runner(store, dataDir, NO_CALLBACKS, undefined, 10, { leases });
    expect(await embedded.sweepStranded()).toEqual({ failed: 0, resent: 0 });
    expect(await embedded.sweepStranded()).toEqual({ failed: 0, resent: 0 });
  });
});

describe("a queued job nothing carries any more (its instance died before its message was sent)", () => {
  it("fails with its callback once no message could still bring it, in cluster mode only", async () => {
    const { dataDir, store } = await storeInTempDir();
    const enqueued: string[] = [];
    const callbacks = { ...NO_CALLBACKS, enqueue: async (id: string) => void enqueued.push(id) };
    const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000).toISOString();
    await store.create({ ...(await queuedUpload(dataDir, "job_stranded", { callbackUrl: "http://127.0.0.1:9/hook" })), createdAt: hoursAgo(3) });
    await store.create({ ...(await queuedUpload(dataDir, "job_waiting")), createdAt: hoursAgo(0.5) });
    await store.create({ ...(await queuedUpload(dataDir, "job_running")), status: "running", runs: 1, createdAt: hoursAgo(3) });
    // The embedded line holds every queued job: an old one there is still in line.
    const embedded = runner(store, dataDir, callbacks, undefined, 10, { maxWaitMs: 3_600_000 });
    expect(await embedded.sweepStranded()).toEqual({ failed: 0, resent: 0 });
    const cluster = runner(store, dataDir, callbacks, undefined, 10, { maxWaitMs: 3_600_000, strandable: true });
    expect(await cluster.sweepStranded()).toEqual({ failed: 1, resent: 0 });
    expect(await store.get("job_stranded")).toMatchObject({ status: "failed", error: { code: "unavailable", message: expect.stringMatching(/No instance took the job/) } });
    expect((await store.get("job_waiting"))?.status).toBe("queued");
    expect((await store.get("job_running"))?.status).toBe("running");
    expect(enqueued).toEqual(["job_stranded"]);
  });
});
