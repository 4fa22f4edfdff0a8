import { Worker } from "node:worker_threads";
import { allowBufferReleaseInNewThreads } from "../buffer-release.ts";
import { closeThread } from "../thread-close.ts";
import type { FromAudioThread, ToAudioThread } from "./audio-worker.ts";
import type { WhisperFeatureConfig } from "./log-mel.ts";
import { initialCarry, type SileroRunner } from "./silero-vad.ts";
import { CHUNK_SAMPLES } from "./speech-regions.ts";

interface Pending {
  worker: Worker;
  resolve: (value: FromAudioThread) => void;
  reject: (err: Error) => void;
}

/**
 * The audio work beside inference, on a thread of its own at the inference thread's priority (10
 * nice steps below the process, so HTTP stays responsive): Silero VAD over each file's blocks, and
 * each window's log-mel features.
 *
 * Silero costs about 7.5 us of CPU per 32 ms chunk. Run between decoder calls on the inference
 * thread, it held up decoding and added about a third to a file's wall time; here it runs beside it,
 * in the gaps the decoder leaves (its JavaScript between calls, batches too small to split) and
 * otherwise for its fair share. At the lowest priority it starved behind a busy decoder (1.3 s for a
 * 131 s block) while windows waited for it. Features (about 30 ms for a 27 s window) were a sixth of
 * the inference thread's time on a 300 s file (tiny q8), in line before every encoder run; here they
 * are ready before the window reaches it. Started by start() or the first call, so a service that
 * never uses it never has it.
 */
export class AudioThread {
  #worker: Worker | null = null;
  #nextRid = 1;
  readonly #pending = new Map<number, Pending>();

  readonly run: SileroRunner = async (block, carry) => {
    const owned = block.slice();
    const reply = await this.#call({ op: "run", rid: 0, block: owned, carry }, [owned.buffer]);
    if (!("probs" in reply)) throw new Error("speech detection: unexpected reply");
    return { probs: reply.probs, carry: reply.carry };
  };

  /** A window's encoder input (whisperFeatures). */
  async features(samples: Float32Array, config: WhisperFeatureConfig): Promise<Float32Array> {
    const owned = samples.slice();
    const reply = await this.#call({ op: "features", rid: 0, samples: owned, config }, [owned.buffer]);
    if (!("features" in reply)) throw new Error("features: unexpected reply");
    return reply.features;
  }

  #call(message: Exclude<ToAudioThread, { op: "close" }>, transfer: ArrayBuffer[]): Promise<FromAudioThread> {
    const worker = this.#ensureWorker();
    const rid = this.#nextRid++;
    return new Promise((resolve, reject) => {
      this.#pending.set(rid, { worker, resolve, reject });
      // Referenced only while a call is pending, so an idle thread never keeps the process alive.
      worker.ref();
      worker.postMessage({ ...message, rid }, transfer);
    });
  }

  /** Starts the thread and its model, so the first file does not wait for them. */
  async start(): Promise<void> {
    await this.run(new Float32Array(CHUNK_SAMPLES), initialCarry());
  }

  /** Lets the thread finish the blocks sent to it, then ends it; see closeThread for `deadline`. */
  async close(deadline?: AbortSignal): Promise<void> {
    const worker = this.#worker;
    this.#worker = null;
    if (!worker) return;
    await closeThread(worker, { op: "close" } satisfies ToAudioThread, deadline);
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    allowBufferReleaseInNewThreads();
    const worker = new Worker(new URL("../worker-entry.mjs", import.meta.url), { workerData: { thread: "audio" } });
    worker.unref();
    worker.on("message", (message: FromAudioThread) => {
      const pending = this.#pending.get(message.rid);
      if (!pending) return;
      this.#pending.delete(message.rid);
      // A thread being closed stays referenced until it exits (see close()): a late reply that
      // unreferenced it left the process with an empty event loop before the thread was gone.
      if (worker === this.#worker && ![...this.#pending.values()].some((p) => p.worker === worker)) worker.unref();
      if ("error" in message) pending.reject(new Error(`audio thread: ${message.error}`));
      else pending.resolve(message);
    });
    const failAll = (err: Error) => {
      if (this.#worker === worker) this.#worker = null;
      for (const [rid, p] of this.#pending) {
        if (p.worker !== worker) continue;
        this.#pending.delete(rid);
        p.reject(new Error(`audio thread stopped: ${err.message}`, { cause: err }));
      }
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`exit code ${code}`)));
    this.#worker = worker;
    return worker;
  }
}
