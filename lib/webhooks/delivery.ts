/**
 * Job callbacks, signed per Standard Webhooks and retried on a schedule. The embedded sender
 * keeps its retry state in the job store, not in memory: the webhook-id, every attempt and the
 * time of the next one are written before they are acted on, so a restarted process resumes
 * each callback where the previous one left it.
 */
import { isFinal, type CallbackState, type DeliveryAttempt, type FinalStatus, type JobRecord, type JobStore } from "../jobs/ports.ts";
import { storedCallback } from "../jobs/records.ts";
import type { Logger } from "../log.ts";
import type { OutboundPolicy } from "../net/outbound-policy.ts";
import { doneBy } from "../deferred.ts";
import { isDomainError } from "../errors.ts";
import { safeFetch } from "../net/safe-fetch.ts";
import { verboseTranscript } from "../formats.ts";
import { classifyDeliveryResponse, nextAttemptDelay, parseRetryAfter, type RetrySchedule } from "./retry-schedule.ts";
import { signWebhook } from "./standard-webhooks.ts";
import { VERSION } from "../version.ts";

/** Sends the callback of a finished job. Implementations differ in where pending retries live. */
export interface CallbackSender {
  /**
   * Takes on the callback of a job that reached a final status; a job without a callback URL is
   * ignored. Resolves once the callback is durably pending, not once it is delivered.
   */
  enqueue(jobId: string): Promise<void>;
  /**
   * Resumes the callbacks left pending (by a previous process, or a hand-off that failed); called
   * again every minute, so it takes up only what nothing is already sending.
   */
  start(): Promise<void>;
  /** Stops retrying; attempts already on the wire get until `deadline` to finish and be recorded. */
  close(deadline: AbortSignal): Promise<void>;
}

/** The JSON body of a callback, in the Standard Webhooks event shape. */
export interface CallbackPayload {
  type: `job.${FinalStatus}`;
  /** When the event happened (the job finished), not when this attempt was sent. */
  timestamp: string;
  data: {
    id: string;
    status: FinalStatus;
    metadata: Record<string, unknown> | null;
    error?: { code: string; message: string };
    links: { self: string; result: string };
    /** Only when the job asked for it with callbackIncludeResult. */
    /** With callback_include_result: the transcript as verbose_json spells it. */
    result?: ReturnType<typeof verboseTranscript>;
  };
}

/** The body for `job`, linking to where it was submitted or else `publicUrl`; `now` stands in for a finish time the job lacks. */
export function callbackPayload(job: JobRecord & { status: FinalStatus }, publicUrl: string, now: Date): CallbackPayload {
  const self = `${(job.request.origin ?? publicUrl).replace(/\/+$/, "")}/v1/jobs/${job.id}`;
  return {
    type: `job.${job.status}`,
    timestamp: job.finishedAt ?? now.toISOString(),
    data: {
      id: job.id,
      status: job.status,
      metadata: job.request.metadata ?? null,
      ...(job.status === "failed" && job.error ? { error: job.error } : {}),
      links: { self, result: `${self}/result` },
      ...(job.request.callbackIncludeResult && job.result ? { result: verboseTranscript(job.result) } : {}),
    },
  };
}

export interface EmbeddedCallbackSenderOptions {
  store: JobStore;
  /** Every secret signs every attempt, so receivers keep verifying through a rotation. */
  secrets: Buffer[];
  schedule: RetrySchedule;
  policy: OutboundPolicy;
  /** Base of the links in the payload. */
  publicUrl: string;
  log: Logger;
  /** Per attempt, covering resolution, the request and the response. Default 15 s. */
  timeoutMs?: number;
  random?: () => number;
  now?: () => Date;
  /** Told the outcome of every attempt: delivered, retry (pending), gone or failed. */
  onAttempt?: (state: CallbackState["state"]) => void;
}

const DEFAULT_TIMEOUT_MS = 15_000;
const USER_AGENT = `slotscribe/${VERSION}`;
// Enough to let a small response end cleanly; anything a receiver says beyond that is not read.
const MAX_DRAINED_BYTES = 4 * 1024;

/** An attempt as it is recorded on the job: what was sent and answered, and what comes next. */
interface Outcome {
  attempt: DeliveryAttempt;
  state: CallbackState["state"];
  nextAttemptAt: string | undefined;
}

/** What one POST to the receiver came to. */
interface SendResult {
  status: number | null;
  latencyMs: number;
  error?: unknown;
  retryAfterSeconds?: number;
}

/**
 * Delivers callbacks from this process, with timers for the retries. One process per job store,
 * like EmbeddedJobStore itself: two senders over one store would both deliver.
 */
export class EmbeddedCallbackSender implements CallbackSender {
  readonly #store: JobStore;
  readonly #secrets: readonly Buffer[];
  readonly #schedule: RetrySchedule;
  readonly #firstDelayMs: number;
  readonly #policy: OutboundPolicy;
  readonly #publicUrl: string;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #random: () => number;
  readonly #onAttempt: (state: CallbackState["state"]) => void;
  readonly #now: () => Date;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /** The attempt under way per job: a job is never sent twice at once. */
  readonly #inFlight = new Map<string, Promise<void>>();
  /**
   * Attempts made whose outcome the store could not take (a full disk): recorded again before
   * anything is sent, so a receiver that has answered is not sent the callback again every minute.
   */
  readonly #unrecorded = new Map<string, Outcome>();
  /** Aborted at close's deadline: ends the requests still waiting for their receivers. */
  readonly #cutOff = new AbortController();
  #closed = false;

  constructor(options: EmbeddedCallbackSenderOptions) {
    // Refused here rather than at the first callback, which may come hours after start-up.
    if (options.secrets.length === 0) throw new Error("Callbacks need at least one webhook secret to sign with");
    const [firstDelayMs] = options.schedule;
    if (firstDelayMs === undefined) throw new Error("The callback retry schedule needs at least one entry");
    this.#store = options.store;
    this.#secrets = [...options.secrets];
    this.#schedule = options.schedule;
    this.#firstDelayMs = firstDelayMs;
    this.#policy = options.policy;
    this.#publicUrl = options.publicUrl;
    this.#log = options.log;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#random = options.random ?? Math.random;
    this.#onAttempt = options.onAttempt ?? (() => undefined);
    this.#now = options.now ?? (() => new Date());
  }

  async enqueue(jobId: string): Promise<void> {
    const job = await this.#store.get(jobId);
    if (!job?.request.callbackUrl || !isFinal(job)) return;
    // Stored before any attempt, so every retry, in this process or the next, reuses the webhook-id.
    const callback = await storedCallback(this.#store, job, new Date(this.#now().getTime() + this.#firstDelayMs));
    if (callback?.state === "pending") this.#resume(jobId, callback);
  }

  async start(): Promise<void> {
    for (const job of await this.#store.pendingCallbacks()) {
      if (job.callback) this.#resume(job.id, job.callback);
    }
  }

  async close(deadline: AbortSignal): Promise<void> {
    this.#closed = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    if (this.#inFlight.size === 0) return;
    if (await doneBy(Promise.all(this.#inFlight.values()), deadline)) return;
    // Left pending and unrecorded: the next start() sends them again under the same webhook-id, and
    // a receiver too slow for the stop has not used up an attempt of the schedule.
    this.#log.warn({ jobIds: [...this.#inFlight.keys()] }, "callback attempts still in flight at close");
    this.#cutOff.abort();
    await Promise.all(this.#inFlight.values());
  }

  /** Schedules the callback's next attempt at its stored time, unless one is already scheduled or under way. */
  #resume(jobId: string, callback: CallbackState): void {
    if (this.#timers.has(jobId) || this.#inFlight.has(jobId)) return;
    // No time yet: the callback was written with the job's final status and was never attempted.
    if (callback.nextAttemptAt === undefined) {
      this.#setTimer(jobId, callback.attempts.length === 0 ? this.#firstDelayMs : 0);
      return;
    }
    const at = Date.parse(callback.nextAttemptAt);
    this.#setTimer(jobId, Number.isFinite(at) ? Math.max(0, at - this.#now().getTime()) : 0);
  }

  #setTimer(jobId: string, delayMs: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timers.get(jobId));
    const timer = setTimeout(() => {
      this.#timers.delete(jobId);
      this.#run(jobId);
    }, delayMs);
    // Pending callbacks are durable, so they must not be what keeps a stopping process alive.
    timer.unref();
    this.#timers.set(jobId, timer);
  }

  #run(jobId: string): void {
    const attempt = this.#attempt(jobId)
      .catch((err: unknown) => {
        // Typically the store failing to record the attempt; the callback stays pending for the next start().
        this.#log.error({ jobId, err: errorMessage(err) }, "callback attempt could not be completed");
        return null;
      })
      .then((retryInMs) => {
        // Cleared before the retry is scheduled, so the retry's timer can never find this attempt still running.
        this.#inFlight.delete(jobId);
        if (retryInMs !== null) this.#setTimer(jobId, retryInMs);
      });
    this.#inFlight.set(jobId, attempt);
  }

  /** One attempt, recorded on the job; returns the delay before the next one, or null if there is none. */
  async #attempt(jobId: string): Promise<number | null> {
    const job = await this.#store.get(jobId);
    const callback = job?.callback;
    const url = job?.request.callbackUrl;
    if (!job || !callback || callback.state !== "pending" || !url || !isFinal(job)) {
      this.#log.debug({ jobId }, "callback dropped: the job or its pending callback is gone");
      return null;
    }

    const outcome = this.#unrecorded.get(jobId) ?? (await this.#sendAttempt(job, callback, url));
    if (outcome === null) return null;
    const { attempt, state, nextAttemptAt } = outcome;
    const index = callback.attempts.length;
    this.#unrecorded.set(jobId, outcome);
    const updated = await this.#store.update(jobId, (current) => {
      if (!current.callback) return current;
      const next: CallbackState = {
        webhookId: current.callback.webhookId,
        state,
        attempts: [...current.callback.attempts, attempt],
      };
      if (nextAttemptAt !== undefined) next.nextAttemptAt = nextAttemptAt;
      return { ...current, callback: next };
    });
    this.#unrecorded.delete(jobId);
    if (!updated) {
      this.#log.debug({ jobId }, "callback dropped: the job was removed during the attempt");
      return null;
    }
    const delayMs = nextAttemptAt === undefined ? null : Math.max(0, Date.parse(nextAttemptAt) - this.#now().getTime());

    this.#onAttempt(state);
    const fields = {
      jobId,
      webhookId: callback.webhookId,
      attempt: index + 1,
      status: attempt.status,
      latencyMs: attempt.latencyMs,
      ...(attempt.error === undefined ? {} : { err: attempt.error }),
    };
    if (state === "delivered") this.#log.info(fields, "callback delivered");
    else if (state === "gone") this.#log.warn(fields, "callback abandoned: the receiver is gone or refused by the outbound policy");
    else if (state === "failed") this.#log.warn(fields, "callback abandoned: retry schedule exhausted");
    else this.#log.info({ ...fields, retryInMs: delayMs }, "callback attempt failed; will retry");
    return delayMs;
  }

  /** Sends the callback once; what came of it, or null when the process is stopping and cut it off. */
  async #sendAttempt(job: JobRecord & { status: FinalStatus }, callback: CallbackState, url: string): Promise<Outcome | null> {
    const sentAt = this.#now();
    const body = JSON.stringify(callbackPayload(job, this.#publicUrl, sentAt));
    const headers = {
      "content-type": "application/json",
      "user-agent": USER_AGENT,
      ...signWebhook({ id: callback.webhookId, timestamp: sentAt, body, secrets: this.#secrets }),
    };
    const result = await this.#send(url, headers, body);
    if (result.status === null && this.#cutOff.signal.aborted) return null;

    const outcome = classifyDeliveryResponse(result.status, result.error);
    const delayMs = outcome === "retry" ? nextAttemptDelay(callback.attempts.length, this.#schedule, { retryAfterSeconds: result.retryAfterSeconds, random: this.#random }) : null;
    return {
      attempt: {
        at: sentAt.toISOString(),
        status: result.status,
        latencyMs: result.latencyMs,
        // safeFetch's messages name the host only, never the URL's path or query or any header.
        ...(result.error === undefined ? {} : { error: errorMessage(result.error) }),
      },
      state: outcome === "retry" ? (delayMs === null ? "failed" : "pending") : outcome,
      nextAttemptAt: delayMs === null ? undefined : new Date(this.#now().getTime() + delayMs).toISOString(),
    };
  }

  async #send(url: string, headers: Record<string, string>, body: string): Promise<SendResult> {
    const started = performance.now();
    let res: Response;
    try {
      // No redirects: a receiver that moved must be reconfigured, and a redirect must not carry a
      // signed body elsewhere. safeFetch reports one as upstream_failed, which is retried.
      res = await safeFetch(url, { method: "POST", headers, body, timeoutMs: this.#timeoutMs, maxRedirects: 0, signal: this.#cutOff.signal }, this.#policy);
    } catch (error) {
      // A redirect is an answer: its status goes in the attempt's record beside the refusal.
      const status = isDomainError(error) && typeof error.details?.status === "number" ? error.details.status : null;
      return { status, latencyMs: elapsedSince(started), error };
    }
    const latencyMs = elapsedSince(started);
    const retryAfterSeconds = parseRetryAfter(res.headers.get("retry-after"), this.#now().getTime());
    await discardBody(res);
    return { status: res.status, latencyMs, ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }) };
  }
}

/** Reads a little of the body and cancels the rest, so the connection ends instead of idling. */
async function discardBody(res: Response): Promise<void> {
  if (!res.body) return;
  const reader = res.body.getReader();
  let received = 0;
  try {
    while (received < MAX_DRAINED_BYTES) {
      const { done, value } = await reader.read();
      if (done) return;
      received += value.byteLength;
    }
  } catch {
    // The status already decided the outcome; a body that breaks off changes nothing.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

function elapsedSince(started: number): number {
  return Math.round(performance.now() - started);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
