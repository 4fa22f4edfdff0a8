import type { ResponseFormat, Transcript } from "../transcript.ts";

export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "canceled"];

/**
 * Where a job's audio is: an upload in this machine's data directory, an upload kept in the shared
 * store (cluster mode, so any instance can run the job), or a URL fetched when the job runs.
 */
export type JobInput =
  | { kind: "upload"; path: string; filename: string; bytes: number }
  | { kind: "blob"; key: string; filename: string; bytes: number }
  | { kind: "url"; url: string };

export interface JobRequest {
  model: string;
  language?: string;
  task: "transcribe" | "translate";
  responseFormat: ResponseFormat;
  prompt?: string;
  callbackUrl?: string;
  /** Full result in the callback body instead of id, status and links. */
  callbackIncludeResult: boolean;
  metadata?: Record<string, unknown>;
  /** The origin the job was submitted to, for its callback's links when PUBLIC_URL is not set. */
  origin?: string;
}

export interface DeliveryAttempt {
  at: string;
  /** HTTP status, or null for a network error or timeout. */
  status: number | null;
  latencyMs: number;
  error?: string;
}

export interface CallbackState {
  /** Stable across retries, as Standard Webhooks requires. */
  webhookId: string;
  state: "pending" | "delivered" | "failed" | "gone";
  attempts: DeliveryAttempt[];
  nextAttemptAt?: string;
}

export interface JobRecord {
  id: string;
  status: JobStatus;
  request: JobRequest;
  input: JobInput;
  idempotencyKey?: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  /** Times the job was started; above 1 after a crash or a handed-back job. */
  runs: number;
  progress: { doneSeconds: number; totalSeconds: number | null };
  error?: { code: string; message: string };
  result?: Transcript;
  callback?: CallbackState;
  expiresAt?: string;
}

export interface JobPage {
  jobs: JobRecord[];
  nextCursor: string | null;
}

export interface JobStore {
  readonly kind: "embedded" | "upstash";
  /** Creates the job, or returns the existing one for a repeated idempotency key. */
  create(job: JobRecord): Promise<{ job: JobRecord; created: boolean }>;
  get(id: string): Promise<JobRecord | null>;
  /** The job created with this idempotency key, if any: a replay is answered before its body is read. */
  findByIdempotencyKey(key: string): Promise<JobRecord | null>;
  /** Applies a change atomically with respect to other updates of the same job; null if absent. */
  update(id: string, change: (job: JobRecord) => JobRecord): Promise<JobRecord | null>;
  list(filter: { status?: JobStatus; limit: number; cursor?: string }): Promise<JobPage>;
  /** Jobs that were queued or running when the process stopped, oldest first. */
  unfinished(): Promise<JobRecord[]>;
  /** Jobs with a callback still to deliver. */
  pendingCallbacks(): Promise<JobRecord[]>;
  /** Removes finished jobs past their expiry; returns how many. */
  sweep(now: Date): Promise<number>;
  close(): Promise<void>;
}
