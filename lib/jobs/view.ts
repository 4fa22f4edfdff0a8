import { verboseTranscript } from "../formats.ts";
import type { CallbackState, JobRecord } from "./ports.ts";

/** A job as clients see it: snake_case like the rest of the OpenAI-style API, with links. */
export interface JobView {
  id: string;
  object: "transcription.job";
  status: JobRecord["status"];
  model: string;
  task: "transcribe" | "translate";
  language: string | null;
  response_format: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  expires_at: string | null;
  progress: { done_seconds: number; total_seconds: number | null };
  error: { code: string; message: string } | null;
  metadata: Record<string, unknown> | null;
  callback: {
    url: string;
    state: CallbackState["state"];
    webhook_id: string | null;
    attempts: { at: string; status: number | null; latency_ms: number; error?: string }[];
    /** When a pending delivery is tried next, where this instance schedules it (QStash schedules its own). */
    next_attempt_at: string | null;
  } | null;
  links: { self: string; result: string };
  /** The transcript as verbose_json spells it. */
  result: ReturnType<typeof verboseTranscript> | null;
}

export function toJobView(job: JobRecord, baseUrl: string, { withResult = true } = {}): JobView {
  const self = `${baseUrl}/v1/jobs/${job.id}`;
  return {
    id: job.id,
    object: "transcription.job",
    status: job.status,
    model: job.request.model,
    task: job.request.task,
    language: job.request.language ?? null,
    response_format: job.request.responseFormat,
    created_at: job.createdAt,
    started_at: job.startedAt ?? null,
    finished_at: job.finishedAt ?? null,
    expires_at: job.expiresAt ?? null,
    progress: { done_seconds: job.progress.doneSeconds, total_seconds: job.progress.totalSeconds },
    error: job.error ?? null,
    metadata: job.request.metadata ?? null,
    callback: job.request.callbackUrl
      ? {
          url: job.request.callbackUrl,
          state: job.callback?.state ?? "pending",
          webhook_id: job.callback?.webhookId ?? null,
          attempts: (job.callback?.attempts ?? []).map((a) => ({ at: a.at, status: a.status, latency_ms: a.latencyMs, ...(a.error ? { error: a.error } : {}) })),
          next_attempt_at: job.callback?.state === "pending" ? (job.callback.nextAttemptAt ?? null) : null,
        }
      : null,
    links: { self, result: `${self}/result` },
    result: withResult && job.result ? verboseTranscript(job.result) : null,
  };
}
