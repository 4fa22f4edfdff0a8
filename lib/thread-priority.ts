import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";

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
