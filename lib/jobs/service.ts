import { createHash, randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import type { VadMode } from "../audio/speech-regions.ts";
import type { ModelCatalog } from "../engine/models.ts";
import type { ModelInfo, ModelSpec } from "../engine/protocol.ts";
import { DomainError } from "../errors.ts";
import { assertOutboundAllowed, type OutboundPolicy } from "../net/outbound-policy.ts";
import type { InputBlobs } from "./blobs.ts";
import type { JobInput, JobRecord, JobRequest, JobStore } from "./ports.ts";
import type { JobRunner } from "./runner.ts";
import { assertLanguage, assertTranslates, assertTunable, assertWordTiming } from "../transcription-service.ts";

/** What a client asks for, once its body has been read: a URL, or an upload spooled to a scratch file. */
export interface JobSubmission {
  request: Omit<JobRequest, "origin">;
  /** `sha256`: the upload's hash, when readBody was asked for it. */
  source: { kind: "url"; url: string } | { kind: "upload"; path: string; filename: string; bytes: number; sha256: string | null };
}

export interface SubmitOptions {
  idempotencyKey?: string;
  /** The origin the client reached us at, for callback links when PUBLIC_URL is not set. */
  origin: string;
  /**
   * Reads the request body (spooling an upload to a scratch file the service then owns). Called only
   * once the job is admitted or its key found, so a full queue costs no upload. `hashUpload`: the
   * upload's SHA-256 is wanted (a submission with an idempotency key is compared by it).
   */
  readBody(options: { hashUpload: boolean }): Promise<JobSubmission>;
}

export interface JobServiceDeps {
  store: Pick<JobStore, "findByIdempotencyKey">;
  blobs: InputBlobs;
  runner: Pick<JobRunner, "assertRoom" | "submit" | "replayed" | "cancel">;
  catalog: Pick<ModelCatalog, "resolve" | "timestamped">;
  policy: OutboundPolicy;
  webhookSecrets: Buffer[];
  publicUrl?: string;
  /** The speech detection the jobs run with: only Silero's takes a job's chunking_strategy. */
  vad: VadMode;
  /** What this instance knows of a model it has loaded: a job asking what it cannot do is refused at submission. */
  loadedModel?: (model: ModelSpec) => Pick<ModelInfo, "wordTimestamps" | "multilingual"> | undefined;
}

/** Accepting and canceling jobs: everything between an HTTP request and the job runner. */
export class JobService {
  constructor(private readonly deps: JobServiceDeps) {}

  /**
   * Admission first (the key's replay, then room in the queue), then the body, then the checks that
   * need it; the upload is stored only for a job that will be created. A replay reads the body too,
   * to refuse a key reused for another request rather than answer it with the first one's job.
   */
  async submit({ idempotencyKey, origin, readBody }: SubmitOptions): Promise<{ job: JobRecord; created: boolean }> {
    if (idempotencyKey !== undefined && !/^[\x21-\x7e]{1,255}$/.test(idempotencyKey)) {
      throw new DomainError("invalid_request", "Idempotency-Key must be 1 to 255 ASCII characters other than spaces and control characters.", {
        details: { param: "Idempotency-Key" },
      });
    }
    if (idempotencyKey !== undefined) {
      const existing = await this.deps.store.findByIdempotencyKey(idempotencyKey);
      if (existing) {
        const submission = await readBody({ hashUpload: true });
        if (submission.source.kind === "upload") await rm(submission.source.path, { force: true });
        return { job: await this.deps.runner.replayed(sameRequest(existing, requestDigest(submission))), created: false };
      }
    }
    await this.deps.runner.assertRoom();

    const submission = await readBody({ hashUpload: idempotencyKey !== undefined });
    const { request, source } = submission;
    const digest = idempotencyKey === undefined ? undefined : requestDigest(submission);
    const id = `job_${randomUUID().replaceAll("-", "")}`;
    let input: JobInput;
    let model: string;
    try {
      model = await this.check(request, source);
      input = source.kind === "url" ? source : await this.deps.blobs.save(id, source.path, { filename: source.filename, bytes: source.bytes });
    } finally {
      if (source.kind === "upload") await rm(source.path, { force: true });
    }

    const record: JobRecord = {
      id,
      status: "queued",
      // The model as resolved, so the job shows the model that runs it, not the "whisper-1" alias.
      request: { ...request, model, ...(this.deps.publicUrl ? {} : { origin }) },
      input,
      idempotencyKey,
      ...(digest !== undefined ? { requestDigest: digest } : {}),
      createdAt: new Date().toISOString(),
      runs: 0,
      progress: { doneSeconds: 0, totalSeconds: null },
    };
    let submitted;
    try {
      submitted = await this.deps.runner.submit(record);
    } catch (err) {
      if (input.kind !== "url") await this.deps.blobs.remove(input);
      throw err;
    }
    // A concurrent submission with the same key won: this one's upload is not needed.
    if (!submitted.created && input.kind !== "url") await this.deps.blobs.remove(input);
    return submitted.created ? submitted : { job: sameRequest(submitted.job, digest), created: false };
  }

  cancel(id: string): Promise<JobRecord | null> {
    return this.deps.runner.cancel(id);
  }

  /** Refuses what cannot become a job; returns the model as resolved. */
  private async check(request: JobSubmission["request"], source: JobSubmission["source"]): Promise<string> {
    const model = this.deps.catalog.resolve(request.model);
    assertTunable(this.deps.vad, request.speechDetection);
    // A model not loaded here is checked when the job runs (its load may be a download, or another instance's).
    const info = this.deps.loadedModel?.(model);
    // A model without cross-attention outputs times words by its timestamped export, when there is one (TranscriptionService).
    if (info && request.wordTimestamps && !this.deps.catalog.timestamped(model)) assertWordTiming(model, info);
    if (info && request.task === "translate") assertTranslates(model, info);
    if (info) assertLanguage(model, info, request.language);
    if (source.kind === "upload" && source.bytes === 0) {
      throw new DomainError("unprocessable_audio", "The uploaded file is empty.", { details: { param: "file" } });
    }
    if (request.callbackUrl) {
      if (!this.deps.webhookSecrets.length) {
        throw new DomainError("invalid_request", "callback_url needs the server to have WEBHOOK_SECRET configured to sign callbacks.", { details: { param: "callback_url" } });
      }
      await assertOutboundAllowed(request.callbackUrl, this.deps.policy, { param: "callback_url" });
    }
    if (source.kind === "url") await assertOutboundAllowed(source.url, this.deps.policy, { param: "url" });
    return model.name;
  }
}

/**
 * What makes two submissions the same request: every parameter as parsed (defaults applied), and the
 * audio by its bytes or its URL. Not the upload's file name or the multipart framing, which a
 * client's retry may change.
 */
function requestDigest({ request, source }: JobSubmission): string {
  if (source.kind === "upload" && source.sha256 === null) throw new DomainError("internal", "an upload to digest was read without its hash");
  const audio = source.kind === "url" ? { url: source.url } : { sha256: source.sha256 };
  return `sha256:${createHash("sha256").update(canonicalJson({ request, audio })).digest("hex")}`;
}

/** JSON with object keys sorted at every level, so that metadata sent in another key order digests the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The job an Idempotency-Key refers to, if this submission is the request it was created for. A job
 * created before requests were digested has nothing to compare with and is replayed.
 */
function sameRequest(job: JobRecord, digest: string | undefined): JobRecord {
  if (job.requestDigest === undefined || job.requestDigest === digest) return job;
  throw new DomainError(
    "idempotency_key_reused",
    `This Idempotency-Key was used for another request (job ${job.id}): a retry must send the same file and parameters; use a new key for a new request.`,
    { details: { param: "Idempotency-Key", job_id: job.id } },
  );
}
