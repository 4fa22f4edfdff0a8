import { createHmac } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, Receiver } from "@upstash/qstash";
import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it } from "vitest";
import { startQStashEmulator, type QStashEmulator } from "../../test/support/qstash-emulator.ts";
import { ERROR_STATUS } from "../../functions/error-status.ts";
import { DomainError } from "../errors.ts";
import { EmbeddedJobStore } from "../jobs/embedded-job-store.ts";
import type { Dispatch, JobRecord, JobRequest } from "../jobs/ports.ts";
import { createLogger } from "../log.ts";
import { callbackPayload, type CallbackPayload } from "../webhooks/delivery.ts";
import { generateWebhookSecret, parseWebhookSecrets } from "../webhooks/standard-webhooks.ts";
import {
  handleCallbackAttempt,
  handleCallbackFailure,
  parseRunMessage,
  QSTASH_CALLBACK_ATTEMPT_PATH,
  QSTASH_CALLBACK_FAILED_PATH,
  QSTASH_RUN_FAILED_PATH,
  QSTASH_RUN_PATH,
  parseRunFailure,
  QStashCallbackSender,
  type QStashCallbackSenderOptions,
  QStashJobDispatcher,
  qstashUrl,
  QStashSignatures,
  verifyQStash,
  type RunMessage,
} from "./qstash.ts";

const TOKEN = "qstash-test-token";
const CURRENT_KEY = "sig_current_test_key";
const NEXT_KEY = "sig_next_test_key";

const cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  // Last registered first: the emulator stops before the servers it delivers to, stores before their directories.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Request {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

type Handler = (request: Request) => Promise<number> | number;

/** A real HTTP server on a random port that records every request and answers with `handle`'s status. */
async function startServer(handle: Handler) {
  const requests: Request[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const request = { path: req.url ?? "/", headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), at: Date.now() };
    requests.push(request);
    const status = await Promise.resolve(handle(request)).catch(() => 500);
    res.writeHead(status).end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(async () => {
    const closed = once(server, "close");
    server.close();
    server.closeAllConnections();
    await closed;
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

async function startEmulator(retryBackoffMs = 20): Promise<QStashEmulator> {
  const emulator = await startQStashEmulator({ currentSigningKey: CURRENT_KEY, nextSigningKey: NEXT_KEY, token: TOKEN, retryBackoffMs });
  cleanups.push(() => emulator.stop());
  return emulator;
}

/** An HS256 token as QStash makes one, signed with `key`, with the given claims in place of the body's. */
function tokenSignedWith(key: string, claims: Record<string, unknown>): string {
  const now = Math.floor(Date.now() / 1000);
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ iss: "Upstash", iat: now, nbf: now, exp: now + 300, jti: `jwt_${now}`, ...claims })}`;
  return `${unsigned}.${createHmac("sha256", key).update(unsigned).digest("base64url")}`;
}

/** Waits for every message, the callbacks they caused included, to be delivered or given up on. */
async function settleAll(emulator: QStashEmulator): Promise<void> {
  await Promise.all(emulator.messages().map((message) => emulator.settled(message.id)));
}

const receiver = () => new Receiver({ currentSigningKey: CURRENT_KEY, nextSigningKey: NEXT_KEY });
const clientOf = (emulator: QStashEmulator) => new Client({ baseUrl: emulator.url, token: TOKEN, enableTelemetry: false });

/** What a worker endpoint does: verify against its configured URL, then read the message. */
async function startWorker() {
  const runs: RunMessage[] = [];
  const worker = await startServer(async (request) => {
    try {
      await verifyQStash(receiver(), request.body, header(request.headers, "upstash-signature"), qstashUrl(worker.url, QSTASH_RUN_PATH));
    } catch (err) {
      if (err instanceof DomainError) return ERROR_STATUS[err.code];
      throw err;
    }
    runs.push(parseRunMessage(request.body));
    return 200;
  });
  return { ...worker, runs };
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** When the test's jobs went into the line, and when one went back into it. */
const QUEUED_AT = "2026-12-07T10:00:00.000Z";
const REQUEUED_AT = "2026-12-07T10:20:00.000Z";

function run(jobId: string, overrides: Partial<Dispatch> = {}): Dispatch {
  return { jobId, reason: "submitted", runs: 0, queuedAt: QUEUED_AT, attempt: 1, ...overrides };
}

describe("QStashJobDispatcher and verifyQStash", () => {
  it("delivers { jobId, attempt } to the run URL, verified by the real Receiver", async () => {
    const emulator = await startEmulator();
    const worker = await startWorker();
    const dispatcher = new QStashJobDispatcher({ client: clientOf(emulator), deliveryUrl: `${worker.url}/`, failureUrl: worker.url });

    await dispatcher.dispatch(run("job_1"));
    await settleAll(emulator);

    expect(worker.runs).toEqual([{ jobId: "job_1", attempt: 1 }]);
    expect(worker.requests.map((request) => request.path)).toEqual([QSTASH_RUN_PATH]);
    expect(emulator.messages()).toMatchObject([
      { destination: `${worker.url}${QSTASH_RUN_PATH}`, deduplicationId: `job_1:submitted:${Date.parse(QUEUED_AT)}:0:1`, maxRetries: 3, state: "delivered" },
    ]);
  });

  it("refuses a tampered body, a missing signature and a token signed for another URL", async () => {
    const emulator = await startEmulator();
    const worker = await startWorker();
    await new QStashJobDispatcher({ client: clientOf(emulator), deliveryUrl: worker.url, failureUrl: worker.url }).dispatch(run("job_2", { reason: "deferred", attempt: 4 }));
    await settleAll(emulator);
    const [delivery] = worker.requests;
    const signature = header(delivery!.headers, "upstash-signature");
    const url = qstashUrl(worker.url, QSTASH_RUN_PATH);

    await expect(verifyQStash(receiver(), delivery!.body, signature, url)).resolves.toBeUndefined();
    const refusals = [
      () => verifyQStash(receiver(), JSON.stringify({ jobId: "job_other", attempt: 4 }), signature, url),
      () => verifyQStash(receiver(), delivery!.body, undefined, url),
      () => verifyQStash(receiver(), delivery!.body, "", url),
      () => verifyQStash(receiver(), delivery!.body, signature, qstashUrl(worker.url, QSTASH_CALLBACK_FAILED_PATH)),
      () => verifyQStash(new Receiver({ currentSigningKey: "sig_a", nextSigningKey: "sig_b" }), delivery!.body, signature, url),
      // Signed with our key, but without the body's hash (or with one that is not a string): the SDK threw a TypeError, a 500.
      ...[{}, { body: 7 }].map((claims) => () => verifyQStash(receiver(), delivery!.body, tokenSignedWith(CURRENT_KEY, { sub: url, ...claims }), url)),
    ];
    for (const refusal of refusals) {
      await expect(refusal()).rejects.toMatchObject({ code: "unauthorized", message: expect.stringMatching(/^invalid QStash signature/) });
    }
    // The token alone, checked before a body is read: QStash's own passes, one it did not sign does not.
    const signatures = new QStashSignatures({ currentSigningKey: CURRENT_KEY, nextSigningKey: NEXT_KEY });
    expect(signatures.signedByUs(signature)).toBe(true);
    // Either key verifies, as the SDK's: during a rotation the token's key may be the one configured as next.
    expect(new QStashSignatures({ currentSigningKey: "sig_a", nextSigningKey: CURRENT_KEY }).signedByUs(signature)).toBe(true);
    const [head, claims, mac] = signature!.split(".");
    const otherClaims = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(claims!, "base64url").toString()), sub: "https://evil.example" })).toString("base64url");
    for (const forged of [undefined, "", "a.b.c", `${head}.${otherClaims}.${mac}`, `${head}.${claims}.${mac!.slice(0, -2)}`])
      expect(signatures.signedByUs(forged), String(forged)).toBe(false);
    expect(new QStashSignatures({ currentSigningKey: "sig_a", nextSigningKey: "sig_b" }).signedByUs(signature)).toBe(false);
    // QStash's token still says it issued it, which tells wrong signing keys from someone's forgery.
    expect(new QStashSignatures({ currentSigningKey: "sig_a", nextSigningKey: "sig_b" }).claimsUpstash(signature)).toBe(true);
    for (const forged of [undefined, "", "a.b.c", `${head}.${Buffer.from('{"iss":"someone"}').toString("base64url")}.${mac}`])
      expect(signatures.claimsUpstash(forged), String(forged)).toBe(false);
    await expect(verifyQStash(signatures, delivery!.body, signature, url)).resolves.toBeUndefined();

    // Instances that disagree on the delivery URL: the refusal names the URL checked, and says so in the log.
    const warnings: { fields: unknown; message: string }[] = [];
    const elsewhere = qstashUrl("https://other.example", QSTASH_RUN_PATH);
    await expect(verifyQStash(receiver(), delivery!.body, signature, elsewhere, { warn: (fields, message) => warnings.push({ fields, message }) })).rejects.toMatchObject({
      message: `invalid QStash signature for ${elsewhere}`,
    });
    expect(warnings).toEqual([{ fields: expect.objectContaining({ url: elsewhere }), message: expect.stringContaining("QSTASH_DELIVERY_URL") }]);

    // The same refusal over HTTP: a request that did not come through QStash is answered 401 and not run.
    const direct = await fetch(url, { method: "POST", body: JSON.stringify({ jobId: "job_forged", attempt: 1 }) });
    expect(direct.status).toBe(401);
    expect(worker.runs).toEqual([{ jobId: "job_2", attempt: 4 }]);
  });

  it("publishes a repeated dispatch once, and a new reason, run, attempt or place in the line again", async () => {
    const emulator = await startEmulator();
    const worker = await startWorker();
    const dispatcher = new QStashJobDispatcher({ client: clientOf(emulator), deliveryUrl: worker.url, failureUrl: worker.url });

    await dispatcher.dispatch(run("job_3"));
    await dispatcher.dispatch(run("job_3"));
    await dispatcher.dispatch(run("job_3", { reason: "deferred", attempt: 2 }));
    await dispatcher.dispatch(run("job_3", { reason: "deferred", attempt: 2 }));
    await dispatcher.dispatch(run("job_3", { reason: "retried", runs: 1 }));
    await dispatcher.dispatch(run("job_3", { reason: "deferred", runs: 1, attempt: 2 }));
    await dispatcher.dispatch(run("job_3", { reason: "handed-back", runs: 2, queuedAt: REQUEUED_AT }));
    // After the hand-back (which gives its run back: runs 1 again), no room: a deferral with the runs
    // and attempt of one sent before, but from the job's new place in the line.
    await dispatcher.dispatch(run("job_3", { reason: "deferred", runs: 1, attempt: 2, queuedAt: REQUEUED_AT }));
    await settleAll(emulator);

    const [queued, requeued] = [QUEUED_AT, REQUEUED_AT].map((at) => Date.parse(at));
    expect(emulator.messages().map((message) => message.deduplicationId)).toEqual([
      `job_3:submitted:${queued}:0:1`,
      `job_3:deferred:${queued}:0:2`,
      `job_3:retried:${queued}:1:1`,
      `job_3:deferred:${queued}:1:2`,
      `job_3:handed-back:${requeued}:2:1`,
      `job_3:deferred:${requeued}:1:2`,
    ]);
    expect(worker.runs).toHaveLength(6);
  });

  it("holds a delayed dispatch back while an immediate one goes ahead", async () => {
    const emulator = await startEmulator();
    const worker = await startWorker();
    const dispatcher = new QStashJobDispatcher({ client: clientOf(emulator), deliveryUrl: worker.url, failureUrl: worker.url });

    const dispatchedAt = Date.now();
    await dispatcher.dispatch(run("job_late", { delaySeconds: 0.5 }));
    await dispatcher.dispatch(run("job_now"));
    await settleAll(emulator);

    expect(worker.runs.map((run) => run.jobId)).toEqual(["job_now", "job_late"]);
    // Rounded up to whole seconds, as QStash takes them.
    expect(worker.requests[1]!.at - dispatchedAt).toBeGreaterThanOrEqual(1_000);
  });

  it("turns a refused publish into a retryable unavailable error carrying the cause", async () => {
    const emulator = await startEmulator();
    const client = new Client({ baseUrl: emulator.url, token: "wrong-token", retry: false, enableTelemetry: false });
    const dispatcher = new QStashJobDispatcher({ client, deliveryUrl: "http://127.0.0.1:9", failureUrl: "http://127.0.0.1:9" });

    const error = await dispatcher.dispatch(run("job_4")).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(DomainError);
    expect(error).toMatchObject({ code: "unavailable", retryable: true, cause: expect.objectContaining({ status: 401 }) });
    expect(emulator.messages()).toEqual([]);
  });

  it("reports a run no instance took, through its retries, to the public address, signed for it, naming the job and attempt", async () => {
    const emulator = await startEmulator();
    const down = await startServer(() => 503);
    const reports: RunMessage[] = [];
    const publicSide = await startServer(async (request) => {
      await verifyQStash(receiver(), request.body, header(request.headers, "upstash-signature"), qstashUrl(publicSide.url, QSTASH_RUN_FAILED_PATH));
      reports.push(parseRunFailure(JSON.parse(request.body)));
      return 200;
    });
    const dispatcher = new QStashJobDispatcher({ client: clientOf(emulator), deliveryUrl: down.url, failureUrl: publicSide.url, retries: 1 });
    await dispatcher.dispatch(run("job_lost", { reason: "deferred", attempt: 3 }));
    await settleAll(emulator);

    expect(down.requests).toHaveLength(2);
    expect(publicSide.requests.map((r) => r.path)).toEqual([QSTASH_RUN_FAILED_PATH]);
    expect(reports).toEqual([{ jobId: "job_lost", attempt: 3 }]);
    expect(() => parseRunFailure({ status: 503, retried: 1 })).toThrow(DomainError);
  });

  it("refuses a run message that is not { jobId, attempt }", () => {
    for (const body of ["not json", "{}", JSON.stringify({ jobId: "", attempt: 1 }), JSON.stringify({ jobId: "j", attempt: 0 })]) {
      expect(() => parseRunMessage(body)).toThrow(expect.objectContaining({ code: "invalid_request" }));
    }
  });
});

const PUBLIC_URL_PLACEHOLDER = "https://transcribe.example.com";

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
    ...overrides,
  };
}

async function openStore(): Promise<EmbeddedJobStore> {
  const dir = await mkdtemp(join(tmpdir(), "slotscribe-qstash-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const store = await EmbeddedJobStore.open({ dataDir: dir, retentionMs: 3_600_000 });
  cleanups.push(() => store.close());
  return store;
}

interface Received {
  verified: boolean;
  webhookId: string;
  timestamp: string;
  payload: CallbackPayload | undefined;
}

/**
 * A Standard Webhooks receiver answering `reply(n)` to its n-th verified request, and the
 * service's public URL, whose failure-callback endpoint verifies QStash and runs handleCallbackFailure.
 */
async function setupCallbacks(reply: (index: number) => number, options: Partial<QStashCallbackSenderOptions> = {}, retryBackoffMs?: number) {
  const secret = generateWebhookSecret();
  const webhook = new Webhook(secret);
  const received: Received[] = [];
  const destination = await startServer((request) => {
    const headers = {
      "webhook-id": String(request.headers["webhook-id"]),
      "webhook-timestamp": String(request.headers["webhook-timestamp"]),
      "webhook-signature": String(request.headers["webhook-signature"]),
    };
    let payload: CallbackPayload | undefined;
    try {
      payload = webhook.verify(request.body, headers) as CallbackPayload;
    } catch {
      payload = undefined;
    }
    received.push({ verified: payload !== undefined, webhookId: headers["webhook-id"], timestamp: headers["webhook-timestamp"], payload });
    return payload ? reply(received.length - 1) : 401;
  });
  const store = await openStore();
  // What the service's callback-attempt metric is told, in order.
  const counted: string[] = [];
  const onAttempt = (state: string) => void counted.push(state);
  const service = await startServer(async (request) => {
    const cancel = async (messageId: string) => void (await clientOf(emulator).messages.delete(messageId));
    const handle = {
      [QSTASH_CALLBACK_FAILED_PATH]: (body: unknown) => handleCallbackFailure(store, body, { onAttempt }),
      [QSTASH_CALLBACK_ATTEMPT_PATH]: (body: unknown) => handleCallbackAttempt(store, body, { cancel, onAttempt }),
    }[request.path];
    if (!handle) return 404;
    await verifyQStash(receiver(), request.body, header(request.headers, "upstash-signature"), qstashUrl(service.url, request.path as typeof QSTASH_CALLBACK_ATTEMPT_PATH));
    await handle(JSON.parse(request.body));
    return 200;
  });
  const emulator = await startEmulator(retryBackoffMs);
  const sender = new QStashCallbackSender({
    client: clientOf(emulator),
    store,
    secrets: parseWebhookSecrets(secret),
    // Links name the public address; QStash's failure reports go to the delivery address.
    publicUrl: PUBLIC_URL_PLACEHOLDER,
    deliveryUrl: service.url,
    log: createLogger("silent"),
    ...options,
  });
  cleanups.push(() => sender.close());
  return { destination: { url: `${destination.url}/hook`, received }, service, store, emulator, sender, counted };
}

describe("QStashCallbackSender", () => {
  it("sends the embedded-mode body and Standard Webhooks headers through QStash, once per webhook-id", async () => {
    const { destination, service, store, emulator, sender } = await setupCallbacks(() => 204);
    await store.create(finishedJob("job_cb", { callbackUrl: destination.url, metadata: { order: 7 } }));

    await sender.start();
    await sender.enqueue("job_cb");
    await sender.enqueue("job_cb");
    await settleAll(emulator);

    const job = await store.get("job_cb");
    const callback = job!.callback!;
    expect(destination.received).toHaveLength(1);
    const [delivery] = destination.received;
    expect(delivery).toMatchObject({ verified: true, webhookId: callback.webhookId });
    expect(delivery!.payload).toEqual(JSON.parse(JSON.stringify(callbackPayload(job as JobRecord & { status: "succeeded" }, PUBLIC_URL_PLACEHOLDER, new Date()))));
    expect(delivery!.payload?.data.links.self).toBe(`${PUBLIC_URL_PLACEHOLDER}/v1/jobs/job_cb`);

    const [message, ...others] = emulator.messages().filter((m) => m.kind === "publish");
    expect(others).toEqual([]);
    expect(message).toMatchObject({
      destination: destination.url,
      deduplicationId: callback.webhookId,
      maxRetries: 5,
      failureCallback: qstashUrl(service.url, QSTASH_CALLBACK_FAILED_PATH),
      callback: qstashUrl(service.url, QSTASH_CALLBACK_ATTEMPT_PATH),
      headers: { "content-type": "application/json", "webhook-id": callback.webhookId },
      state: "delivered",
    });
    // One note of the hand-over (not repeated by the second enqueue), then the receiver's answer as QStash reports it.
    expect(callback.state).toBe("delivered");
    expect(callback.attempts).toEqual([
      { at: expect.any(String), status: null, latencyMs: expect.any(Number), error: `handed to QStash as message ${message!.id}` },
      { at: expect.any(String), status: 204, latencyMs: 0 },
    ]);
  });

  it("lists the hand-over note before the receiver's answer when QStash reports the answer before its publish returns", async () => {
    const store = await openStore();
    await store.create(finishedJob("job_quick", { callbackUrl: "https://hooks.example/quick" }));
    // QStash delivers at once and its report is recorded while the publish's own answer is still on
    // its way, in the very millisecond the hand-over was sent (seen in CI).
    const sameMillisecond = new Date("2026-12-07T17:49:55.333Z");
    const client = {
      publish: async () => {
        const { webhookId } = (await store.get("job_quick"))!.callback!;
        await handleCallbackAttempt(store, { status: 204, retried: 0, sourceHeader: { "Upstash-Forward-Webhook-Id": [webhookId] } }, { now: sameMillisecond });
        return { messageId: "msg_quick" };
      },
    } as unknown as Client;
    const sender = new QStashCallbackSender({
      client,
      store,
      secrets: parseWebhookSecrets(generateWebhookSecret()),
      publicUrl: PUBLIC_URL_PLACEHOLDER,
      deliveryUrl: "https://slotscribe.example",
      log: createLogger("silent"),
      now: () => sameMillisecond,
    });
    await sender.enqueue("job_quick");
    const callback = (await store.get("job_quick"))!.callback!;
    expect(callback.state).toBe("delivered");
    expect(callback.attempts).toEqual([expect.objectContaining({ status: null, error: "handed to QStash as message msg_quick" }), expect.objectContaining({ status: 204 })]);
  });

  it("hands over at start a callback that an instance which died after finishing the job never published, and only that", async () => {
    const { destination, store, emulator, sender } = await setupCallbacks(() => 204);
    await store.create(finishedJob("job_lost", { callbackUrl: destination.url }, { callback: { webhookId: "msg_lost", state: "pending", attempts: [] } }));

    await sender.start();
    await settleAll(emulator);
    expect(destination.received).toMatchObject([{ verified: true, webhookId: "msg_lost" }]);

    await sender.start();
    await settleAll(emulator);
    expect(emulator.messages().filter((m) => m.kind === "publish")).toHaveLength(1);
  });

  it("re-sends the same webhook-id and signed timestamp on every QStash retry", async () => {
    const { destination, store, emulator, sender } = await setupCallbacks((index) => (index < 2 ? 500 : 200));
    await store.create(finishedJob("job_flaky", { callbackUrl: destination.url }));

    await sender.enqueue("job_flaky");
    await settleAll(emulator);

    const { webhookId } = (await store.get("job_flaky"))!.callback!;
    expect(destination.received).toHaveLength(3);
    expect(destination.received.every((request) => request.verified)).toBe(true);
    expect(new Set(destination.received.map((request) => request.webhookId))).toEqual(new Set([webhookId]));
    expect(new Set(destination.received.map((request) => request.timestamp)).size).toBe(1);
    expect(emulator.messages()[0]).toMatchObject({ state: "delivered", attempts: [{ status: 500 }, { status: 500 }, { status: 200 }] });
    // QStash reports each answer back: the job shows every attempt, and the delivery.
    const callback = (await store.get("job_flaky"))!.callback!;
    expect(callback.state).toBe("delivered");
    expect(callback.attempts.map((a) => a.status)).toEqual([null, 500, 500, 200]);
  });

  it("stops at a receiver's 410 as in embedded mode: the callback is gone and QStash's retries are canceled", async () => {
    // QStash's next attempt 2 s on (the test's emulator otherwise retries within milliseconds): time for the report.
    const { destination, store, emulator, sender, counted } = await setupCallbacks(() => 410, {}, 2_000);
    await store.create(finishedJob("job_moved_away", { callbackUrl: destination.url }));

    await sender.enqueue("job_moved_away");
    await settleAll(emulator);

    expect(destination.received).toHaveLength(1);
    const [message] = emulator.messages().filter((m) => m.kind === "publish");
    expect(message).toMatchObject({ state: "cancelled", attempts: [{ status: 410 }] });
    const callback = (await store.get("job_moved_away"))!.callback!;
    expect(callback.state).toBe("gone");
    expect(callback.attempts.at(-1)).toMatchObject({ status: 410, error: expect.stringContaining("410 Gone") });
    expect(counted).toEqual(["gone"]);
  });

  it("marks the callback failed when QStash reports it gave up", async () => {
    const { destination, store, emulator, sender, counted } = await setupCallbacks(() => 503, { retries: 2 });
    await store.create(finishedJob("job_down", { callbackUrl: destination.url }, { status: "failed", error: { code: "unprocessable_audio", message: "bad audio" } }));

    await sender.enqueue("job_down");
    await settleAll(emulator);

    expect(destination.received).toHaveLength(3);
    expect(emulator.messages().map((message) => [message.kind, message.state])).toEqual([
      ["publish", "failed"],
      ["callback", "delivered"],
      ["callback", "delivered"],
      ["callback", "delivered"],
      ["failure-callback", "delivered"],
    ]);
    const callback = (await store.get("job_down"))!.callback!;
    expect(callback.state).toBe("failed");
    expect(callback.attempts.at(-1)).toEqual({
      at: expect.any(String),
      status: 503,
      latencyMs: 0,
      error: "QStash gave up after 2 retries",
    });
    expect(destination.received[0]!.payload).toMatchObject({ type: "job.failed", data: { error: { code: "unprocessable_audio" } } });
    // Each of QStash's three attempts, then its giving up: what /metrics counts as retrying and failed.
    expect(counted).toEqual(["pending", "pending", "pending", "failed"]);
  });

  it("ignores jobs without a callback URL or not yet finished", async () => {
    const { destination, store, emulator, sender } = await setupCallbacks(() => 200);
    await store.create(finishedJob("job_no_url", {}));
    await store.create(finishedJob("job_running", { callbackUrl: destination.url }, { status: "running" }));

    await sender.enqueue("job_no_url");
    await sender.enqueue("job_running");
    await sender.enqueue("job_missing");

    expect(emulator.messages()).toEqual([]);
    expect((await store.get("job_no_url"))?.callback).toBeUndefined();
    expect((await store.get("job_running"))?.callback).toBeUndefined();
  });

  it("leaves the callback pending and says so when QStash refuses the publish, for the next start() to hand over", async () => {
    const { destination, store, emulator, sender: working } = await setupCallbacks(() => 200);
    const sender = new QStashCallbackSender({
      client: new Client({ baseUrl: emulator.url, token: "wrong-token", retry: false, enableTelemetry: false }),
      store,
      secrets: parseWebhookSecrets(generateWebhookSecret()),
      publicUrl: PUBLIC_URL_PLACEHOLDER,
      deliveryUrl: PUBLIC_URL_PLACEHOLDER,
      log: createLogger("silent"),
    });
    await store.create(finishedJob("job_refused", { callbackUrl: destination.url }));

    await expect(sender.enqueue("job_refused")).rejects.toMatchObject({ code: "unavailable" });
    expect((await store.get("job_refused"))?.callback).toMatchObject({ state: "pending", attempts: [] });

    // What the instance's minutely round does once QStash takes messages again.
    await working.start();
    await settleAll(emulator);
    expect(destination.received.map((r) => r.payload?.data.id)).toEqual(["job_refused"]);
  });

  it("refuses to start without a signing secret", () => {
    expect(
      () =>
        new QStashCallbackSender({
          client: new Client({ token: TOKEN }),
          store: {} as EmbeddedJobStore,
          secrets: [],
          publicUrl: PUBLIC_URL_PLACEHOLDER,
          deliveryUrl: PUBLIC_URL_PLACEHOLDER,
          log: createLogger("silent"),
        }),
    ).toThrow(/webhook secret/);
  });
});

describe("handleCallbackFailure", () => {
  const WEBHOOK_ID = "msg_failure_test";

  async function storeWithPendingCallback(id: string) {
    const store = await openStore();
    await store.create(finishedJob(id, { callbackUrl: "https://receiver.example.com/hook" }, { callback: { webhookId: WEBHOOK_ID, state: "pending", attempts: [] } }));
    return store;
  }

  const sourceBody = (id: string) => Buffer.from(JSON.stringify({ type: "job.succeeded", data: { id } })).toString("base64");

  it("finds the job by the body's data.id and accepts either form of the forwarded header name", async () => {
    for (const name of ["Upstash-Forward-Webhook-Id", "Webhook-Id"]) {
      const store = await storeWithPendingCallback("job_named");
      const report = { status: 500, retried: 5, maxRetries: 5, sourceHeader: { [name]: [WEBHOOK_ID] }, sourceBody: sourceBody("job_named") };

      const job = await handleCallbackFailure(store, report, { now: new Date("2025-02-01T00:00:00.000Z") });

      expect(job?.callback).toEqual({
        webhookId: WEBHOOK_ID,
        state: "failed",
        attempts: [{ at: "2025-02-01T00:00:00.000Z", status: 500, latencyMs: 0, error: "QStash gave up after 5 retries" }],
      });
    }
  });

  it("finds the job by webhook-id alone when the body was redacted, and records a missing response as null", async () => {
    const store = await storeWithPendingCallback("job_redacted");
    const job = await handleCallbackFailure(store, { status: 0, retried: 3, sourceHeader: { "Upstash-Forward-Webhook-Id": [WEBHOOK_ID] } });
    expect(job?.id).toBe("job_redacted");
    expect(job?.callback).toMatchObject({ state: "failed", attempts: [{ status: null, error: "QStash gave up after 3 retries" }] });
  });

  it("shows when QStash will try a callback again after a failed attempt, and no time once none is to come", async () => {
    const store = await storeWithPendingCallback("job_retrying");
    const now = new Date("2025-02-01T00:00:00.000Z");
    const report = (retried: number) => ({ status: 503, retried, maxRetries: 5, sourceHeader: { "Webhook-Id": [WEBHOOK_ID] }, sourceBody: sourceBody("job_retrying") });
    await handleCallbackAttempt(store, report(1), { now });
    // Its second retry, 10 s after this answer (5 s, 10 s, 20 s ... up to 50 s).
    expect((await store.get("job_retrying"))?.callback).toMatchObject({ state: "pending", nextAttemptAt: "2025-02-01T00:00:10.000Z" });
    await handleCallbackAttempt(store, report(5), { now });
    expect((await store.get("job_retrying"))?.callback?.nextAttemptAt).toBeUndefined();
  });

  it("records one failure however often the report is delivered", async () => {
    const store = await storeWithPendingCallback("job_twice");
    const report = { status: 502, retried: 1, sourceHeader: { "Webhook-Id": [WEBHOOK_ID] }, sourceBody: sourceBody("job_twice") };
    const counted: string[] = [];
    await handleCallbackFailure(store, report, { onAttempt: (state) => counted.push(state) });
    await handleCallbackFailure(store, report, { onAttempt: (state) => counted.push(state) });
    expect((await store.get("job_twice"))?.callback?.attempts).toHaveLength(1);
    expect(counted).toEqual(["failed"]);
  });

  it("returns null for a report about no callback of ours", async () => {
    const store = await storeWithPendingCallback("job_other");
    expect(await handleCallbackFailure(store, { status: 500, retried: 1, sourceBody: sourceBody("job_gone") })).toBeNull();
    expect(await handleCallbackFailure(store, { status: 500, retried: 1, sourceHeader: { "Webhook-Id": ["msg_unknown"] } })).toBeNull();
    expect(await handleCallbackFailure(store, { status: 500, retried: 1, sourceHeader: { "Webhook-Id": ["msg_unknown"] }, sourceBody: sourceBody("job_other") })).toBeNull();
    expect(await handleCallbackFailure(store, { status: 500, retried: 1 })).toBeNull();
    expect((await store.get("job_other"))?.callback?.state).toBe("pending");
  });

  it("refuses a body that is not a failure report", async () => {
    const store = await openStore();
    for (const body of [null, "text", { status: "500", retried: 1 }, { status: 500 }]) {
      await expect(handleCallbackFailure(store, body)).rejects.toMatchObject({ code: "invalid_request" });
    }
  });
});
