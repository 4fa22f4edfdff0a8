import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";

/**
 * Nice steps the worker threads (inference, speech detection) run below the process. Inference keeps
 * every core busy while any window is in flight; at the same priority the thread that answers HTTP
 * waited behind it (and behind the onnxruntime pool threads the inference thread starts, which
 * inherit its priority) for a core, up to 100 ms and more for a /healthz. Lower, they still take
 * every core the main thread and ffmpeg leave idle. Speech detection runs level with inference: at
 * the lowest priority it starved behind a busy decoder while windows waited for it.
 */
export const WORKER_NICE = 10;

/**
 * Lowers the calling thread's scheduling priority by `steps` nice steps (Linux: a thread's id, found
 * through /proc/thread-self, is a valid target for setpriority). Threads it starts afterwards (an
 * onnxruntime pool's) inherit it. Elsewhere, or if refused, the thread keeps the process's priority.
 */
export function lowerThreadPriority(steps: number): number | null {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").at(-1));
    if (!Number.isSafeInteger(tid) || tid <= 0) return null;
    const nice = Math.min(19, getPriority(tid) + steps);
    setPriority(tid, nice);
    return nice;
  } catch {
    return null;
  }
}
