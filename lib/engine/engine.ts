import { Worker } from "node:worker_threads";
import type { WhisperFeatureConfig } from "../audio/log-mel.ts";
import type { SileroRunner } from "../audio/silero-vad.ts";
import { AudioThread } from "../audio/audio-thread.ts";
import { allowBufferReleaseInNewThreads } from "../buffer-release.ts";
import { DomainError } from "../errors.ts";
import { closeThread } from "../thread-close.ts";
import type { DecoderStats, FromWorker, ModelInfo, ModelSpec, ToWorker, WindowOptions, WindowOutput, WorkerInit } from "./protocol.ts";

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

export type EngineOptions = WorkerInit;

export interface WindowCall {
  /** Names the file the window belongs to: the engine is fair between files, not windows. */
  stream?: string;
  /** Removes the window from the engine wherever it is (queued, encoding or in a decoding batch). */
  signal?: AbortSignal;
  onLanguage?: (language: string) => void;
  /**
   * More of the stream follows: its next window comes as soon as it is found and has a slot, and the
   * engine may hold this one back briefly so that they start decoding together.
   */
  followed?: boolean;
}

/**
 * Runs Whisper windows on one inference thread that holds one copy of each loaded model and decodes
 * every window in flight through it in shared batched calls, on all of the instance's cores. If the
 * thread dies, its pending work fails and a fresh thread is started (and the models reloaded) on the
 * next call.
 */
export class Engine {
  private nextRid = 1;
  private worker: Worker | null = null;
  /** Settles when the current thread has loaded its modules (or failed to). */
  private ready: Promise<void> = Promise.resolve();
  private readonly pending = new Map<number, Pending>();
  private readonly models = new Map<string, LoadedModelState>();
  private readonly loads = new Map<string, Promise<{ info: ModelInfo; features: WhisperFeatureConfig }>>();

  constructor(private readonly init: EngineOptions) {}

  /** Starts the thread and resolves when it has loaded its modules, before any model (what the thread costs by itself). */
  async start(): Promise<void> {
    this.ensureWorker();
    await this.ready;
  }

  get threads(): number {
    return this.init.threads;
  }

  modelStates(): LoadedModelState[] {
    return [...this.models.values()];
  }

  /** Calls in flight on the inference thread (windows and loads). */
  get inFlight(): number {
    return this.pending.size;
  }

  readonly #audio = new AudioThread();

  /** Starts the audio thread (speech detection, every window's features) and Silero ahead of the first file. */
  startAudioThread(): Promise<void> {
    return this.#audio.start();
  }

  /** Silero VAD over the next block of a file, on the audio thread (see AudioThread). */
  readonly speechProbabilities: SileroRunner = (block, carry) => this.#audio.run(block, carry);

  /** The batch decoder's counters: encoder runs, decoder calls, mean and largest batch. */
  stats(): Promise<DecoderStats> {
    return this.call<DecoderStats>({ op: "stats", rid: 0 });
  }

  async load(model: ModelSpec): Promise<ModelInfo> {
    return (await this.loaded(model)).info;
  }

  private loaded(model: ModelSpec): Promise<{ info: ModelInfo; features: WhisperFeatureConfig }> {
    const key = `${model.id}@${model.dtype}`;
    let loading = this.loads.get(key);
    if (!loading) {
      this.models.set(key, { model, state: "loading" });
      loading = this.call<{ info: ModelInfo; features: WhisperFeatureConfig }>({ op: "load", rid: 0, model }).then(
        (loaded) => {
          this.models.set(key, { model, state: "ready", info: loaded.info });
          return loaded;
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

  /**
   * Decodes one window. Without a language, a multilingual model identifies it first and `onLanguage`
   * hears it then, before the window's decoding finishes.
   */
  async transcribeWindow(model: ModelSpec, samples: Float32Array, options: WindowOptions, call: WindowCall = {}): Promise<WindowOutput> {
    const { features: config } = await this.loaded(model);
    call.signal?.throwIfAborted();
    // Copied so the caller's buffer stays usable; the copy's memory moves to the thread without a second copy.
    const owned = samples.slice();
    const rid = this.nextRid++;
    const stream = call.stream ?? `window-${rid}`;
    const result = this.call<WindowOutput>({ op: "window", rid, stream, model, samples: owned, options, followed: call.followed ?? false }, [owned.buffer], call.onLanguage, rid);
    // The window is in the decoder's plans at once (windows that arrive together batch together);
    // its encoder runs once these arrive.
    const worker = this.worker;
    this.#audio.features(samples, config).then(
      (features) => {
        if (this.pending.has(rid)) worker?.postMessage({ op: "features", rid, features } satisfies ToWorker, [features.buffer as ArrayBuffer]);
      },
      (err: Error) => {
        if (this.pending.has(rid)) worker?.postMessage({ op: "features", rid, error: err.message } satisfies ToWorker);
      },
    );
    if (!call.signal) return result;
    const signal = call.signal;
    const onAbort = () => {
      const pending = this.pending.get(rid);
      if (!pending) return;
      this.pending.delete(rid);
      this.worker?.postMessage({ op: "cancel", rid } satisfies ToWorker);
      if (this.pending.size === 0) this.worker?.unref();
      pending.reject(signal.reason instanceof Error ? signal.reason : new InferenceError("window canceled"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    return result.finally(() => signal.removeEventListener("abort", onAbort));
  }

  /**
   * Lets each thread finish the call it is in, then ends it; a thread still running at `deadline`
   * (without one, 10 s after it was asked to end) is terminated. Calls still pending fail at once, as
   * a stop to retry: the thread drops its windows without a reply, and the exit of a thread the
   * engine has let go of fails nothing (failAll).
   */
  async close(deadline?: AbortSignal): Promise<void> {
    await this.#audio.close(deadline);
    const worker = this.worker;
    this.worker = null;
    if (!worker) return;
    this.failPending(() => new DomainError("unavailable", "The inference engine is stopping; retry the request.", { retryAfterSeconds: 1 }));
    await closeThread(worker, { op: "close", rid: 0 } satisfies ToWorker, deadline);
  }

  private call<T>(message: ToWorker, transfer: ArrayBuffer[] = [], onLanguage?: (language: string) => void, rid = this.nextRid++): Promise<T> {
    const worker = this.ensureWorker();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(rid, { resolve: resolve as (v: never) => void, reject, onLanguage });
      // Referenced only while work is pending, so an idle engine never keeps the process alive.
      worker.ref();
      worker.postMessage({ ...message, rid }, transfer);
    });
  }

  private failPending(error: () => Error): void {
    for (const [rid, p] of this.pending) {
      this.pending.delete(rid);
      p.reject(error());
    }
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    allowBufferReleaseInNewThreads();
    const worker = new Worker(new URL("../worker-entry.mjs", import.meta.url), { workerData: { thread: "inference", ...this.init } });
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
      else pending.resolve((message.op === "loaded" ? { info: message.info, features: message.features } : message.op === "stats" ? message.stats : message.output) as never);
    });
    const failAll = (err: Error) => {
      failed(err);
      if (this.worker !== worker) return;
      this.worker = null;
      this.loads.clear();
      this.models.clear();
      this.failPending(() => new InferenceError(`inference thread stopped: ${err.message}`, { cause: err }));
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`exit code ${code}`)));
    this.worker = worker;
    return worker;
  }
}
