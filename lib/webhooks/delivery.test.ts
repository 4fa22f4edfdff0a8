import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EmbeddedJobStore } from "../jobs/embedded-job-store.ts";
import type { CallbackState, JobRecord, JobRequest } from "../jobs/ports.ts";
import { createLogger } from "../log.ts";
import { parseAllowlist } from "../net/outbound-policy.ts";
import type { Transcript } from "../transcript.ts";
import { type CallbackPayload, EmbeddedCallbackSender, type EmbeddedCallbackSenderOptions } from "./delivery.ts";
import { parseSchedule } from "./retry-schedule.ts";
import { generateWebhookSecret, parseWebhookSecrets } from "./standard-webhooks.ts";

const FAST_SCHEDULE = parseSchedule("0s,50ms,100ms,150ms,200ms");
const PUBLIC_URL = "https://transcribe.example.com";
const TRANSCRIPT: Transcript = {
  task: "transcribe",
  language: "english",
  duration: 1.5,
  text: "hello there",
  segments: [{ id: 0, start: 0, end: 1.5, text: "hello there", tokens: [50364, 2425, 456] }],
};

const cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  // Last registered first: senders close before their stores, stores before their directories go.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Reply {
  status: number;
  headers?: Record<string, string>;
  delayMs?: number;
}

interface ReceivedRequest {
  verified: boolean;
  path: string;
  webhookId: string;
  payload: CallbackPayload | undefined;
  /** Date.now() when the body had arrived. */
  at: number;
}

interface Receiver {
  url: string;
  requests: ReceivedRequest[];
}

/** A callback receiver that verifies every request as a Standard Webhooks consumer would. */
async function startReceiver(secret: string, reply: (index: number) => Reply): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const webhook = new Webhook(secret);
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const headers = {
        "webhook-id": String(req.headers["webhook-id"]),
        "webhook-timestamp": String(req.headers["webhook-timestamp"]),
        "webhook-signature": String(req.headers["webhook-signature"]),
      };
      let payload: CallbackPayload | undefined;
      try {
        payload = webhook.verify(raw, headers) as CallbackPayload;
      } catch {
        payload = undefined;
      }
      const index = requests.length;
      requests.push({ verified: payload !== undefined, path: req.url ?? "", webhookId: headers["webhook-id"], payload, at: Date.now() });
      const { status, headers: replyHeaders = {}, delayMs = 0 } = payload ? reply(index) : { status: 401 };
      setTimeout(() => res.writeHead(status, replyHeaders).end("thanks"), delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, requests };
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "slotscribe-delivery-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function openStore(dataDir: string): Promise<EmbeddedJobStore> {
  const store = await EmbeddedJobStore.open({ dataDir, retentionMs: 3_600_000 });
  cleanups.push(() => store.close());
  return store;
}

function createSender(options: Partial<EmbeddedCallbackSenderOptions> & Pick<EmbeddedCallbackSenderOptions, "store" | "secrets">) {
  const sender = new EmbeddedCallbackSender({
    schedule: FAST_SCHEDULE,
    policy: parseAllowlist("127.0.0.1"),
    publicUrl: PUBLIC_URL,
    log: createLogger("silent"),
    random: () => 0.5,
    ...options,
  });
  // Whatever a test leaves on the wire is cut off, not waited for.
  cleanups.push(() => sender.close(AbortSignal.abort()));
  return sender;
}

function finishedJob(id: string, request: Partial<JobRequest>, overrides: Partial<JobRecord> = {}): JobRecord {
  return {
    id,
    status: "succeeded",
    request: { model: "whisper-tiny.en", task: "transcribe", responseFormat: "json", callbackIncludeResult: false, ...request },
    input: { kind: "url", url: "https://example.com/audio.wav" },
    createdAt: "2025-01-01T00:00:00.000Z",
    startedAt: "2025-01-01T00:00:01.000Z",
    finishedAt: "2025-01-01T00:00:05.000Z",
    runs: 1,
    progress: { doneSeconds: 1.5, totalSeconds: 1.5 },
    result: TRANSCRIPT,
    ...overrides,
  };
}

/** Polls until the job's callback has left "pending"; returns that final state. */
async function settledCallback(store: EmbeddedJobStore, id: string): Promise<CallbackState> {
  return vi.waitFor(
    async () => {
      const callback = (await store.get(id))?.callback;
      if (!callback || callback.state === "pending") throw new Error(`callback of ${id} is still pending`);
      return callback;
    },
    { timeout: 10_000, interval: 10 },
  );
}

/** A store, a receiver and a sender whose secret the receiver knows. */
async function setup(reply: (index: number) => Reply, options: Partial<EmbeddedCallbackSenderOptions> = {}) {
  const secret = generateWebhookSecret();
  const receiver = await startReceiver(secret, reply);
  const store = await openStore(await tempDir());
  const sender = createSender({ store, secrets: parseWebhookSecrets(secret), ...options });
  return { receiver, store, sender };
}

describe("EmbeddedCallbackSender", () => {
  it("retries a receiver that fails three times and stops at its first success, under one webhook-id", async () => {
    const { receiver, store, sender } = await setup((index) => ({ status: index < 3 ? 500 : 200 }));
    await store.create(finishedJob("job_flaky", { callbackUrl: receiver.url }));

    await sender.enqueue("job_flaky");
    const callback = await settledCallback(store, "job_flaky");

    expect(callback.state).toBe("delivered");
    expect(callback.attempts.map((attempt) => attempt.status)).toEqual([500, 500, 500, 200]);
    expect(callback.nextAttemptAt).toBeUndefined();
    expect(receiver.requests.every((request) => request.verified)).toBe(true);
    expect(receiver.requests).toHaveLength(4);
    expect(new Set(receiver.requests.map((request) => request.webhookId))).toEqual(new Set([callback.webhookId]));
    for (const attempt of callback.attempts) {
      expect(Number.isFinite(Date.parse(attempt.at))).toBe(true);
      expect(attempt.latencyMs).toBeGreaterThanOrEqual(0);
      expect(attempt.error).toBeUndefined();
    }
  });

  it("sends a callback once when the store cannot record that it was delivered (a full disk), and records it once it can", async () => {
    let full = false;
    const { receiver, store, sender } = await setup(() => {
      full = true;
      return { status: 200 };
    });
    const update = store.update.bind(store);
    store.update = (id, change) => (full ? Promise.reject(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" })) : update(id, change));
    await store.create(finishedJob("job_full", { callbackUrl: receiver.url }));
    await sender.enqueue("job_full");
    await vi.waitFor(() => expect(receiver.requests).toHaveLength(1));
    // The minute's look for pending callbacks, twice, while the disk is still full.
    for (let i = 0; i < 2; i++) {
      await sender.start();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await store.get("job_full"))!.callback).toMatchObject({ state: "pending", attempts: [] });
    full = false;
    await sender.start();
    const callback = await settledCallback(store, "job_full");
    expect(callback).toMatchObject({ state: "delivered", attempts: [{ status: 200 }] });
    expect(receiver.requests).toHaveLength(1);
  });

  it("stops at 410 Gone after one attempt", async () => {
    const { receiver, store, sender } = await setup(() => ({ status: 410 }));
    await store.create(finishedJob("job_gone", { callbackUrl: receiver.url }));

    await sender.enqueue("job_gone");
    const callback = await settledCallback(store, "job_gone");

    expect(callback.state).toBe("gone");
    expect(callback.attempts.map((attempt) => attempt.status)).toEqual([410]);
    expect(receiver.requests).toHaveLength(1);
  });

  it("waits at least as long as Retry-After asks before the next attempt", async () => {
    const { receiver, store, sender } = await setup((index) => (index === 0 ? { status: 503, headers: { "retry-after": "1" } } : { status: 204 }));
    await store.create(finishedJob("job_busy", { callbackUrl: receiver.url }));

    await sender.enqueue("job_busy");
    const callback = await settledCallback(store, "job_busy");

    expect(callback.attempts.map((attempt) => attempt.status)).toEqual([503, 204]);
    const [first, second] = receiver.requests;
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(1_000);
  });

  it("marks the callback failed once the schedule is exhausted, with every attempt recorded", async () => {
    const { receiver, store, sender } = await setup(() => ({ status: 500 }));
    await store.create(finishedJob("job_down", { callbackUrl: receiver.url }));

    await sender.enqueue("job_down");
    const callback = await settledCallback(store, "job_down");

    expect(callback.state).toBe("failed");
    expect(callback.attempts.map((attempt) => attempt.status)).toEqual([500, 500, 500, 500, 500]);
    expect(callback.nextAttemptAt).toBeUndefined();
    expect(receiver.requests).toHaveLength(FAST_SCHEDULE.length);
    expect(receiver.requests.every((request) => request.verified && request.webhookId === callback.webhookId)).toBe(true);
  });

  it("sends a thin payload by default: id, status, metadata, links and a failed job's error, no result", async () => {
    const { receiver, store, sender } = await setup(() => ({ status: 200 }));
    await store.create(finishedJob("job_thin", { callbackUrl: receiver.url, metadata: { customer: "c_42" } }));
    await store.create(
      finishedJob("job_broken", { callbackUrl: receiver.url }, { status: "failed", error: { code: "unprocessable_audio", message: "not audio" }, result: undefined }),
    );

    await sender.enqueue("job_thin");
    await sender.enqueue("job_broken");
    await settledCallback(store, "job_thin");
    await settledCallback(store, "job_broken");

    const payloads = new Map(receiver.requests.map((request) => [request.payload?.data.id, request.payload]));
    expect(payloads.get("job_thin")).toEqual({
      type: "job.succeeded",
      timestamp: "2025-01-01T00:00:05.000Z",
      data: {
        id: "job_thin",
        status: "succeeded",
        metadata: { customer: "c_42" },
        links: { self: `${PUBLIC_URL}/v1/jobs/job_thin`, result: `${PUBLIC_URL}/v1/jobs/job_thin/result` },
      },
    });
    expect(payloads.get("job_broken")).toEqual({
      type: "job.failed",
      timestamp: "2025-01-01T00:00:05.000Z",
      data: {
        id: "job_broken",
        status: "failed",
        metadata: null,
        error: { code: "unprocessable_audio", message: "not audio" },
        links: { self: `${PUBLIC_URL}/v1/jobs/job_broken`, result: `${PUBLIC_URL}/v1/jobs/job_broken/result` },
      },
    });
  });

  it("includes the transcript when the job asked for callbackIncludeResult", async () => {
    const { receiver, store, sender } = await setup(() => ({ status: 200 }));
    await store.create(finishedJob("job_full", { callbackUrl: receiver.url, callbackIncludeResult: true }));

    await sender.enqueue("job_full");
    await settledCallback(store, "job_full");

    expect(receiver.requests[0]?.payload?.data).toMatchObject({ id: "job_full", status: "succeeded", result: TRANSCRIPT });
  });

  it("signs with every configured secret, so a receiver that knows only the new one verifies", async () => {
    const oldSecret = generateWebhookSecret();
    const newSecret = generateWebhookSecret();
    const receiver = await startReceiver(newSecret, () => ({ status: 200 }));
    const store = await openStore(await tempDir());
    const sender = createSender({ store, secrets: parseWebhookSecrets(`${oldSecret},${newSecret}`) });
    await store.create(finishedJob("job_rotated", { callbackUrl: receiver.url }));

    await sender.enqueue("job_rotated");
    const callback = await settledCallback(store, "job_rotated");

    expect(callback.state).toBe("delivered");
    expect(receiver.requests.map((request) => request.verified)).toEqual([true]);
  });

  it("resumes a pending callback after a restart under the same webhook-id", async () => {
    const secret = generateWebhookSecret();
    const receiver = await startReceiver(secret, (index) => ({ status: index === 0 ? 500 : 204 }));
    const dataDir = await tempDir();
    const slowRetries = parseSchedule("0s,1h");
    const firstStore = await openStore(dataDir);
    const firstSender = createSender({ store: firstStore, secrets: parseWebhookSecrets(secret), schedule: slowRetries });
    await firstStore.create(finishedJob("job_restart", { callbackUrl: receiver.url }));

    await firstSender.enqueue("job_restart");
    const beforeRestart = await vi.waitFor(
      async () => {
        const callback = (await firstStore.get("job_restart"))?.callback;
        if (callback?.attempts.length !== 1) throw new Error("first attempt not recorded yet");
        return callback;
      },
      { timeout: 10_000, interval: 10 },
    );
    expect(beforeRestart.state).toBe("pending");
    expect(Date.parse(beforeRestart.nextAttemptAt!)).toBeGreaterThan(Date.now() + 30 * 60_000);
    await firstSender.close(AbortSignal.abort());
    await firstStore.close();

    const store = await openStore(dataDir);
    // Stands in for the hour passing while the service was down.
    await store.update("job_restart", (job) => ({
      ...job,
      callback: { ...job.callback!, nextAttemptAt: new Date(Date.now() + 100).toISOString() },
    }));
    const sender = createSender({ store, secrets: parseWebhookSecrets(secret), schedule: slowRetries });
    await sender.start();
    const callback = await settledCallback(store, "job_restart");

    expect(callback.state).toBe("delivered");
    expect(callback.webhookId).toBe(beforeRestart.webhookId);
    expect(callback.attempts.map((attempt) => attempt.status)).toEqual([500, 204]);
    expect(receiver.requests.map((request) => [request.verified, request.webhookId])).toEqual([
      [true, beforeRestart.webhookId],
      [true, beforeRestart.webhookId],
    ]);
  });

  it("records a callback URL the outbound policy refuses as one failed attempt and gives up", async () => {
    const { store, sender } = await setup(() => ({ status: 200 }));
    await store.create(finishedJob("job_internal", { callbackUrl: "http://10.0.0.1/hook" }));

    await sender.enqueue("job_internal");
    const callback = await settledCallback(store, "job_internal");

    expect(callback.state).toBe("gone");
    expect(callback.attempts).toHaveLength(1);
    expect(callback.attempts[0]).toMatchObject({ status: null, error: expect.stringMatching(/refused.*private address/) });
  });

  it("does not follow a redirect and retries it as a failed attempt", async () => {
    const { receiver, store, sender } = await setup((index) => (index === 0 ? { status: 307, headers: { location: "/elsewhere" } } : { status: 200 }));
    await store.create(finishedJob("job_moved", { callbackUrl: receiver.url }));

    await sender.enqueue("job_moved");
    const callback = await settledCallback(store, "job_moved");

    expect(callback.state).toBe("delivered");
    expect(callback.attempts[0]).toMatchObject({ status: 307, error: expect.stringMatching(/answered 307, a redirect to \/elsewhere: redirects are not followed/) });
    expect(callback.attempts[1]?.status).toBe(200);
    expect(receiver.requests.map((request) => request.path)).toEqual(["/hook", "/hook"]);
  });

  it("records a receiver slower than timeoutMs as a failed attempt without a status and retries", async () => {
    const { store, sender, receiver } = await setup((index) => (index === 0 ? { status: 200, delayMs: 2_000 } : { status: 200 }), { timeoutMs: 200 });
    await store.create(finishedJob("job_slow", { callbackUrl: receiver.url }));

    await sender.enqueue("job_slow");
    const callback = await settledCallback(store, "job_slow");

    expect(callback.state).toBe("delivered");
    expect(callback.attempts[0]).toMatchObject({ status: null, error: expect.stringMatching(/timed out/) });
    expect(callback.attempts[0]!.latencyMs).toBeGreaterThanOrEqual(190);
    expect(callback.attempts[1]?.status).toBe(200);
  });

  it("at close, ends an attempt still waiting for its receiver at the deadline and leaves it pending, unrecorded, for the next start", async () => {
    const { store, sender, receiver } = await setup(() => ({ status: 204, delayMs: 30_000 }));
    await store.create(finishedJob("job_hung", { callbackUrl: receiver.url }));
    await sender.enqueue("job_hung");
    await vi.waitFor(() => expect(receiver.requests).toHaveLength(1), { timeout: 10_000, interval: 10 });

    const closed = sender.close(AbortSignal.timeout(200)).then(() => "closed");
    expect(await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve("still waiting"), 10_000))])).toBe("closed");
    expect((await store.get("job_hung"))?.callback).toMatchObject({ state: "pending", attempts: [] });
  });

  it("never has two attempts for one job in flight, however often it is enqueued", async () => {
    const { receiver, store, sender } = await setup(() => ({ status: 200, delayMs: 100 }));
    await store.create(finishedJob("job_once", { callbackUrl: receiver.url }));

    await Promise.all([sender.enqueue("job_once"), sender.enqueue("job_once"), sender.start()]);
    await sender.enqueue("job_once");
    const callback = await settledCallback(store, "job_once");

    expect(callback.attempts).toHaveLength(1);
    expect(receiver.requests).toHaveLength(1);
  });

  it("ignores jobs that are missing, not finished, or have no callback URL", async () => {
    const { receiver, store, sender } = await setup(() => ({ status: 200 }));
    await store.create(finishedJob("job_running", { callbackUrl: receiver.url }, { status: "running", finishedAt: undefined, result: undefined }));
    await store.create(finishedJob("job_silent", {}));

    await sender.enqueue("job_missing");
    await sender.enqueue("job_running");
    await sender.enqueue("job_silent");

    expect((await store.get("job_running"))?.callback).toBeUndefined();
    expect((await store.get("job_silent"))?.callback).toBeUndefined();
    expect(receiver.requests).toHaveLength(0);
  });

  it("refuses to start without a secret to sign with", async () => {
    const store = await openStore(await tempDir());
    expect(() => createSender({ store, secrets: [] })).toThrow(/secret/);
  });
});
