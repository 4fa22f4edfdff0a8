import { readFileSync, writeFileSync } from "node:fs";

/**
 * A process's peak resident memory since the last reset (Linux VmHWM): this one's by default, or
 * another of this user's. Read from the kernel rather than sampled on a timer: a timer cannot fire
 * while onnxruntime-node's session.run() holds the thread, so sampling misses the encoder's
 * transient buffers, and a sampler 50 ms apart catches a different part of them every run.
 */
export function highWaterMark(pid: number | "self" = "self"): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
}

/** Starts a new peak from the current resident memory. */
export function resetHighWaterMark(pid: number | "self" = "self"): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}
