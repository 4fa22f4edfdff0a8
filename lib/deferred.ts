/**
 * A promise with its resolve and reject at hand, for outcomes settled by events. Its rejection is
 * marked handled: whoever needs the outcome awaits it, and an outcome nobody asked for (a stream only
 * iterated, a process only stopped) must not become an unhandled rejection.
 */
export function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * Whether `work` is done before `deadline` passes: true once it is, false when the deadline passes
 * first (at once if it already has). Nothing is cut off here; that is the caller's to do.
 */
export async function doneBy(work: Promise<unknown>, deadline: AbortSignal): Promise<boolean> {
  if (deadline.aborted) return false;
  let passed!: () => void;
  const deadlinePassed = new Promise<false>((resolve) => (passed = () => resolve(false)));
  deadline.addEventListener("abort", passed, { once: true });
  try {
    return await Promise.race([work.then(() => true), deadlinePassed]);
  } finally {
    deadline.removeEventListener("abort", passed);
  }
}
