import { setMaxListeners } from "node:events";
import { rm } from "node:fs/promises";
import { hostname } from "node:os";
import { Limiter } from "./admission/limiter.ts";
import { EmbeddedLeaseStore } from "./admission/embedded-lease-store.ts";
import type { LeaseStore } from "./admission/ports.ts";
import { ApiKeys } from "./auth.ts";
import { detectMachine, formatBytes, type MachineResources } from "./capacity/machine.ts";
import { minimumMemoryBytes, planCapacity, type CapacityPlan } from "./capacity/plan.ts";
import type { Config, Mode } from "./config.ts";
import { DomainError } from "./errors.ts";
import { processLauncher } from "./audio/process-launcher.ts";
import { Engine } from "./engine/engine.ts";
import { ModelCatalog } from "./engine/models.ts";
import { Client as QStashClient } from "@upstash/qstash";
import { Redis } from "@upstash/redis";
import { RedisLeaseStore } from "./admission/redis-lease-store.ts";
import { QStashCallbackSender, QStashJobDispatcher, QStashSignatures } from "./cluster/qstash.ts";
import { WorkerForwarder } from "./cluster/worker-forwarder.ts";
import { FileBlobs, RedisBlobs, removeUnclaimed, type InputBlobs } from "./jobs/blobs.ts";
import { UpstashJobStore } from "./jobs/upstash-job-store.ts";
import { EmbeddedJobStore, inputsDir } from "./jobs/embedded-job-store.ts";
import type { JobDispatcher, JobStore } from "./jobs/ports.ts";
import { EmbeddedJobDispatcher } from "./jobs/embedded-dispatcher.ts";
import { JobRunner } from "./jobs/runner.ts";
import { JobService } from "./jobs/service.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import type { OutboundPolicy } from "./net/outbound-policy.ts";
import { TranscriptionService } from "./transcription-service.ts";
import { EmbeddedCallbackSender, type CallbackSender } from "./webhooks/delivery.ts";
import { openScratch } from "./scratch.ts";

/**
 * What an instance that transcribes (ROLE all or worker) has: the slot plan, the inference thread
 * and the limits on it. An api instance has none of it, so it loads no model and holds no slot.
 */
export interface Transcriber {
  plan: CapacityPlan;
  engine: Engine;
  /** Bounds transcriptions in progress (decoding streams open) and the request queue before 429. */
  admission: Limiter;
  /** Bounds windows in inference at once: the instance's slots. */
  compute: Limiter;
  transcription: TranscriptionService;
  /** What readiness and capacity report, read in one place so handlers need not know the parts. */
  status(): TranscriberStatus;
  /** The engine's decoding batch right now; null when the inference thread does not answer within a second. */
  batch(): Promise<{ rows: number; largest: number } | null>;
}

export interface TranscriberStatus {
  /** Every model asked for since start; `preloaded` ones (PRELOAD_MODELS, else DEFAULT_MODEL) are what readiness waits for. */
  models: { id: string; dtype: string; state: "loading" | "ready" | "failed"; preloaded: boolean; error?: string }[];
  slots: number;
  threads: number;
  limitedBy: string;
  /** Windows in inference and waiting for a slot. */
  windows: { inUse: number; queued: number };
  /** Transcriptions in progress and waiting in the admission line, of at most `queueSize`. */
  /** `waitingForLease`: of the active ones, those waiting for a cluster lease (the cluster at its cap). */
  transcriptions: { limit: number; active: number; queued: number; queueSize: number; waitingForLease: number };
  /** Audio seconds transcribed since start, window by window: its rate is the live real-time factor. */
  audioSeconds: number;
}

/** Everything a request handler may use. Built once at start-up and handed to the HTTP layer. */
export interface Services {
  config: Config;
  log: Logger;
  instanceId: string;
  machine: MachineResources;
  /** Null on an api instance. */
  transcriber: Transcriber | null;
  /** Set on an api instance: the synchronous audio endpoints run on the workers. */
  workerForwarder: WorkerForwarder | null;
  catalog: ModelCatalog;
  /** One lease per running transcription, cluster-wide in cluster mode. */
  leases: LeaseStore;
  metrics: Metrics;
  apiKeys: ApiKeys;
  /**
   * This process's scratch folder under DATA_DIR: uploads are spooled here and removed when their
   * request ends; job media is downloaded here while the job runs.
   */
  tempDir: string;
  jobs: JobStore;
  blobs: InputBlobs;
  runner: JobRunner;
  jobService: JobService;
  callbacks: CallbackSender;
  policy: OutboundPolicy;
  webhookSecrets: Buffer[];
  /** Set in cluster mode: what the endpoints QStash delivers to (/internal/qstash/*) need. */
  qstash: QStashInbox | null;
  /** Base for links in responses: PUBLIC_URL, else the origin the client reached us at. */
  baseUrl(requestOrigin: string): string;
  /** True once shutdown began: /readyz says no, so load balancers stop sending work. */
  draining: boolean;
  /**
   * Stops taking jobs; running ones get `graceMs` to finish, then are handed back. One whose hand-back
   * is not done by `deadline` is left as after a crash, to run again.
   */
  drain(graceMs: number, deadline: AbortSignal): Promise<void>;
  /** After the grace period: synchronous transcriptions still running, and uploads still arriving, end with a 503 (retry elsewhere). */
  interruptRunning(): void;
  readonly interrupted: AbortSignal;
  /**
   * After drain() and the last request: closes the stores, the engine and the leases, and removes
   * the scratch space; callbacks still on the wire, the inference thread and ffmpeg are cut off at `deadline`.
   */
  close(deadline: AbortSignal): Promise<void>;
}

export interface QStashInbox {
  /** Verifies that deliveries come from QStash. */
  receiver: QStashSignatures;
  /**
   * Where QStash delivers to this deployment: QSTASH_DELIVERY_URL, else PUBLIC_URL. QStash signs
   * this URL into each message, so deliveries are verified against it.
   */
  deliveryUrl: string;
  /** PUBLIC_URL: where QStash reports the run messages it gave up on, signed for it. */
  publicUrl: string;
  /** Cancels a QStash message waiting for its next attempt. */
  cancelMessage(messageId: string): Promise<void>;
  runner: JobRunner;
  jobs: JobStore;
  /** Counts a callback attempt QStash reported (the metric the embedded sender counts itself). */
  onCallbackAttempt(state: string): void;
}

export interface ServiceOptions {
  /** Where this server listens, for callback links when PUBLIC_URL is not set. */
  listenUrl: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The ports whose implementation depends on the deployment mode; everything else is one code path.
 * Both modes build the same set.
 */
interface Adapters {
  leases: LeaseStore;
  jobs: JobStore;
  blobs: InputBlobs;
  dispatcher: JobDispatcher;
  callbacks: CallbackSender;
  /** Where QStash delivers, and how its deliveries are verified; null where nothing is delivered. */
  inbox: Pick<QStashInbox, "receiver" | "deliveryUrl" | "publicUrl" | "cancelMessage"> | null;
}

interface AdapterContext {
  config: Config;
  log: Logger;
  instanceId: string;
  publicUrl: string;
  /** Jobs this instance runs at once. */
  concurrency: number;
  onCallbackAttempt: (state: string) => void;
  /** Counts a failed request to Redis or QStash. */
  onStoreError: (store: "redis" | "qstash") => void;
}

async function embeddedAdapters(mode: Extract<Mode, { kind: "embedded" }>, context: AdapterContext): Promise<Adapters> {
  const { config, log, publicUrl } = context;
  const jobs = await EmbeddedJobStore.open({
    dataDir: config.DATA_DIR,
    retentionMs: config.RESULT_RETENTION,
    onWarning: (message, cause) => log.warn({ err: cause instanceof Error ? cause.message : cause }, message),
  });
  const claimed = (await jobs.unfinished()).flatMap((job) => (job.input.kind === "upload" ? [job.input.path] : []));
  const unclaimed = await removeUnclaimed(inputsDir(config.DATA_DIR), claimed);
  if (unclaimed > 0) log.info({ files: unclaimed }, "removed uploads no job claims (the last process stopped between storing one and writing its job)");
  return {
    leases: new EmbeddedLeaseStore({ cap: mode.maxTranscriptions }),
    jobs,
    blobs: new FileBlobs(inputsDir(config.DATA_DIR)),
    // The runner's places and as many fetches (see JobRunnerDeps.concurrency).
    dispatcher: new EmbeddedJobDispatcher({ store: jobs, concurrency: 2 * context.concurrency, log }),
    callbacks: signedCallbacks(
      config,
      log,
      () =>
        new EmbeddedCallbackSender({
          store: jobs,
          secrets: config.WEBHOOK_SECRET,
          schedule: config.WEBHOOK_RETRY_SCHEDULE,
          policy: config.OUTBOUND_ALLOWLIST,
          publicUrl,
          log,
          onAttempt: context.onCallbackAttempt,
        }),
    ),
    inbox: null,
  };
}

async function clusterAdapters(mode: Extract<Mode, { kind: "cluster" }>, context: AdapterContext): Promise<Adapters> {
  const { config, log, publicUrl } = context;
  // Fail fast when Redis is unreachable (a request waiting on the SDK's own retries would hold a
  // place for seconds), and let the stores map errors to 503.
  const redis = new Redis({ url: mode.redis.url, token: mode.redis.token, retry: { retries: 0 }, enableAutoPipelining: false });
  await checkRedisToken(redis, log);
  await checkQStashToken(mode.qstash, log);
  const qstash = new QStashClient({ token: mode.qstash.token, baseUrl: mode.qstash.url });
  // Every failed request to either, whoever sent it, is counted once.
  const redisFailed = () => context.onStoreError("redis");
  const qstashFailed = () => context.onStoreError("qstash");
  const jobs = new UpstashJobStore({ redis, retentionMs: config.RESULT_RETENTION, onFailure: redisFailed });
  const deliveryUrl = mode.qstash.deliveryUrl;
  const leases = new RedisLeaseStore(redis, {
    cap: mode.maxTranscriptions,
    instance: context.instanceId,
    leaseTtlMs: mode.leaseTtlMs,
    heartbeatMs: mode.leaseHeartbeatMs,
    onFailure: redisFailed,
  });
  await warnOfAnotherCap(leases, mode.maxTranscriptions, log);
  return {
    leases,
    jobs,
    // Not RESULT_RETENTION, which is about results: a short one failed jobs still waiting for room.
    blobs: new RedisBlobs(redis, config.JOB_MAX_WAIT + UNFINISHED_UPLOAD_KEEP_MS, { onFailure: redisFailed }),
    dispatcher: new QStashJobDispatcher({ client: qstash, deliveryUrl, failureUrl: publicUrl, onFailure: qstashFailed }),
    callbacks: signedCallbacks(
      config,
      log,
      () => new QStashCallbackSender({ client: qstash, store: jobs, secrets: config.WEBHOOK_SECRET, publicUrl, deliveryUrl, log, onFailure: qstashFailed }),
    ),
    inbox: {
      receiver: new QStashSignatures({ currentSigningKey: mode.qstash.currentSigningKey, nextSigningKey: mode.qstash.nextSigningKey }),
      deliveryUrl,
      publicUrl,
      cancelMessage: async (messageId) => void (await qstash.messages.delete(messageId)),
    },
  };
}

/**
 * An upload is removed when its job ends; one whose job has not ended a week past the longest wait
 * for room is one nothing will end, and its expiry frees Redis of it.
 */
const UNFINISHED_UPLOAD_KEEP_MS = 7 * 86_400_000;

/** CLUSTER_MAX_TRANSCRIPTIONS is each instance's to enforce: instances that disagree are told of at start-up. */
async function warnOfAnotherCap(leases: RedisLeaseStore, cap: number, log: Logger): Promise<void> {
  // Redis that does not answer now was warned of by the token check.
  const previous = await leases.announceCap().catch(() => null);
  if (previous !== null && previous !== cap) {
    log.warn(
      { cap, otherCap: previous },
      `CLUSTER_MAX_TRANSCRIPTIONS is ${cap} here but was ${previous} on the instance that started before this one: set the same value on every instance (each enforces its own, so up to the highest run at once)`,
    );
  }
}

/** How long the start-up checks of the Upstash tokens wait for an answer. */
const TOKEN_CHECK_TIMEOUT_MS = 5_000;

/**
 * A refused token looks like an outage from every request after it (503, "unreachable"): it is told
 * apart once, at start-up, and refuses the start. Redis that does not answer may be back in a
 * moment; the instance starts, and is not ready until it does.
 */
async function checkRedisToken(redis: Redis, log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${TOKEN_CHECK_TIMEOUT_MS} ms`)), TOKEN_CHECK_TIMEOUT_MS)));
  try {
    await Promise.race([redis.ping(), late]);
  } catch (err) {
    const message = (err as Error).message;
    if (/unauthori[sz]ed|\b401\b|WRONGPASS/i.test(message)) {
      throw new Error(`UPSTASH_REDIS_REST_TOKEN was refused by the Upstash Redis at UPSTASH_REDIS_REST_URL (${message}): check the token`);
    }
    log.warn({ err: message }, "Upstash Redis did not answer at start-up: starting anyway, not ready until it does");
  } finally {
    clearTimeout(timer);
  }
}

/** Where the QStash client sends when QSTASH_URL is unset (@upstash/qstash's own default). */
const QSTASH_DEFAULT_URL = "https://qstash.upstash.io";

/**
 * The same for QStash: a refused QSTASH_TOKEN made every job submission a 503 and the instance
 * otherwise ready. Asking for a message that does not exist is answered 404 to a good token and
 * 401 to a bad one, and changes nothing; fetched directly because the SDK prints every non-2xx.
 */
async function checkQStashToken(qstash: { url?: string; token: string }, log: Logger): Promise<void> {
  const base = (qstash.url ?? QSTASH_DEFAULT_URL).replace(/\/+$/, "");
  let status: number;
  try {
    const res = await fetch(`${base}/v2/messages/msg_slotscribe_token_check`, {
      headers: { authorization: `Bearer ${qstash.token}` },
      signal: AbortSignal.timeout(TOKEN_CHECK_TIMEOUT_MS),
    });
    await res.body?.cancel();
    status = res.status;
  } catch (err) {
    log.warn({ err: (err as Error).message }, "QStash did not answer at start-up: starting anyway; jobs are refused with 503 until it does");
    return;
  }
  if (status === 401 || status === 403)
    throw new Error(`QSTASH_TOKEN was refused by QStash at ${qstash.url ? "QSTASH_URL" : QSTASH_DEFAULT_URL} (HTTP ${status}): check the token`);
  if (status >= 500) log.warn({ status }, "QStash answered the start-up check with a server error: starting anyway");
}

/**
 * Without a signing secret no job may ask for a callback (refused at submission), so there is
 * nothing to send; a callback left pending by an earlier configuration waits for a secret.
 */
function signedCallbacks(config: Config, log: Logger, sender: () => CallbackSender): CallbackSender {
  if (config.WEBHOOK_SECRET.length) return sender();
  return {
    enqueue: async (jobId) => log.warn({ jobId }, "callback not sent: WEBHOOK_SECRET is not configured"),
    start: async () => undefined,
    close: async () => undefined,
  };
}

export async function createServices(config: Config, log: Logger, { listenUrl, env = process.env }: ServiceOptions): Promise<Services> {
  const instanceId = config.INSTANCE_ID ?? env.FLY_MACHINE_ID ?? env.RAILWAY_REPLICA_ID ?? `${hostname()}-${process.pid}`;
  const catalog = new ModelCatalog({ defaultModel: config.DEFAULT_MODEL, dtype: config.MODEL_DTYPE, localDir: config.WHISPER_MODELS_DIR, aliases: config.MODEL_ALIASES });
  const machine = detectMachine(env, undefined, { memoryBytes: config.MEMORY_LIMIT, cpus: config.CPUS });
  // An api instance plans no slots and creates no Engine, so no model is loaded and no inference thread started.
  const scratch = await openScratch(config.DATA_DIR);
  if (scratch.swept) log.info({ removed: scratch.swept }, "scratch files of an earlier process removed");
  const tempDir = scratch.dir;
  const planned = config.ROLE === "api" ? null : planTranscriber(config, catalog, machine, tempDir, () => transcriber?.transcription.retryAfterSeconds() ?? 5);

  const { mode } = config;
  const publicUrl = mode.kind === "cluster" ? mode.publicUrl : (config.PUBLIC_URL?.replace(/\/$/, "") ?? listenUrl);
  const context: AdapterContext = {
    config,
    log,
    instanceId,
    publicUrl,
    concurrency: planned?.admission.stats.permits ?? 0,
    // Called only once deliveries run, after metrics exists.
    // A failed attempt leaves the callback pending when another is to come.
    onCallbackAttempt: (state) => metrics.callbackDeliveries.inc({ outcome: state === "pending" ? "retrying" : state }),
    onStoreError: (store) => metrics.storeErrors.inc({ store }),
  };
  const { leases, jobs, blobs, dispatcher, callbacks, inbox } = mode.kind === "cluster" ? await clusterAdapters(mode, context) : await embeddedAdapters(mode, context);

  const metrics: Metrics = new Metrics({
    role: config.ROLE,
    compute: planned?.compute ?? null,
    admission: planned?.admission ?? null,
    leases,
    memoryLimitBytes: machine.memoryBytes,
    // Read at scrape time, after the runner exists.
    jobs: () => runner.stats,
  });
  const transcriber: Transcriber | null = planned && {
    plan: planned.plan,
    engine: planned.engine,
    admission: planned.admission,
    compute: planned.compute,
    status() {
      return transcriberStatus(planned, config.QUEUE_SIZE, this.transcription);
    },
    batch: () => engineBatch(planned.engine),
    transcription: new TranscriptionService({
      metrics,
      engine: planned.engine,
      plan: planned.plan,
      catalog,
      admission: planned.admission,
      compute: planned.compute,
      leases,
      instanceId,
      maxDurationSeconds: config.MAX_AUDIO_DURATION / 1000,
      vad: config.VAD,
      thresholds: { compressionRatio: config.COMPRESSION_RATIO_THRESHOLD, logprob: config.LOGPROB_THRESHOLD, noSpeech: config.NO_SPEECH_THRESHOLD },
      bestOf: config.BEST_OF,
      beamSize: config.BEAM_SIZE,
      clusterWaitMs: config.QUEUE_TIMEOUT,
      queueSize: config.QUEUE_SIZE,
    }),
  };
  const runner: JobRunner = new JobRunner({
    metrics,
    dispatcher,
    store: jobs,
    blobs,
    transcription: transcriber?.transcription ?? null,
    callbacks,
    leases,
    instanceId,
    policy: config.OUTBOUND_ALLOWLIST,
    maxWaitMs: config.JOB_MAX_WAIT,
    maxDeferMs: config.JOB_DEFER_MAX_DELAY,
    strandable: mode.kind === "cluster",
    maxDownloadBytes: config.MAX_DOWNLOAD_BYTES,
    downloadTimeoutMs: config.DOWNLOAD_TIMEOUT,
    scratchDir: tempDir,
    concurrency: context.concurrency,
    queueSize: config.JOB_QUEUE_SIZE,
    log,
  });
  const jobService = new JobService({
    store: jobs,
    blobs,
    runner,
    catalog,
    policy: config.OUTBOUND_ALLOWLIST,
    webhookSecrets: config.WEBHOOK_SECRET,
    publicUrl: config.PUBLIC_URL,
    vad: config.VAD,
    loadedModel: planned ? (spec) => planned.engine.modelStates().find((m) => m.model.id === spec.id && m.model.dtype === spec.dtype)?.info : undefined,
  });
  await callbacks.start();
  await runner.start();
  const interruption = new AbortController();
  // Every upload being received listens for it until it settles: a burst of uploads is more than
  // Node's default of 10, which it would report on stderr as a possible leak.
  setMaxListeners(0, interruption.signal);
  const sweep = async () => {
    const removed = await jobs.sweep(new Date()).catch((err: Error) => (log.warn({ err: err.message }, "sweep failed"), 0));
    if (removed) log.info({ removed }, "expired jobs removed");
    const { failed, resent } = await runner.sweepStranded().catch((err: Error) => (log.warn({ err: err.message }, "stranded jobs not checked"), { failed: 0, resent: 0 }));
    if (failed) log.warn({ stranded: failed }, "queued jobs no message carried any more were failed");
    if (resent) log.warn({ resent }, "running jobs whose instance died and that no message carried any more were sent again");
    // A callback whose hand-off failed (QStash unreachable as its job ended) is pending with nothing
    // behind it: it is taken up again here, not only at the next start, which may never come.
    await callbacks.start().catch((err: Error) => log.warn({ err: err.message }, "pending callbacks not resumed"));
  };
  await sweep();
  const sweeper = setInterval(sweep, 60_000).unref();

  // Forked now, while the process is small and nothing waits on it.
  processLauncher.start();
  if (planned) {
    // With another VAD the audio thread (features only) starts with the first window instead.
    if (config.VAD === "silero") planned.engine.startAudioThread().catch((err: Error) => log.error({ err: err.message }, "audio thread failed to start"));
    for (const model of planned.models) {
      planned.engine.load(model).then(
        (info) =>
          // Without the fused encoder the same model runs slower (15% on 1 core): worth a look.
          log[info.fusedAttentionRefused ? "warn" : "info"](
            {
              model: model.id,
              dtype: model.dtype,
              footprintMiB: Math.round(info.footprintBytes / 2 ** 20),
              fusedAttentionLayers: info.fusedAttentionLayers,
              fusedAttentionRefused: info.fusedAttentionRefused,
            },
            "model loaded",
          ),
        (err: Error) =>
          // The engine closing under a load (a stop during start-up) fails it as a stop to retry: not a failure to act on.
          err instanceof DomainError && err.code === "unavailable"
            ? log.info({ model: model.id }, "model load stopped: the service is shutting down")
            : log.error({ model: model.id, err: err.message }, "model failed to load"),
      );
    }
  }

  const services: Services = {
    config,
    log,
    instanceId,
    machine,
    transcriber,
    workerForwarder: config.ROLE === "api" && config.WORKER_URL ? new WorkerForwarder({ workerUrl: config.WORKER_URL }) : null,
    catalog,
    leases,
    metrics,
    apiKeys: new ApiKeys(config.API_KEYS),
    tempDir,
    jobs,
    blobs,
    runner,
    jobService,
    callbacks,
    policy: config.OUTBOUND_ALLOWLIST,
    webhookSecrets: config.WEBHOOK_SECRET,
    qstash: inbox && { ...inbox, runner, jobs, onCallbackAttempt: context.onCallbackAttempt },
    baseUrl: (requestOrigin) => config.PUBLIC_URL?.replace(/\/$/, "") ?? requestOrigin,
    draining: false,
    async drain(graceMs, deadline) {
      services.draining = true;
      clearInterval(sweeper);
      transcriber?.transcription.interrupt("waiting");
      await runner.stop(graceMs, deadline);
    },
    interrupted: interruption.signal,
    interruptRunning() {
      transcriber?.transcription.interrupt("running");
      interruption.abort();
    },
    async close(deadline) {
      // Side by side, so each has the time left to the one deadline; the store only after the
      // callbacks, whose attempts record their outcome in it.
      await Promise.all([callbacks.close(deadline).then(() => jobs.close()), transcriber?.engine.close(deadline), processLauncher.close(deadline)]);
      await leases.close();
      await rm(tempDir, { recursive: true, force: true });
    },
  };
  return services;
}

/**
 * The models this instance keeps loaded, the slot plan for them, the inference thread sized by it
 * (started at the first load) and the limiters that enforce the plan.
 */
function planTranscriber(config: Config, catalog: ModelCatalog, machine: MachineResources, tempDir: string, retryAfterSeconds: () => number) {
  // The configuration's checks found each of these.
  const models = (config.PRELOAD_MODELS.length ? config.PRELOAD_MODELS : [config.DEFAULT_MODEL]).map((name) => catalog.resolve(name));
  const plan = planCapacity({ machine, models, slots: config.WINDOW_SLOTS, threads: config.THREADS });
  // One job on such an instance is enough to have the kernel kill it, and a restart policy would
  // start it again: refuse, unless the operator sized the slots and takes that on.
  if (!plan.fits && config.WINDOW_SLOTS === undefined) {
    const named = models.map((m) => `${m.id} ${m.dtype}`).join(", ");
    throw new Error(
      `${models.length > 1 ? `the models ${named} leave` : `the model ${named} leaves`} no memory for one job in ${formatBytes(machine.memoryBytes)} (${machine.memorySource}): give the instance at least ${formatBytes(minimumMemoryBytes(plan))}, use a smaller model, or set WINDOW_SLOTS to start anyway`,
    );
  }
  const engine = new Engine({
    localModelPath: config.WHISPER_MODELS_DIR ?? null,
    allowRemoteModels: config.WHISPER_MODELS_DIR === undefined,
    cacheDir: config.MODEL_CACHE_DIR ?? null,
    threads: plan.threads,
    rows: plan.slots,
    tempDir,
  });
  const admission = new Limiter({
    permits: config.MAX_ACTIVE_JOBS ?? plan.transcriptions,
    queueSize: config.QUEUE_SIZE,
    queueTimeoutMs: config.QUEUE_TIMEOUT,
    retryAfterSeconds,
  });
  const compute = new Limiter({ permits: plan.slots, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds });
  return { models, plan, engine, admission, compute };
}

/** The inference thread is asked, not waited on: a status page must not hang on a busy engine. */
async function engineBatch(engine: Engine): Promise<{ rows: number; largest: number } | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => (timer = setTimeout(resolve, 1000, null)));
  const stats = await Promise.race([engine.stats(), late])
    .catch(() => null)
    .finally(() => clearTimeout(timer));
  return stats && { rows: stats.activeRows, largest: stats.largestBatch };
}

function transcriberStatus(
  { plan, engine, admission, compute }: Pick<Transcriber, "plan" | "engine" | "admission" | "compute">,
  queueSize: number,
  transcription: Pick<TranscriptionService, "audioSecondsDone" | "waitingForLease">,
): TranscriberStatus {
  return {
    models: engine.modelStates().map((m) => ({
      id: m.model.id,
      dtype: m.model.dtype,
      state: m.state,
      preloaded: plan.rows.some((row) => row.model === m.model.id && row.dtype === m.model.dtype),
      error: m.error,
    })),
    slots: plan.slots,
    threads: plan.threads,
    limitedBy: plan.limitedBy,
    windows: { inUse: compute.stats.inUse, queued: compute.stats.queued },
    transcriptions: { limit: admission.stats.permits, active: admission.stats.inUse, queued: admission.stats.queued, queueSize, waitingForLease: transcription.waitingForLease },
    audioSeconds: transcription.audioSecondsDone,
  };
}
