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
