import { Worker } from "node:worker_threads";
import { initialCarry, type SileroCarry, type SileroRunner } from "./silero-vad.ts";
import { CHUNK_SAMPLES } from "./speech-regions.ts";
import type { FromVadThread, ToVadThread } from "./vad-worker.ts";

interface Pending {
  worker: Worker;
  resolve: (value: { probs: Float32Array; carry: SileroCarry }) => void;
  reject: (err: Error) => void;
}

/**
 * Silero VAD on a thread of its own, at the inference thread's priority (10 nice steps below the
 * process, so HTTP stays responsive). Silero costs about 30 us of CPU per 32 ms chunk, a tenth of
 * tiny's decoding per second of speech. Run between decoder calls on the inference thread, it held
 * up decoding and added about a third to a file's wall time; here it runs beside it, in the gaps the
 * decoder leaves (its JavaScript between calls, batches too small to split) and otherwise for its
 * fair share. At the lowest priority it starved behind a busy decoder (1.3 s for a 131 s block)
 * while windows waited for it. Started by start() or the first block, so a service that never uses
 * Silero never has it.
 */
export class VadThread {
  #worker: Worker | null = null;
  #nextRid = 1;
  readonly #pending = new Map<number, Pending>();

  readonly run: SileroRunner = (block, carry) => {
    const worker = this.#ensureWorker();
    const owned = block.slice();
    const rid = this.#nextRid++;
    return new Promise((resolve, reject) => {
      this.#pending.set(rid, { worker, resolve, reject });
      // Referenced only while a block is pending, so an idle thread never keeps the process alive.
      worker.ref();
      worker.postMessage({ op: "run", rid, block: owned, carry } satisfies ToVadThread, [owned.buffer]);
    });
  };

  /** Starts the thread and its model, so the first file does not wait for them. */
  async start(): Promise<void> {
    await this.run(new Float32Array(CHUNK_SAMPLES), initialCarry());
  }

  /** Lets the thread finish the blocks sent to it, then ends it. */
  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = null;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    // Referenced until it exits, so a caller awaiting this is not left with an empty event loop.
    worker.ref();
    worker.postMessage({ op: "close" } satisfies ToVadThread);
    await exited;
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL("../worker-entry.mjs", import.meta.url), { workerData: { thread: "vad" } });
    worker.unref();
    worker.on("message", (message: FromVadThread) => {
      const pending = this.#pending.get(message.rid);
      if (!pending) return;
      this.#pending.delete(message.rid);
      if (![...this.#pending.values()].some((p) => p.worker === worker)) worker.unref();
      if ("error" in message) pending.reject(new Error(`speech detection failed: ${message.error}`));
      else pending.resolve({ probs: message.probs, carry: message.carry });
    });
    const failAll = (err: Error) => {
      if (this.#worker === worker) this.#worker = null;
      for (const [rid, p] of this.#pending) {
        if (p.worker !== worker) continue;
        this.#pending.delete(rid);
        p.reject(new Error(`speech detection thread stopped: ${err.message}`, { cause: err }));
      }
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`exit code ${code}`)));
    this.#worker = worker;
    return worker;
  }
}
