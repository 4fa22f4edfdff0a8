import type { Counter, Histogram, Registry } from "prom-client";
import type { LeaseStore } from "../lib/admission/ports.ts";
import type { ApiKeys } from "../lib/auth.ts";
import type { MachineResources } from "../lib/capacity/machine.ts";
import type { handleCallbackFailure, QStashSignatures } from "../lib/cluster/qstash.ts";
import type { WorkerForwarder } from "../lib/cluster/worker-forwarder.ts";
import type { Config } from "../lib/config.ts";
import type { ModelCatalog } from "../lib/engine/models.ts";
import type { JobStore } from "../lib/jobs/ports.ts";
import type { JobRunner } from "../lib/jobs/runner.ts";
import type { JobService } from "../lib/jobs/service.ts";
import type { Logger } from "../lib/log.ts";
import type { OutboundPolicy } from "../lib/net/outbound-policy.ts";
import type { TranscriberStatus } from "../lib/services.ts";
import type { TranscriptionService } from "../lib/transcription-service.ts";

/**
 * What the HTTP layer uses of the core, each part only as wide as the handlers use it, so an
 * in-process test (functions/app.test.ts) hands createApp small fakes. lib/services.ts builds the
 * real ones; its Services fits this shape as it is.
 */
export interface HttpDeps {
  config: Pick<Config, "ROLE" | "MAX_UPLOAD_BYTES" | "PUBLIC_URL" | "MAX_DOWNLOAD_BYTES" | "DOWNLOAD_TIMEOUT" | "CORS_ORIGINS">;
  log: Pick<Logger, "info" | "warn" | "error">;
  metrics: {
    httpDuration: Pick<Histogram<"method" | "route" | "status" | "error">, "observe">;
    errors: Pick<Counter<"code">, "inc">;
    registry: Pick<Registry, "metrics" | "contentType">;
  };
  apiKeys: Pick<ApiKeys, "required" | "accepts">;
  instanceId: string;
  machine: MachineResources;
  /** Null on an api instance, which forwards the endpoints that need it (workerForwarder). */
  transcriber: HttpTranscriber | null;
  workerForwarder: Pick<WorkerForwarder, "forward"> | null;
  catalog: Pick<ModelCatalog, "list">;
  leases: Pick<LeaseStore, "kind" | "snapshot">;
  /** Where uploads are spooled for the length of their request. */
  tempDir: string;
  jobs: Pick<JobStore, "get" | "list">;
  jobService: Pick<JobService, "submit" | "cancel">;
  policy: OutboundPolicy;
  /** Set in cluster mode only; the /internal/qstash/ routes exist only then. */
  qstash: QStashDeps | null;
  baseUrl(requestOrigin: string): string;
  /** Read on every request: it turns true when shutdown begins. */
  readonly draining: boolean;
  /** Aborted when the shutdown's grace period is over: a request still arriving is answered 503. */
  readonly interrupted: AbortSignal;
}

export interface HttpTranscriber {
  status(): TranscriberStatus;
  batch(): Promise<{ rows: number; largest: number } | null>;
  transcription: Pick<TranscriptionService, "assertRoom" | "transcribeFile" | "extract">;
}

export interface QStashDeps {
  receiver: Pick<QStashSignatures, "signedByUs" | "claimsUpstash" | "verify">;
  /** QStash signs this URL into each message, so deliveries are verified against it. */
  deliveryUrl: string;
  runner: Pick<JobRunner, "handleDelivery" | "redeliver">;
  /** PUBLIC_URL: QStash reports the run messages it gave up on there, signed for it. */
  publicUrl: string;
  jobs: Parameters<typeof handleCallbackFailure>[0];
  /** Cancels a QStash message waiting for its next attempt (a callback its receiver said is gone). */
  cancelMessage(messageId: string): Promise<void>;
  /** Counts a callback attempt QStash reported, by the state it left the callback in. */
  onCallbackAttempt(state: string): void;
}

/** For handlers an api instance never reaches: it forwards their requests to a worker before they run. */
export function transcriberOf(deps: Pick<HttpDeps, "transcriber" | "config">): HttpTranscriber {
  if (!deps.transcriber) throw new Error(`this instance (ROLE=${deps.config.ROLE}) does not transcribe`);
  return deps.transcriber;
}
