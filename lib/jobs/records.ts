import { DomainError } from "../errors.ts";
import { newWebhookId } from "../webhooks/standard-webhooks.ts";
import { isFinal, JOB_STATUSES, type CallbackState, type JobRecord, type JobStatus, type JobStore } from "./ports.ts";

/** Job ids become file names and Redis key parts: no separators, no dots, bounded. */
export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export type Position = Pick<JobRecord, "createdAt" | "id">;

/** Sort order of list(); ties in createdAt are broken by id so pages never overlap or skip. */
export function newestFirst(a: Position, b: Position): number {
  return Date.parse(b.createdAt) - Date.parse(a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

export function oldestFirst(a: Position, b: Position): number {
  return newestFirst(b, a);
}

/**
 * A job back in the line (its run handed back, retried or lost with its process): nothing of that
 * run stays in its view, where a client polling it would see it queued with the old run's start and
 * progress, and the progress go back once it runs again. The length of its audio, once known, stays.
 */
export function backInQueue(job: JobRecord, queuedAt?: string): JobRecord {
  const { startedAt: _, ...rest } = job;
  return { ...rest, status: "queued", ...(queuedAt === undefined ? {} : { queuedAt }), progress: { doneSeconds: 0, totalSeconds: job.progress.totalSeconds } };
}

/** One cursor format for every store, so a cursor means the same whichever store made it. */
export function encodeCursor(job: Position): string {
  return Buffer.from(JSON.stringify([job.createdAt, job.id])).toString("base64url");
}

export function decodeCursor(cursor: string): Position {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (Array.isArray(value) && value.length === 2 && isTimestamp(value[0]) && typeof value[1] === "string") {
      return { createdAt: value[0] as string, id: value[1] };
    }
  } catch {
    // Falls through to the same error as a well-formed but meaningless cursor.
  }
  throw new DomainError("invalid_request", "cursor is not one this service returned", { details: { param: "cursor" } });
}

/**
 * The fields the stores and their callers rely on to sort, index and resume jobs; null when they
 * are sound. Deliberately shallow: results and requests are the service's business. Both stores
 * apply it on write and on read, so neither accepts a job the other would refuse.
 */
export function jobProblem(value: unknown): string | null {
  if (!isObject(value)) return "not an object";
  if (typeof value.id !== "string" || !JOB_ID_PATTERN.test(value.id)) return "id is not a safe file name";
  if (!JOB_STATUSES.includes(value.status as JobStatus)) return "unknown status";
  if (!isTimestamp(value.createdAt)) return "createdAt is not a timestamp";
  if (value.expiresAt !== undefined && !isTimestamp(value.expiresAt)) return "expiresAt is not a timestamp";
  if (value.idempotencyKey !== undefined && typeof value.idempotencyKey !== "string") return "idempotencyKey is not a string";
  if (value.requestDigest !== undefined && typeof value.requestDigest !== "string") return "requestDigest is not a string";
  if (value.submission !== undefined && value.submission !== "dispatching" && value.submission !== "refused") return "submission is malformed";
  if (!isObject(value.request)) return "request is missing";
  const input = value.input;
  if (!isObject(input)) return "input is missing";
  const wellFormed =
    input.kind === "upload" ? typeof input.path === "string" : input.kind === "blob" ? typeof input.key === "string" : input.kind === "url" && typeof input.url === "string";
  if (!wellFormed) return "input is malformed";
  if (typeof value.runs !== "number") return "runs is not a number";
  if (!isObject(value.progress) || typeof value.progress.doneSeconds !== "number") return "progress is malformed";
  if (value.callback !== undefined && !isObject(value.callback)) return "callback is malformed";
  return null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isTimestamp(value: unknown): boolean {
  return typeof value === "string" && Number.isFinite(Date.parse(value));
}

/**
 * What every store does to a job before writing it: refuses one it could not read back, and gives
 * a finished job without an expiry finishedAt (else now) plus the retention.
 */
export function prepareForStorage(job: JobRecord, retentionMs: number): JobRecord {
  const problem = jobProblem(job);
  if (problem !== null) throw new DomainError("internal", `refusing to store an invalid job: ${problem}`);
  if (isFinal(job) && job.expiresAt === undefined) {
    const finishedAt = job.finishedAt === undefined ? Number.NaN : Date.parse(job.finishedAt);
    const base = Number.isFinite(finishedAt) ? finishedAt : Date.now();
    job.expiresAt = new Date(base + retentionMs).toISOString();
  }
  return job;
}

/**
 * When a stored job may be removed: a final job's expiresAt, but never while its callback is still
 * to be delivered (a retry 27 h on would find nothing to send once RESULT_RETENTION had passed);
 * once it settles, at its expiresAt or at once if that has passed. Undefined: kept.
 */
export function removableAt(job: JobRecord): string | undefined {
  return isFinal(job) && job.callback?.state !== "pending" ? job.expiresAt : undefined;
}

/** A callback not yet attempted. Its webhook-id is made here only, and kept by every retry. */
export function newCallback(nextAttemptAt?: Date): CallbackState {
  return { webhookId: newWebhookId(), state: "pending", attempts: [], ...(nextAttemptAt ? { nextAttemptAt: nextAttemptAt.toISOString() } : {}) };
}

/**
 * The job's callback, stored first when it has none, so a second sender, here or on another
 * instance, finds the same webhook-id instead of making its own.
 */
export async function storedCallback(store: JobStore, job: JobRecord, nextAttemptAt?: Date): Promise<CallbackState | undefined> {
  if (job.callback) return job.callback;
  const updated = await store.update(job.id, (current) => (current.callback ? current : { ...current, callback: newCallback(nextAttemptAt) }));
  return updated?.callback;
}
