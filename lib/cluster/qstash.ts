/**
 * Cluster mode over QStash. Jobs are handed to whichever instance QStash reaches at the
 * deployment's delivery URL (QSTASH_DELIVERY_URL, else PUBLIC_URL: with ROLE=api instances, the
 * workers' address), and job callbacks go out through QStash, which holds their retries: no
 * instance has to stay up for a job to be picked up or a callback to be retried.
 *
 * Messages (JSON bodies):
 * - `POST <deliveryUrl>/internal/qstash/run`: `{ "jobId": string, "attempt": number }`.
 * - `POST <callbackUrl>`: the same CallbackPayload and Standard Webhooks headers as embedded mode.
 * - `POST <deliveryUrl>/internal/qstash/callback-failed`: QStash's failure-callback report, once
 *   every retry of a callback failed.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { Receiver, SignatureError, type Client } from "@upstash/qstash";
import { z } from "zod";
import { DomainError } from "../errors.ts";
import {
  deduplicationId,
  isFinal,
  type CallbackState,
  type DeliveryAttempt,
  type Dispatch,
  type FinalJob,
  type JobDispatcher,
  type JobRecord,
  type JobStore,
} from "../jobs/ports.ts";
import { storedCallback } from "../jobs/records.ts";
import type { Logger } from "../log.ts";
import { callbackPayload, type CallbackSender } from "../webhooks/delivery.ts";
import { signWebhook } from "../webhooks/standard-webhooks.ts";
import { classifyDeliveryResponse } from "../webhooks/retry-schedule.ts";

export const QSTASH_RUN_PATH = "/internal/qstash/run";
export const QSTASH_CALLBACK_FAILED_PATH = "/internal/qstash/callback-failed";
export const QSTASH_RUN_FAILED_PATH = "/internal/qstash/run-failed";
export const QSTASH_CALLBACK_ATTEMPT_PATH = "/internal/qstash/callback-attempt";

/**
 * Where QStash delivers `path`. QStash signs this exact URL into the token's subject, so the
 * handler must verify against the URL built here, not one rebuilt from the request's Host.
 */
export function qstashUrl(
  deliveryUrl: string,
  path: typeof QSTASH_RUN_PATH | typeof QSTASH_CALLBACK_FAILED_PATH | typeof QSTASH_RUN_FAILED_PATH | typeof QSTASH_CALLBACK_ATTEMPT_PATH,
): string {
  return `${deliveryUrl.replace(/\/+$/, "")}${path}`;
}

// QStash stamps nbf with its own clock; an instance a few seconds behind would otherwise refuse fresh messages.
const CLOCK_TOLERANCE_SECONDS = 5;

/**
 * QStash's signing keys. A delivery's token is checked against them before its body is read
 * (signedByUs), so that only QStash can make a route read a body: the /internal/ routes take no API
 * key, and a forged delivery was read up to the upload limit before its 401. The whole of the token
 * (the body's hash, the URL, its times) is then checked by the SDK's Receiver (verify).
 */
export class QStashSignatures implements Pick<Receiver, "verify"> {
  readonly #keys: Buffer[];
  readonly #receiver: Receiver;

  constructor(keys: { currentSigningKey: string; nextSigningKey: string }) {
    this.#keys = [keys.currentSigningKey, keys.nextSigningKey].map((key) => Buffer.from(key));
    this.#receiver = new Receiver(keys);
  }

  /** Whether `signature` is an HS256 token signed with the current or the next key, as the SDK checks it. */
  signedByUs(signature: string | undefined): boolean {
    const parts = signature?.split(".") ?? [];
    if (parts.length !== 3) return false;
    const given = Buffer.from(parts[2]!, "base64url");
    return this.#keys.some((key) => {
      const expected = createHmac("sha256", key).update(`${parts[0]}.${parts[1]}`).digest();
      return expected.length === given.length && timingSafeEqual(expected, given);
    });
  }

  /**
   * Whether `signature` says QStash issued it, whoever signed it: a token that claims so but is not
   * signed with these keys most often means the instance was given the wrong signing keys.
   */
  claimsUpstash(signature: string | undefined): boolean {
    const payload = signature?.split(".")[1];
    if (!payload) return false;
    try {
      return (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { iss?: unknown }).iss === "Upstash";
    } catch {
      return false;
    }
  }

  verify(request: Parameters<Receiver["verify"]>[0]): Promise<boolean> {
    return this.#receiver.verify(request);
  }
}

/**
 * Refuses a request QStash did not sign for `url`. `rawBody` must be the bytes as received: the
 * token carries a hash of them, which re-serialised JSON would not match.
 */
export async function verifyQStash(
  receiver: Pick<Receiver, "verify">,
  rawBody: string,
  signature: string | undefined,
  url: string,
  log?: { warn(fields: object, message: string): void },
): Promise<void> {
  if (!signature) throw new DomainError("unauthorized", "invalid QStash signature");
  try {
    await receiver.verify({ signature, body: rawBody, url, clockTolerance: CLOCK_TOLERANCE_SECONDS });
  } catch (err) {
    if (err instanceof SignatureError) {
      // Signed, but not as this instance checks: most often instances that disagree on the delivery URL,
      // which would leave every job undelivered with nothing but a 401 to show for it.
      log?.warn(
        { url, reason: err.message },
        "a QStash delivery's signature does not verify: QStash signs the URL it delivers to, which must be QSTASH_DELIVERY_URL (else PUBLIC_URL) on every instance, with the same signing keys",
      );
      throw new DomainError("unauthorized", `invalid QStash signature for ${url}`, { cause: err });
    }
    // A token signed with our key whose claims the SDK cannot read (no body hash, or not a string):
    // not a delivery QStash made, so refused as unsigned, not a 500.
    if (err instanceof TypeError) throw new DomainError("unauthorized", "invalid QStash signature", { cause: err });
    // Anything else (such as a Receiver without signing keys) is our misconfiguration, not the caller's fault.
    throw err;
  }
}

/** The body of a run message. */
export interface RunMessage {
  jobId: string;
  /** Deliveries of the job since it last became queued, from 1 (see Dispatch). */
  attempt: number;
}

const runMessageSchema = z.object({ jobId: z.string().min(1), attempt: z.number().int().positive() });

/** A verified body's JSON, or undefined when it is none: the schema it is checked against then refuses it. */
export function jsonOf(rawBody: string): unknown {
  try {
    return JSON.parse(rawBody);
  } catch {
    return undefined;
  }
}

/** Reads a verified run message's body. */
export function parseRunMessage(rawBody: string): RunMessage {
  const parsed = runMessageSchema.safeParse(jsonOf(rawBody));
  if (!parsed.success) throw new DomainError("invalid_request", "The body is not a QStash run message.");
  return parsed.data;
}

export interface QStashJobDispatcherOptions {
  client: Client;
  /** Where QStash delivers to the deployment; runs go to its QSTASH_RUN_PATH. */
  deliveryUrl: string;
  /**
   * Where QStash reports a run message it gave up on (QSTASH_RUN_FAILED_PATH): the public address,
   * whose instances (the api ones, too) are up when the workers it could not reach are not.
   */
  failureUrl: string;
  /** Redeliveries after a failed delivery; default 3. */
  retries?: number;
  /** Told of every publish QStash did not take. */
  onFailure?: () => void;
}

const DEFAULT_RUN_RETRIES = 3;
const PUBLISH_RETRY_AFTER_SECONDS = 5;

/**
 * Hands jobs to the cluster: QStash delivers each to whichever instance answers the run URL, whose
 * handler passes it to the runner. Nothing waits on this instance, so start and stop have nothing to do.
 */
export class QStashJobDispatcher implements JobDispatcher {
  readonly admission = "now" as const;
  readonly waiting = 0;
  readonly #client: Client;
  readonly #url: string;
  readonly #failureCallback: string;
  readonly #retries: number;
  readonly #onFailure: () => void;

  constructor(options: QStashJobDispatcherOptions) {
    this.#client = options.client;
    this.#onFailure = options.onFailure ?? (() => undefined);
    this.#url = qstashUrl(options.deliveryUrl, QSTASH_RUN_PATH);
    this.#failureCallback = qstashUrl(options.failureUrl, QSTASH_RUN_FAILED_PATH);
    this.#retries = options.retries ?? DEFAULT_RUN_RETRIES;
  }

  async dispatch(dispatch: Dispatch): Promise<void> {
    const { jobId, attempt, delaySeconds } = dispatch;
    if (!Number.isSafeInteger(attempt) || attempt < 1) throw new RangeError(`attempt must be a positive integer, got ${attempt}`);
    if (delaySeconds !== undefined && !(Number.isFinite(delaySeconds) && delaySeconds >= 0)) {
      throw new RangeError(`delaySeconds must be a finite number >= 0, got ${delaySeconds}`);
    }
    const message: RunMessage = { jobId, attempt };
    try {
      await this.#client.publishJSON({
        url: this.#url,
        body: message,
        // A repeated dispatch (a retried request, a redelivered message deferred again) is dropped by QStash.
        deduplicationId: deduplicationId(dispatch),
        retries: this.#retries,
        // A message QStash gives up on must not take its job with it: the report sends the job again.
        failureCallback: this.#failureCallback,
        // QStash takes whole seconds; rounding up never runs a job earlier than asked.
        ...(delaySeconds ? { delay: Math.ceil(delaySeconds) } : {}),
      });
    } catch (err) {
      this.#onFailure();
      throw new DomainError("unavailable", "The job could not be handed to QStash; retry shortly.", {
        cause: err,
        retryAfterSeconds: PUBLISH_RETRY_AFTER_SECONDS,
      });
    }
  }

  async start(): Promise<void> {}

  stop(): void {}
}

export interface QStashCallbackSenderOptions {
  client: Client;
  store: JobStore;
  /** Every secret signs the callback, so receivers keep verifying through a rotation. */
  secrets: Buffer[];
  /** Base of the links in the payload. */
  publicUrl: string;
  /** Where QStash delivers to the deployment; its failure reports go to QSTASH_CALLBACK_FAILED_PATH there. */
  deliveryUrl: string;
  log: Logger;
  /** QStash's redeliveries after the first attempt; default 5. */
  retries?: number;
  /** Per attempt; default 15 s, as in embedded mode. */
  timeoutSeconds?: number;
  now?: () => Date;
  /** Told of every publish QStash did not take. */
  onFailure?: () => void;
}

const DEFAULT_CALLBACK_RETRIES = 5;
// 5, 10, 20, 40, 50 s: with six 15 s attempts at most about 3.6 minutes from first to last, every
// retry inside the receivers' timestamp tolerance (see QStashCallbackSender).
const RETRY_DELAY = { firstMs: 5_000, longestMs: 50_000 };
/** QStash's Upstash-Retry-Delay expression (`retried` counts from 0), the same as callbackRetryDelayMs. */
const CALLBACK_RETRY_DELAY = `min(${RETRY_DELAY.longestMs}, ${RETRY_DELAY.firstMs} * pow(2, retried))`;

const DEFAULT_CALLBACK_TIMEOUT_SECONDS = 15;

/** How long QStash waits before the next attempt at a callback it has retried `retried` times. */
export function callbackRetryDelayMs(retried: number): number {
  return Math.min(RETRY_DELAY.longestMs, RETRY_DELAY.firstMs * 2 ** retried);
}

/** The attempt entry that records the hand-over; its text names the QStash message for support. */
const HANDED_OVER = "handed to QStash as message ";

function handedOverNote(messageId: string): string {
  return `${HANDED_OVER}${messageId}`;
}

/**
 * Sends callbacks through QStash, which holds the retries; close() has nothing to do.
 *
 * The body is signed once, at publish time, and every QStash retry re-sends the same bytes and
 * headers, webhook-timestamp included. Standard Webhooks receivers refuse a timestamp older than
 * their tolerance (5 minutes in the reference libraries), so a retry after that would be refused
 * however healthy the receiver. Hence the default retry delay and per-attempt timeout, which keep
 * every attempt within about 3.6 minutes of the publish. More retries, a longer delay, or a
 * Retry-After from the receiver if QStash follows it, can still push a retry past the tolerance.
 *
 * QStash reports only the final failure (to QSTASH_CALLBACK_FAILED_PATH, see
 * handleCallbackFailure): a delivered callback stays "pending" in the store, with one attempt
 * entry noting the QStash message it was handed to.
 */
export class QStashCallbackSender implements CallbackSender {
  readonly #client: Client;
  readonly #store: JobStore;
  readonly #secrets: readonly Buffer[];
  readonly #publicUrl: string;
  readonly #failureCallback: string;
  /** QStash reports each answer of the receiver here, so the job shows its callback's attempts. */
  readonly #attemptCallback: string;
  readonly #log: Logger;
  readonly #retries: number;
  readonly #timeoutSeconds: number;
  readonly #now: () => Date;
  readonly #onFailure: () => void;

  constructor(options: QStashCallbackSenderOptions) {
    // Refused here rather than at the first callback, which may come hours after start-up.
    if (options.secrets.length === 0) throw new Error("Callbacks need at least one webhook secret to sign with");
    this.#client = options.client;
    this.#store = options.store;
    this.#secrets = [...options.secrets];
    this.#publicUrl = options.publicUrl;
    this.#failureCallback = qstashUrl(options.deliveryUrl, QSTASH_CALLBACK_FAILED_PATH);
    this.#attemptCallback = qstashUrl(options.deliveryUrl, QSTASH_CALLBACK_ATTEMPT_PATH);
    this.#log = options.log;
    this.#retries = options.retries ?? DEFAULT_CALLBACK_RETRIES;
    this.#timeoutSeconds = options.timeoutSeconds ?? DEFAULT_CALLBACK_TIMEOUT_SECONDS;
    this.#now = options.now ?? (() => new Date());
    this.#onFailure = options.onFailure ?? (() => undefined);
  }

  async enqueue(jobId: string): Promise<void> {
    const job = await this.#store.get(jobId);
    const url = job?.request.callbackUrl;
    if (!job || !url || !isFinal(job)) return;
    // The webhook-id is also the deduplication id: a second enqueue's publish is dropped by QStash.
    const callback = await storedCallback(this.#store, job);
    if (callback?.state !== "pending") return;
    await this.#publish(job, url, callback);
  }

  /**
   * Hands over what an instance that died between finishing a job and publishing its callback left
   * pending. Publishing again is harmless: the webhook-id is QStash's deduplication id.
   */
  async start(): Promise<void> {
    let pending: JobRecord[];
    try {
      pending = await this.#store.pendingCallbacks();
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, "pending callbacks not checked: the job store is unreachable");
      return;
    }
    for (const job of pending) {
      const url = job.request.callbackUrl;
      if (!url || !isFinal(job) || !job.callback || job.callback.attempts.some((a) => a.error?.startsWith(HANDED_OVER))) continue;
      await this.#publish(job, url, job.callback).catch((err: Error) =>
        this.#log.warn({ jobId: job.id, err: err.message }, "callback not handed to QStash: tried again within a minute"),
      );
    }
  }

  async #publish(job: FinalJob, url: string, callback: CallbackState): Promise<void> {
    const jobId = job.id;
    const sentAt = this.#now();
    const body = JSON.stringify(callbackPayload(job, this.#publicUrl, sentAt));
    const started = performance.now();
    let messageId: string;
    try {
      ({ messageId } = await this.#client.publish({
        url,
        body,
        // The Client forwards these to the receiver (as Upstash-Forward-*, which QStash strips).
        headers: {
          "content-type": "application/json",
          ...signWebhook({ id: callback.webhookId, timestamp: sentAt, body, secrets: this.#secrets }),
        },
        deduplicationId: callback.webhookId,
        retries: this.#retries,
        retryDelay: CALLBACK_RETRY_DELAY,
        timeout: this.#timeoutSeconds,
        failureCallback: this.#failureCallback,
        callback: this.#attemptCallback,
      }));
    } catch (err) {
      this.#onFailure();
      // The callback stays pending with no message behind it: the caller learns that here.
      throw new DomainError("unavailable", "The callback could not be handed to QStash.", { cause: err });
    }

    const note: DeliveryAttempt = {
      at: sentAt.toISOString(),
      status: null,
      latencyMs: Math.round(performance.now() - started),
      error: handedOverNote(messageId),
    };
    await this.#store.update(jobId, (current) =>
      // A deduplicated publish answers with the first message's id, which is already noted.
      !current.callback || current.callback.attempts.some((attempt) => attempt.error === note.error)
        ? current
        : { ...current, callback: { ...current.callback, attempts: withNoteInPlace(current.callback.attempts, note) } },
    );
    this.#log.info({ jobId, webhookId: callback.webhookId, messageId }, "callback handed to QStash");
  }

  async close(): Promise<void> {}
}

/**
 * The attempts with the hand-over note before every attempt not older than it: QStash's report of
 * the receiver's answer can be written before the note, in the same millisecond too, and the
 * hand-over came first.
 */
function withNoteInPlace(attempts: DeliveryAttempt[], note: DeliveryAttempt): DeliveryAttempt[] {
  const at = attempts.findIndex((attempt) => Date.parse(attempt.at) >= Date.parse(note.at));
  return at === -1 ? [...attempts, note] : [...attempts.slice(0, at), note, ...attempts.slice(at)];
}

/** QStash's failure-callback body; only the fields read here. */
const failureReportSchema = z.object({
  /** The last attempt's HTTP status; 0 when it got no response. */
  status: z.number().int(),
  retried: z.number().int().nonnegative(),
  maxRetries: z.number().int().nonnegative().optional(),
  /** The message the report is about, which can be canceled while it waits for its next attempt. */
  sourceMessageId: z.string().optional(),
  /** Header names arrive canonicalised, the values as lists. */
  sourceHeader: z.record(z.string(), z.union([z.string(), z.array(z.string())])).optional(),
  /** The message body, base64; absent when redacted. */
  sourceBody: z.string().optional(),
});

const callbackBodySchema = z.object({ data: z.object({ id: z.string() }) });

// As published the header is Upstash-Forward-Webhook-Id; QStash may report it either way.
const WEBHOOK_ID_HEADERS: ReadonlySet<string> = new Set(["webhook-id", "upstash-forward-webhook-id"]);

/**
 * Marks the callback a QStash failure report is about as failed, recording the last attempt.
 * `body` is the report's parsed JSON, after verifyQStash on the raw bytes. Returns the updated job,
 * or null when the report names no job of ours with that callback (the job may have expired):
 * answer 2xx either way, or QStash redelivers the report.
 */
export function handleCallbackFailure(store: CallbackJobs, body: unknown, { now = new Date(), onAttempt }: { now?: Date; onAttempt?: OnAttempt } = {}): Promise<JobRecord | null> {
  return recordReport(
    store,
    body,
    (report) => ({
      attempt: { at: now.toISOString(), status: report.status > 0 ? report.status : null, latencyMs: 0, error: `QStash gave up after ${report.retried} retries` },
      state: "failed",
    }),
    onAttempt,
  );
}

/**
 * Records an attempt QStash reports through the message's callback (the receiver's answer): a 2xx
 * marks the callback delivered, a 410 gone (the receiver says the URL is no more, as in embedded
 * mode, and the retries QStash still has for it are canceled with `cancel`), anything else is one
 * more failed attempt, QStash retrying. As for handleCallbackFailure, null when the report is about
 * no callback of ours.
 */
export async function handleCallbackAttempt(
  store: CallbackJobs,
  body: unknown,
  { now = new Date(), cancel, onAttempt }: { now?: Date; cancel?: (messageId: string) => Promise<void>; onAttempt?: OnAttempt } = {},
): Promise<JobRecord | null> {
  let retriesLeft: string | undefined;
  const job = await recordReport(
    store,
    body,
    (report) => {
      const status = report.status > 0 ? report.status : null;
      const outcome = classifyDeliveryResponse(status);
      const moreToCome = report.retried < (report.maxRetries ?? Number.POSITIVE_INFINITY);
      if (outcome === "gone" && report.sourceMessageId !== undefined && moreToCome) retriesLeft = report.sourceMessageId;
      return {
        attempt: {
          at: now.toISOString(),
          status,
          latencyMs: 0,
          ...(outcome === "delivered" ? {} : { error: outcome === "gone" ? "the receiver answered 410 Gone: not sent again" : `QStash attempt ${report.retried + 1}` }),
        },
        state: outcome === "retry" ? "pending" : outcome,
        // QStash's next attempt, when one is to come: the delay it was told, from this answer.
        ...(outcome === "retry" && moreToCome ? { nextAttemptAt: new Date(now.getTime() + callbackRetryDelayMs(report.retried)).toISOString() } : {}),
      };
    },
    onAttempt,
  );
  if (retriesLeft !== undefined && job?.callback?.state === "gone") await cancel?.(retriesLeft).catch(() => undefined);
  return job;
}

type CallbackJobs = Pick<JobStore, "get" | "update" | "pendingCallbacks">;
/** Told the state each attempt a report records leaves its callback in (once per attempt, not per repeated report). */
type OnAttempt = (state: CallbackState["state"]) => void;
type Report = z.infer<typeof failureReportSchema>;

async function recordReport(
  store: CallbackJobs,
  body: unknown,
  outcome: (report: Report) => { attempt: DeliveryAttempt; state: "delivered" | "failed" | "gone" | "pending"; nextAttemptAt?: string },
  onAttempt?: OnAttempt,
): Promise<JobRecord | null> {
  const parsed = failureReportSchema.safeParse(body);
  if (!parsed.success) throw new DomainError("invalid_request", "The body is not a QStash report.");
  const report = parsed.data;

  const header = Object.entries(report.sourceHeader ?? {}).find(([name]) => WEBHOOK_ID_HEADERS.has(name.toLowerCase()))?.[1];
  const webhookId = Array.isArray(header) ? header[0] : header;
  const job = await findCallbackJob(store, jobIdFromBody(report.sourceBody), webhookId);
  if (!job?.callback) return null;
  const expectedWebhookId = job.callback.webhookId;
  const { attempt, state, nextAttemptAt } = outcome(report);
  let recorded = false;
  const updated = await store.update(job.id, (current) => {
    const callback = current.callback;
    // Set on every call: a shared store may run the change again after a conflict.
    recorded = false;
    // Only a pending callback changes, once per report: QStash may deliver a report again.
    if (callback?.state !== "pending" || callback.webhookId !== expectedWebhookId) return current;
    if (attempt.error !== undefined && callback.attempts.some((a) => a.error === attempt.error)) return current;
    recorded = true;
    return { ...current, callback: { webhookId: callback.webhookId, state, attempts: [...callback.attempts, attempt], ...(nextAttemptAt ? { nextAttemptAt } : {}) } };
  });
  if (recorded) onAttempt?.(state);
  return updated;
}

/** The run message a QStash failure report is about (after verifyQStash on the raw bytes). */
export function parseRunFailure(body: unknown): RunMessage {
  const parsed = failureReportSchema.safeParse(body);
  if (!parsed.success || parsed.data.sourceBody === undefined) throw new DomainError("invalid_request", "The body is not a QStash failure report of a run message.");
  return parseRunMessage(Buffer.from(parsed.data.sourceBody, "base64").toString("utf8"));
}

function jobIdFromBody(sourceBody: string | undefined): string | undefined {
  if (sourceBody === undefined) return undefined;
  try {
    const parsed = callbackBodySchema.safeParse(JSON.parse(Buffer.from(sourceBody, "base64").toString("utf8")));
    return parsed.success ? parsed.data.data.id : undefined;
  } catch {
    return undefined;
  }
}

async function findCallbackJob(store: Pick<JobStore, "get" | "pendingCallbacks">, jobId: string | undefined, webhookId: string | undefined): Promise<JobRecord | null> {
  if (jobId !== undefined) {
    const job = await store.get(jobId);
    // A webhook-id that disagrees means the report is about some other event than this job's callback.
    return job?.callback && (webhookId === undefined || job.callback.webhookId === webhookId) ? job : null;
  }
  if (webhookId === undefined) return null;
  // The store has no index by webhook-id; only callbacks still pending can fail, so only those are searched.
  return (await store.pendingCallbacks()).find((job) => job.callback?.webhookId === webhookId) ?? null;
}
