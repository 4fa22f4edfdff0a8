import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import type { ModelCatalog } from "../engine/models.ts";
import { DomainError } from "../errors.ts";
import { assertOutboundAllowed, type OutboundPolicy } from "../net/outbound-policy.ts";
import type { InputBlobs } from "./blobs.ts";
import type { JobInput, JobRecord, JobRequest, JobStore } from "./ports.ts";
import type { JobRunner } from "./runner.ts";

/** What a client asks for, once its body has been read: a URL, or an upload spooled to a scratch file. */
export interface JobSubmission {
  request: Omit<JobRequest, "origin">;
  source: { kind: "url"; url: string } | { kind: "upload"; path: string; filename: string; bytes: number };
}

export interface SubmitOptions {
  idempotencyKey?: string;
  /** The origin the client reached us at, for callback links when PUBLIC_URL is not set. */
  origin: string;
  /**
   * Reads the request body (spooling an upload to a scratch file the service then owns). Called only
   * once the job is admitted, so a replay or a full queue costs no upload.
   */
  readBody(): Promise<JobSubmission>;
}

export interface JobServiceDeps {
  store: Pick<JobStore, "findByIdempotencyKey">;
  blobs: InputBlobs;
  runner: Pick<JobRunner, "assertRoom" | "submit" | "cancel">;
  catalog: Pick<ModelCatalog, "resolve">;
  policy: OutboundPolicy;
  webhookSecrets: Buffer[];
  publicUrl?: string;
}

/** Accepting and canceling jobs: everything between an HTTP request and the job runner. */
export class JobService {
  constructor(private readonly deps: JobServiceDeps) {}

  /**
   * Admission first (the key's replay, then room in the queue), then the body, then the checks that
   * need it; the upload is stored only for a job that will be created.
   */
  async submit({ idempotencyKey, origin, readBody }: SubmitOptions): Promise<{ job: JobRecord; created: boolean }> {
    if (idempotencyKey !== undefined && !/^[\x21-\x7e]{1,255}$/.test(idempotencyKey)) {
      throw new DomainError("invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters.");
    }
    if (idempotencyKey !== undefined) {
      const existing = await this.deps.store.findByIdempotencyKey(idempotencyKey);
      if (existing) return { job: existing, created: false };
    }
    await this.deps.runner.assertRoom();

    const { request, source } = await readBody();
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
    return submitted;
  }

  cancel(id: string): Promise<JobRecord | null> {
    return this.deps.runner.cancel(id);
  }

  /** Refuses what cannot become a job; returns the model as resolved. */
  private async check(request: JobSubmission["request"], source: JobSubmission["source"]): Promise<string> {
    const model = this.deps.catalog.resolve(request.model).name;
    if (request.callbackUrl) {
      if (!this.deps.webhookSecrets.length) {
        throw new DomainError("invalid_request", "callback_url needs the server to have WEBHOOK_SECRET configured to sign callbacks.", { details: { param: "callback_url" } });
      }
      await assertOutboundAllowed(request.callbackUrl, this.deps.policy);
    }
    if (source.kind === "url") await assertOutboundAllowed(source.url, this.deps.policy);
    return model;
  }
}
