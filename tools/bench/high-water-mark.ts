import { readFileSync, writeFileSync } from "node:fs";

/**
 * The process's peak resident memory since the last reset (Linux VmHWM). Read from the kernel rather
 * than sampled on a timer: a timer cannot fire while onnxruntime-node's session.run() holds the
 * thread, so sampling misses the encoder's transient buffers.
 */
export function highWaterMark(): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
}

/** Starts a new peak from the current resident memory. */
export function resetHighWaterMark(): void {
  writeFileSync("/proc/self/clear_refs", "5");
}
