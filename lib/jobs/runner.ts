import { rm } from "node:fs/promises";
import { join } from "node:path";
import { probeDurationSeconds } from "../audio/probe.ts";
import { InferenceError } from "../engine/engine.ts";
import { AppError, isAppError, type ErrorCode } from "../errors.ts";
import type { Logger } from "../log.ts";
import { downloadToFile, type OutboundPolicy } from "../net/safe-fetch.ts";
import type { TranscriptionService } from "../transcription-service.ts";
import type { CallbackSender } from "../webhooks/delivery.ts";
import { inputsDir } from "./embedded-job-store.ts";
import { FINAL_STATUSES, type JobRecord, type JobStore } from "./ports.ts";

/** The job was canceled by its owner; not a failure. */
export class JobCanceled extends Error {
  constructor() {
    super("job canceled");
    this.name = "JobCanceled";
  }
}

/**
 * Whether running the job again could succeed. Bad input stays bad; a model that failed to load,
 * an unreachable slot store, a busy cluster or a crashed inference thread may not.
 */
const FINAL_CODES: readonly ErrorCode[] = ["invalid_request", "forbidden", "not_found", "payload_too_large", "unsupported_media", "unprocessable_audio"];

export function isRetryable(err: unknown): boolean {
  if (err instanceof InferenceError) return true;
  if (isAppError(err)) return !FINAL_CODES.includes(err.code);
  return false;
}

export interface JobRunnerDeps {
  store: JobStore;
  transcription: TranscriptionService;
  callbacks: CallbackSender;
  policy: OutboundPolicy;
  dataDir: string;
  maxDownloadBytes: number;
  downloadTimeoutMs: number;
  /** Jobs running at once; admission still decides when each may decode and infer. */
  concurrency: number;
  /** Jobs waiting beyond this are refused at submission. */
  queueSize: number;
  /** Runs before a retryable failure becomes final. */
  maxRuns?: number;
  log: Logger;
}

/**
 * Runs accepted jobs in submission order on this instance. Every state change is written to the job
 * store before it is acted on, so a restart finds queued jobs queued and running jobs to run again.
 */
export class JobRunner {
  private readonly waiting: string[] = [];
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private stopped = false;

  constructor(private readonly deps: JobRunnerDeps) {}

  get stats(): { queued: number; running: number } {
    return { queued: this.waiting.length, running: this.running.size };
  }

  /** Picks up what a previous process left: queued jobs wait again, running ones run again. */
  async start(): Promise<void> {
    for (const job of await this.deps.store.unfinished()) {
      if (job.status === "running") await this.deps.store.update(job.id, (j) => ({ ...j, status: "queued" }));
      this.waiting.push(job.id);
    }
    this.pump();
  }

  /** Refuses with 429 when the job queue is full; otherwise stores the job and queues it. */
  async submit(job: JobRecord): Promise<{ job: JobRecord; created: boolean }> {
    if (this.waiting.length >= this.deps.queueSize) {
      throw new AppError("rate_limited", `The job queue is full (${this.deps.queueSize} waiting); retry later.`, {
        retryAfterSeconds: this.deps.transcription.retryAfterSeconds(),
      });
    }
    const result = await this.deps.store.create(job);
    if (result.created) {
      this.waiting.push(job.id);
      this.pump();
    }
    return result;
  }

  async cancel(id: string): Promise<JobRecord | null> {
    const job = await this.deps.store.get(id);
    if (!job) return null;
    if (FINAL_STATUSES.includes(job.status)) {
      throw new AppError("conflict", `Job ${id} has already ${job.status === "canceled" ? "been canceled" : job.status}.`);
    }
    const queuedAt = this.waiting.indexOf(id);
    if (queuedAt >= 0) {
      this.waiting.splice(queuedAt, 1);
      const canceled = await this.finish(id, { status: "canceled" });
      return canceled;
    }
    const run = this.running.get(id);
    if (run) {
      run.controller.abort(new JobCanceled());
      await run.done;
    }
    return this.deps.store.get(id);
  }

  /** Stops taking jobs and hands running ones back to the queue, for a graceful shutdown. */
  async stop(): Promise<void> {
    this.stopped = true;
    const runs = [...this.running.values()];
    for (const run of runs) run.controller.abort(new Error("shutting down"));
    await Promise.all(runs.map((r) => r.done));
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.deps.concurrency && this.waiting.length > 0) {
      const id = this.waiting.shift()!;
      const controller = new AbortController();
      const done = this.run(id, controller.signal).finally(() => {
        this.running.delete(id);
        this.pump();
      });
      this.running.set(id, { controller, done });
    }
  }

  private async run(id: string, signal: AbortSignal): Promise<void> {
    const job = await this.deps.store.update(id, (j) => ({ ...j, status: "running", startedAt: new Date().toISOString(), runs: j.runs + 1 }));
    if (!job) return;
    let download: string | null = null;
    try {
      let path: string;
      if (job.input.kind === "upload") {
        path = job.input.path;
      } else {
        download = join(inputsDir(this.deps.dataDir), `${id}.download`);
        await downloadToFile(job.input.url, download, { maxBytes: this.deps.maxDownloadBytes, timeoutMs: this.deps.downloadTimeoutMs, signal }, this.deps.policy);
        path = download;
      }
      const total = await probeDurationSeconds(path);
      await this.deps.store.update(id, (j) => ({ ...j, progress: { doneSeconds: 0, totalSeconds: total } }));
      const result = await this.deps.transcription.transcribeFile(path, {
        id,
        model: job.request.model,
        language: job.request.language,
        task: job.request.task,
        signal,
        patient: true,
        onProgress: (doneSeconds) => {
          this.deps.store.update(id, (j) => ({ ...j, progress: { ...j.progress, doneSeconds } })).catch((e: Error) => this.deps.log.warn({ jobId: id, err: e.message }, "progress not saved"));
        },
      });
      await this.finish(id, { status: "succeeded", result, progress: { doneSeconds: result.duration, totalSeconds: result.duration } });
    } catch (err) {
      await this.settleFailure(id, err, signal);
    } finally {
      if (download) await rm(download, { force: true });
    }
  }

  private async settleFailure(id: string, err: unknown, signal: AbortSignal): Promise<void> {
    if (signal.aborted && signal.reason instanceof JobCanceled) {
      await this.finish(id, { status: "canceled" });
      return;
    }
    if (this.stopped) {
      // Handed back: the next process runs it again.
      await this.deps.store.update(id, (j) => ({ ...j, status: "queued" }));
      return;
    }
    const job = await this.deps.store.get(id);
    if (job && isRetryable(err) && job.runs < (this.deps.maxRuns ?? 3)) {
      this.deps.log.warn({ jobId: id, runs: job.runs, err: (err as Error).message }, "job failed, will run again");
      await this.deps.store.update(id, (j) => ({ ...j, status: "queued" }));
      setTimeout(() => {
        this.waiting.push(id);
        this.pump();
      }, 2000 * job.runs).unref();
      return;
    }
    const error = isAppError(err) && err.code !== "internal" ? { code: err.code, message: err.message } : { code: "internal", message: "The job failed on the server." };
    if (error.code === "internal") this.deps.log.error({ jobId: id, err: (err as Error)?.stack ?? String(err) }, "job failed");
    await this.finish(id, { status: "failed", error });
  }

  private async finish(id: string, change: Partial<JobRecord>): Promise<JobRecord | null> {
    const job = await this.deps.store.update(id, (j) => ({ ...j, ...change, finishedAt: new Date().toISOString() }));
    // The result is what is kept; the uploaded audio is not held a moment longer than needed.
    if (job?.input.kind === "upload") await rm(job.input.path, { force: true });
    if (job?.request.callbackUrl) await this.deps.callbacks.enqueue(id);
    return job;
  }
}
