/**
 * The audio thread: Silero over blocks of audio for every file, one block at a time, and each
 * window's log-mel features, on a single core at the inference thread's priority (see AudioThread).
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { releaseBuffer } from "../buffer-release.ts";
import { lowerThreadPriority, WORKER_NICE } from "../thread-priority.ts";
import { whisperFeatures, type WhisperFeatureConfig } from "./log-mel.ts";
import { runSilero, type SileroCarry } from "./silero-vad.ts";

export type ToAudioThread =
  | { op: "run"; rid: number; block: Float32Array; carry: SileroCarry }
  | { op: "features"; rid: number; samples: Float32Array; config: WhisperFeatureConfig }
  /** Stop once the blocks sent before are done: terminating a thread inside a native onnxruntime call can bring the process down. */
  | { op: "close" };
export type FromAudioThread = { rid: number; probs: Float32Array; carry: SileroCarry } | { rid: number; features: Float32Array } | { rid: number; error: string };

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

if (!isMainThread && parentPort && (workerData as { thread?: string } | null)?.thread === "audio") {
  lowerThreadPriority(WORKER_NICE);
  const port = parentPort;
  // One block at a time, in arrival order: each file's blocks must run in order (its state carries).
  let queue = Promise.resolve();
  port.on("message", (message: ToAudioThread) => {
    switch (message.op) {
      case "close":
        void queue.then(() => process.exit(0));
        return;
      case "features":
        // At once, between Silero's steps: a window waits for these before its encoder can run.
        try {
          const features = whisperFeatures(message.samples, message.config);
          // Freed now: this thread allocates little, so its collector would keep every window's
          // samples (and every block, below) for a long while.
          releaseBuffer(message.samples.buffer);
          port.postMessage({ rid: message.rid, features } satisfies FromAudioThread, [features.buffer as ArrayBuffer]);
        } catch (err) {
          port.postMessage({ rid: message.rid, error: errorText(err) } satisfies FromAudioThread);
        }
        return;
      case "run":
        queue = queue.then(() =>
          runSilero(message.block, message.carry)
            .then(
              ({ probs, carry }) => port.postMessage({ rid: message.rid, probs, carry } satisfies FromAudioThread, [probs.buffer as ArrayBuffer]),
              (err: unknown) => port.postMessage({ rid: message.rid, error: errorText(err) } satisfies FromAudioThread),
            )
            .finally(() => releaseBuffer(message.block.buffer)),
        );
    }
  });
}
