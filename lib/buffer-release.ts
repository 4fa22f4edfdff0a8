import { setFlagsFromString } from "node:v8";

/**
 * Freeing onnxruntime-node's output buffers as soon as they are read. The binding returns a new
 * ArrayBuffer for every output of every call (logits, the growing self-attention cache, each row's
 * cross-attention cache), and V8 frees such a buffer only at the next full collection of the thread
 * that holds it: with the inference thread's ~50 MB heap, a mark-compact every ~100 ms while
 * decoding. Detaching a buffer with `transfer(0)` frees its memory at once (measured in process,
 * tiny q8, 300 s file, 8 slots, three runs each: 64-70 mark-compacts -> 27-30, peak RSS 818-836 ->
 * 761-770 MiB, 2.86-3.49 s -> 2.73-2.99 s).
 */
export function releaseBuffer(buffer: ArrayBufferLike): void {
  const releasable = buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer; detached?: boolean };
  // Freed already: a state a failed merge had freed in part, freed again as its windows fail.
  if (releasable.detached) return;
  releasable.transfer?.(0);
}

/**
 * `ArrayBuffer.prototype.transfer` is behind a flag in Node 20's V8 (on by default from Node 22). A
 * V8 flag set now applies to the threads started after, so the engine calls this before starting
 * its inference and audio threads; without it, buffers are left to the collector as before.
 */
export function allowBufferReleaseInNewThreads(): void {
  if (typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer !== "function") setFlagsFromString("--harmony-rab-gsab-transfer");
}
