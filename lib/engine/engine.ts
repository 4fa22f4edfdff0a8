import { Worker } from "node:worker_threads";
import type { FromWorker, ModelInfo, ModelSpec, ToWorker, WindowOptions, WindowOutput, WorkerInit } from "./protocol.ts";

export class InferenceError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InferenceError";
  }
}

export class ModelLoadError extends Error {
  constructor(
    readonly model: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ModelLoadError";
  }
}

interface Pending {
  resolve: (value: never) => void;
  reject: (err: Error) => void;
}

export interface LoadedModelState {
  model: ModelSpec;
  state: "loading" | "ready" | "failed";
  info?: ModelInfo;
  error?: string;
}

/**
 * Runs Whisper windows on one inference thread. Models load once per process; every concurrent
 * window of every job shares them. If the thread dies, pending work fails and a fresh thread is
 * started on the next call.
 */
export class Engine {
  private worker: Worker | null = null;
  private nextRid = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly models = new Map<string, LoadedModelState>();
  private readonly loads = new Map<string, Promise<ModelInfo>>();

  constructor(private readonly init: WorkerInit) {}

  get threadsPerJob(): number {
    return this.init.threadsPerJob;
  }

  modelStates(): LoadedModelState[] {
    return [...this.models.values()];
  }

  load(model: ModelSpec): Promise<ModelInfo> {
    const key = `${model.id}@${model.dtype}`;
    let loading = this.loads.get(key);
    if (!loading) {
      this.models.set(key, { model, state: "loading" });
      loading = this.call<ModelInfo>({ op: "load", rid: 0, model }).then(
        (info) => {
          this.models.set(key, { model, state: "ready", info });
          return info;
        },
        (err: Error) => {
          this.models.set(key, { model, state: "failed", error: err.message });
          this.loads.delete(key);
          throw new ModelLoadError(model.id, `model ${model.id} could not be loaded: ${err.message}`, { cause: err });
        },
      );
      this.loads.set(key, loading);
    }
    return loading;
  }

  async transcribeWindow(model: ModelSpec, samples: Float32Array, options: WindowOptions): Promise<WindowOutput> {
    await this.load(model);
    // Copied so the caller's buffer stays usable; the copy's memory moves to the worker without a second copy.
    const owned = samples.slice();
    return this.call<WindowOutput>({ op: "window", rid: 0, model, samples: owned, options }, [owned.buffer]);
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    await worker?.terminate();
  }

  private call<T>(message: ToWorker, transfer: ArrayBuffer[] = []): Promise<T> {
    const worker = this.ensureWorker();
    const rid = this.nextRid++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(rid, { resolve: resolve as (v: never) => void, reject });
      // Referenced only while work is pending, so an idle engine never keeps the process alive.
      worker.ref();
      worker.postMessage({ ...message, rid }, transfer);
    });
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL("./worker-entry.mjs", import.meta.url), { workerData: this.init });
    worker.unref();
    worker.on("message", (message: FromWorker) => {
      const pending = this.pending.get(message.rid);
      if (!pending) return;
      this.pending.delete(message.rid);
      if (this.pending.size === 0) worker.unref();
      if (message.op === "error") pending.reject(new InferenceError(message.message));
      else pending.resolve((message.op === "loaded" ? message.info : message.output) as never);
    });
    const failAll = (err: Error) => {
      if (this.worker === worker) this.worker = null;
      this.loads.clear();
      this.models.clear();
      for (const [rid, p] of this.pending) {
        this.pending.delete(rid);
        p.reject(new InferenceError(`inference thread stopped: ${err.message}`, { cause: err }));
      }
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`exit code ${code}`)));
    this.worker = worker;
    return worker;
  }
}
