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
  onLanguage?: (language: string) => void;
}

export interface LoadedModelState {
  model: ModelSpec;
  state: "loading" | "ready" | "failed";
  info?: ModelInfo;
  error?: string;
}

export interface EngineOptions extends WorkerInit {
  /**
   * Inference threads, each holding its own copy of every loaded model. onnxruntime-node runs a
   * session synchronously on the thread that calls it, so one thread runs one ONNX call at a time
   * however many windows it interleaves: lanes are what runs windows in parallel, at the price of a
   * model copy each (the capacity planner chooses how many memory allows). Default 1.
   */
  lanes?: number;
}

/** One inference thread and the windows and loads it has in flight. */
class Lane {
  worker: Worker | null = null;
  /** Settles when the current thread has loaded its modules (or failed to). */
  ready: Promise<void> = Promise.resolve();
  readonly pending = new Map<number, Pending>();
  windows = 0;

  constructor(
    private readonly init: WorkerInit,
    private readonly onStop: () => void,
  ) {}

  call<T>(message: ToWorker, rid: number, transfer: ArrayBuffer[], onLanguage?: (language: string) => void): Promise<T> {
    const worker = this.ensureWorker();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(rid, { resolve: resolve as (v: never) => void, reject, onLanguage });
      // Referenced only while work is pending, so an idle engine never keeps the process alive.
      worker.ref();
      worker.postMessage({ ...message, rid }, transfer);
    });
  }

  start(): Promise<void> {
    this.ensureWorker();
    return this.ready;
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    await worker?.terminate();
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL("./worker-entry.mjs", import.meta.url), { workerData: this.init });
    worker.unref();
    let started!: () => void;
    let failed!: (err: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      started = resolve;
      failed = reject;
    });
    this.ready.catch(() => undefined);
    worker.on("message", (message: FromWorker) => {
      if (message.op === "ready") return started();
      const pending = this.pending.get(message.rid);
      if (!pending) return;
      if (message.op === "language") return pending.onLanguage?.(message.language);
      this.pending.delete(message.rid);
      if (this.pending.size === 0) worker.unref();
      if (message.op === "error") pending.reject(new InferenceError(message.message));
      else pending.resolve((message.op === "loaded" ? message.info : message.output) as never);
    });
    const failAll = (err: Error) => {
      failed(err);
      if (this.worker !== worker) return;
      this.worker = null;
      for (const [rid, p] of this.pending) {
        this.pending.delete(rid);
        p.reject(new InferenceError(`inference thread stopped: ${err.message}`, { cause: err }));
      }
      this.onStop();
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`exit code ${code}`)));
    this.worker = worker;
    return worker;
  }
}

/**
 * Runs Whisper windows on inference threads (lanes). Each lane loads a model once; every window a
 * lane runs shares it. A window goes to the lane with the fewest windows in flight. If a lane's
 * thread dies, its pending work fails and a fresh thread is started (and the models reloaded) on
 * the next call.
 */
export class Engine {
  private nextRid = 1;
  private readonly lanes: Lane[];
  private readonly models = new Map<string, LoadedModelState>();
  private readonly loads = new Map<string, Promise<ModelInfo>>();

  constructor(private readonly init: EngineOptions) {
    const { lanes = 1, ...workerInit } = init;
    const onStop = () => {
      this.loads.clear();
      this.models.clear();
    };
    this.lanes = Array.from({ length: Math.max(1, lanes) }, () => new Lane(workerInit, onStop));
  }

  /**
   * Starts every lane's thread and resolves when each has loaded its modules, before any model: what
   * a lane costs by itself (the footprint probe measures it this way).
   */
  async start(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.start()));
  }

  get threadsPerJob(): number {
    return this.init.threadsPerJob;
  }

  get laneCount(): number {
    return this.lanes.length;
  }

  modelStates(): LoadedModelState[] {
    return [...this.models.values()];
  }

  /** Per lane: calls in flight and windows started since the engine was made. */
  laneStats(): { inFlight: number; windows: number }[] {
    return this.lanes.map((lane) => ({ inFlight: lane.pending.size, windows: lane.windows }));
  }

  /**
   * Loads the model on every lane, one lane after another: a load's transient memory is paid once at
   * a time, and the first lane's footprint (the info returned) is measured with no other load in the
   * process adding to its RSS.
   */
  load(model: ModelSpec): Promise<ModelInfo> {
    const key = `${model.id}@${model.dtype}`;
    let loading = this.loads.get(key);
    if (!loading) {
      this.models.set(key, { model, state: "loading" });
      loading = this.loadLaneByLane(model).then(
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

  private async loadLaneByLane(model: ModelSpec): Promise<ModelInfo> {
    const [first, ...rest] = this.lanes;
    const info = await first!.call<ModelInfo>({ op: "load", rid: 0, model }, this.nextRid++, []);
    for (const lane of rest) await lane.call<ModelInfo>({ op: "load", rid: 0, model }, this.nextRid++, []);
    return info;
  }

  /**
   * Decodes one window. Without a language, a multilingual model identifies it first and `onLanguage`
   * hears it then, before the window's decoding finishes.
   */
  async transcribeWindow(model: ModelSpec, samples: Float32Array, options: WindowOptions, onLanguage?: (language: string) => void): Promise<WindowOutput> {
    await this.load(model);
    const lane = this.lanes.reduce((best, l) => (l.pending.size < best.pending.size ? l : best));
    lane.windows++;
    // Copied so the caller's buffer stays usable; the copy's memory moves to the worker without a second copy.
    const owned = samples.slice();
    return lane.call<WindowOutput>({ op: "window", rid: 0, model, samples: owned, options }, this.nextRid++, [owned.buffer], onLanguage);
  }

  async close(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.close()));
  }
}
