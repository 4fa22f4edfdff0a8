import type { ResponseFormat, Transcript } from "../transcript.ts";
import type { SpeechDetection } from "../audio/speech-regions.ts";

export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINAL_STATUSES = ["succeeded", "failed", "canceled"] as const satisfies readonly JobStatus[];
export type FinalStatus = (typeof FINAL_STATUSES)[number];
export const CALLBACK_STATES = ["pending", "delivered", "failed", "gone"] as const;

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
  temperature?: number;
  /** chunking_strategy's server_vad settings. */
  speechDetection?: SpeechDetection;
  /** include[]=logprobs: the result carries each text token's log-probability. */
  includeLogprobs?: boolean;
  /** timestamp_granularities word: the result carries each word's times (a _timestamped model's decoder). */
  wordTimestamps?: boolean;
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
  state: (typeof CALLBACK_STATES)[number];
  attempts: DeliveryAttempt[];
  nextAttemptAt?: string;
}

export interface JobRecord {
  id: string;
  status: JobStatus;
  request: JobRequest;
  input: JobInput;
  idempotencyKey?: string;
  /** requestDigest() of the submission, with an idempotency key: a retry must match it. */
  requestDigest?: string;
  createdAt: string;
  /**
   * Where its submission stands until its first message is out: "dispatching" from its creation,
   * "refused" when that message could not be sent and the job is being removed (its client is told
   * 503). Absent once the message is out, as on jobs stored before it was kept.
   */
  submission?: "dispatching" | "refused";
  /**
   * When it last went into the line: submitted, or back after a hand-back, a retry or a full disk.
   * How long it may wait for room counts from here, and its messages from here on are new ones.
   * Absent on jobs stored before it was kept: createdAt stands for it.
   */
  queuedAt?: string;
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

export type FinalJob = JobRecord & { status: FinalStatus };

/** Whether the job is done for good: succeeded, failed or canceled. Only a final job sends a callback. */
export function isFinal<T extends Pick<JobRecord, "status">>(job: T): job is T & { status: FinalStatus } {
  return (FINAL_STATUSES as readonly JobStatus[]).includes(job.status);
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
  /** Jobs in `status`, without reading them. */
  count(status: JobStatus): Promise<number>;
  /** Jobs that were queued or running when the process stopped, oldest first. */
  unfinished(): Promise<JobRecord[]>;
  /** Jobs with a callback still to deliver. */
  pendingCallbacks(): Promise<JobRecord[]>;
  /** Removes finished jobs past their expiry; returns how many. */
  sweep(now: Date): Promise<number>;
  close(): Promise<void>;
}

/** When the job last went into the line (JobRecord.queuedAt, else its createdAt). */
export function queuedSince(job: Pick<JobRecord, "createdAt" | "queuedAt">): string {
  return job.queuedAt ?? job.createdAt;
}

/**
 * Why a job is handed to the dispatcher. Each reason names one kind of message, so no two that are
 * meant to be different share a deduplication id, and a repeat of one that was sent is dropped.
 */
export type DispatchReason = "submitted" | "deferred" | "retried" | "handed-back" | "redelivered";

export interface Dispatch {
  jobId: string;
  reason: DispatchReason;
  /** The job's runs so far: a retry or hand-back of a later run is a new message. */
  runs: number;
  /**
   * When the job last went into the line (queuedSince): a hand-back gives its run back, so runs
   * alone named a deferral after it as the one before the run, which QStash then dropped as a repeat
   * and the job stayed queued with no message behind it.
   */
  queuedAt: string;
  /** Deliveries of the job since it last became queued, from 1; each deferral counts one up. */
  attempt: number;
  delaySeconds?: number;
}

export function deduplicationId(dispatch: Dispatch): string {
  return `${dispatch.jobId}:${dispatch.reason}:${Date.parse(dispatch.queuedAt)}:${dispatch.runs}:${dispatch.attempt}`;
}

export type DeliveryOutcome = "ran" | "deferred" | "skipped";

/** Takes a delivered job: runs it, defers it for lack of room, or skips it (finished, gone, already running here). */
export type Deliver = (jobId: string, attempt: number) => Promise<DeliveryOutcome>;

/**
 * Carries queued jobs to an instance that runs them: this instance's own line (embedded), or
 * QStash, which delivers to whichever instance answers the run URL (cluster).
 */
export interface JobDispatcher {
  /**
   * How a delivered job gets its transcription place: "patient" waits in this instance's admission
   * queue (the dispatcher delivers no more than the runner runs at once); "now" takes a place only
   * if one is free and otherwise defers, so no instance holds a message it cannot run.
   */
  readonly admission: "patient" | "now";
  /** Jobs waiting in this instance's own line; 0 where the queue lives elsewhere. */
  readonly waiting: number;
  dispatch(dispatch: Dispatch): Promise<void>;
  /** Begins delivering to `deliver`; where jobs outlive the process, picks up what a previous one left. */
  start(deliver: Deliver): Promise<void>;
  /** Delivers nothing more; a dispatch after this is left for the next start. */
  stop(): void;
}
