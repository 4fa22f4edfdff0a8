import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { Limiter } from "./admission/limiter.ts";
import { EmbeddedSlotStore } from "./admission/embedded-slot-store.ts";
import type { SlotStore } from "./admission/ports.ts";
import { ApiKeys } from "./auth.ts";
import { detectMachine, type MachineResources } from "./capacity/machine.ts";
import { planCapacity, type CapacityPlan } from "./capacity/plan.ts";
import type { Config } from "./config.ts";
import { Engine } from "./engine/engine.ts";
import { ModelCatalog } from "./engine/models.ts";
import type { Logger } from "./log.ts";
import { TranscriptionService } from "./transcription-service.ts";

/** Everything a request handler may use. Built once at start-up and handed to the HTTP layer. */
export interface Services {
  config: Config;
  log: Logger;
  instanceId: string;
  machine: MachineResources;
  plan: CapacityPlan;
  engine: Engine;
  catalog: ModelCatalog;
  admission: Limiter;
  compute: Limiter;
  slots: SlotStore;
  transcription: TranscriptionService;
  apiKeys: ApiKeys;
  /** Uploads are spooled here and removed when their request ends. */
  tempDir: string;
  close(): Promise<void>;
}

export async function createServices(config: Config, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Services> {
  const instanceId = config.INSTANCE_ID ?? env.FLY_MACHINE_ID ?? env.RAILWAY_REPLICA_ID ?? `${hostname()}-${process.pid}`;
  const catalog = new ModelCatalog({ defaultModel: config.DEFAULT_MODEL, dtype: config.MODEL_DTYPE, localDir: config.WHISPER_MODELS_DIR });
  const machine = detectMachine(env);
  const planned = (config.PRELOAD_MODELS.length ? config.PRELOAD_MODELS : [config.DEFAULT_MODEL]).map((name) => {
    try {
      return catalog.resolve(name);
    } catch {
      return { name, id: name, dtype: config.MODEL_DTYPE };
    }
  });
  const plan = planCapacity({ machine, models: planned, slots: config.SLOTS, threadsPerJob: config.THREADS_PER_JOB });

  const engine = new Engine({
    localModelPath: config.WHISPER_MODELS_DIR ?? null,
    allowRemoteModels: config.WHISPER_MODELS_DIR === undefined,
    cacheDir: config.MODEL_CACHE_DIR ?? null,
    threadsPerJob: plan.threadsPerJob,
  });
  let transcription: TranscriptionService | undefined;
  const retryAfterSeconds = () => transcription?.retryAfterSeconds() ?? 5;
  const admission = new Limiter({
    slots: config.MAX_ACTIVE_JOBS ?? plan.slots * 2,
    queueSize: config.QUEUE_SIZE,
    queueTimeoutMs: config.QUEUE_TIMEOUT,
    retryAfterSeconds,
  });
  const compute = new Limiter({ slots: plan.slots, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds });
  const slots = new EmbeddedSlotStore({ cap: config.CLUSTER_SLOTS ?? null });
  transcription = new TranscriptionService({
    engine,
    catalog,
    admission,
    compute,
    slots,
    instanceId,
    maxDurationSeconds: config.MAX_AUDIO_DURATION / 1000,
    clusterWaitMs: config.QUEUE_TIMEOUT,
  });
  const tempDir = await mkdtemp(join(tmpdir(), "slotscribe-"));

  for (const model of planned) {
    engine.load(model).then(
      (info) => log.info({ model: model.id, dtype: model.dtype, footprintMiB: Math.round(info.footprintBytes / 2 ** 20) }, "model loaded"),
      (err: Error) => log.error({ model: model.id, err: err.message }, "model failed to load"),
    );
  }

  return {
    config,
    log,
    instanceId,
    machine,
    plan,
    engine,
    catalog,
    admission,
    compute,
    slots,
    transcription,
    apiKeys: new ApiKeys(config.API_KEYS),
    tempDir,
    async close() {
      await engine.close();
      await slots.close();
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}

export function newRequestId(): string {
  return `req_${randomUUID().replaceAll("-", "")}`;
}
