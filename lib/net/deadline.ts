import { DomainError } from "../errors.ts";

/** One budget for the whole exchange, merged with the caller's signal. */
export class Deadline {
  readonly signal: AbortSignal;
  private readonly timer: NodeJS.Timeout;

  constructor(timeoutMs: number, hostname: string, callerSignal?: AbortSignal) {
    const controller = new AbortController();
    // Unref'd: a Response nobody reads must not hold the process open until the timeout.
    this.timer = setTimeout(() => {
      controller.abort(new DomainError("timeout", `Outbound request to ${hostname} timed out after ${timeoutMs} ms`));
    }, timeoutMs).unref();
    this.signal = callerSignal ? AbortSignal.any([controller.signal, callerSignal]) : controller.signal;
  }

  /** Runs `handler` on abort, at once if that already happened; returns the unsubscribe. */
  onAbort(handler: (reason: unknown) => void): () => void {
    const { signal } = this;
    if (signal.aborted) {
      handler(signal.reason);
      return () => {};
    }
    const listener = () => handler(signal.reason);
    signal.addEventListener("abort", listener, { once: true });
    return () => signal.removeEventListener("abort", listener);
  }

  /** DNS lookups cannot be cancelled, so they are raced against the deadline instead. */
  race<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolvePromise, reject) => {
      const stopWatching = this.onAbort(reject);
      promise.then(
        (value) => {
          stopWatching();
          resolvePromise(value);
        },
        (err: unknown) => {
          stopWatching();
          reject(err);
        },
      );
    });
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}
