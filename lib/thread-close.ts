import type { Worker } from "node:worker_threads";
import { doneBy } from "./deferred.ts";

/** How long a thread asked to end may take without a deadline of the caller's. */
const THREAD_CLOSE_TIMEOUT_MS = 10_000;

/**
 * Asks a thread to end with `message` (it finishes the call it is in first) and resolves once it has
 * exited; one still running at `deadline` is terminated.
 */
export async function closeThread(worker: Worker, message: unknown, deadline = AbortSignal.timeout(THREAD_CLOSE_TIMEOUT_MS)): Promise<void> {
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  // Referenced until it exits, so a caller awaiting this is not left with an empty event loop.
  worker.ref();
  worker.postMessage(message);
  if (!(await doneBy(exited, deadline))) await worker.terminate();
}
