/**
 * The speech detection thread: Silero over blocks of audio for every file, one call at a time, on a
 * single core at the inference thread's priority (see VadThread).
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { lowerThreadPriority, WORKER_NICE } from "../thread-priority.ts";
import { runSilero, type SileroCarry } from "./silero-vad.ts";

export type ToVadThread =
  | { op: "run"; rid: number; block: Float32Array; carry: SileroCarry }
  /** Stop once the blocks sent before are done: terminating a thread inside a native onnxruntime call can bring the process down. */
  | { op: "close" };
export type FromVadThread = { rid: number; probs: Float32Array; carry: SileroCarry } | { rid: number; error: string };

if (!isMainThread && parentPort && (workerData as { thread?: string } | null)?.thread === "vad") {
  lowerThreadPriority(WORKER_NICE);
  const port = parentPort;
  // One block at a time, in arrival order: each file's blocks must run in order (its state carries).
  let queue = Promise.resolve();
  port.on("message", (message: ToVadThread) => {
    if (message.op === "close") {
      void queue.then(() => process.exit(0));
      return;
    }
    queue = queue.then(() =>
      runSilero(message.block, message.carry).then(
        ({ probs, carry }) => port.postMessage({ rid: message.rid, probs, carry } satisfies FromVadThread, [probs.buffer as ArrayBuffer]),
        (err: unknown) => port.postMessage({ rid: message.rid, error: err instanceof Error ? err.message : String(err) } satisfies FromVadThread),
      ),
    );
  });
}
