import { DomainError } from "../errors.ts";

export interface LimiterOptions {
  /** Holders at once: windows in inference for the compute limiter, transcriptions for admission. */
  permits: number;
  /** Waiters beyond this are refused at once. Infinity for an unbounded FIFO (window scheduling). */
  queueSize: number;
  /** How long a waiter may wait before it is refused; Infinity to wait as long as it takes. */
  queueTimeoutMs: number;
  /** Seconds to suggest in Retry-After when refusing. */
  retryAfterSeconds: () => number;
}

/**
 * Retry-After when the estimate is no number (NaN from an average of nothing, Infinity from a division
 * by zero): a client still gets a wait it can act on, and the header a value it can parse.
 */
const FALLBACK_RETRY_AFTER_SECONDS = 5;

interface Waiter {
  grant: (permit: Permit) => void;
  reject: (err: unknown) => void;
  cleanup: () => void;
}

export interface Permit {
  release(): void;
}

export interface LimiterStats {
  permits: number;
  inUse: number;
  queued: number;
}

/**
 * A counting semaphore with a bounded FIFO queue. First come, first served matters: when jobs take
 * a slot per window and queue again for the next one, FIFO is what interleaves them fairly.
 */
export class Limiter {
  private inUse = 0;
  private readonly waiters: Waiter[] = [];

  constructor(private readonly options: LimiterOptions) {
    if (!(options.permits >= 1)) throw new RangeError("a limiter needs at least one permit");
  }

  get stats(): LimiterStats {
    return { permits: this.options.permits, inUse: this.inUse, queued: this.waiters.length };
  }

  /**
   * A permit now, or after waiting in line; DomainError rate_limited when the line is full or too slow.
   * A patient caller (an accepted async job, already bounded by the job queue) is never refused: it
   * waits its turn in the same line.
   */
  acquire(signal?: AbortSignal, { patient = false }: { patient?: boolean } = {}): Promise<Permit> {
    signal?.throwIfAborted();
    if (this.inUse < this.options.permits && this.waiters.length === 0) {
      this.inUse++;
      return Promise.resolve(this.permit());
    }
    if (!patient && this.waiters.length >= this.options.queueSize) {
      return Promise.reject(this.refusal("at capacity and the queue is full"));
    }
    return new Promise<Permit>((resolve, reject) => {
      const timer =
        !patient && Number.isFinite(this.options.queueTimeoutMs)
          ? setTimeout(() => {
              this.remove(waiter);
              reject(this.refusal("still at capacity after the whole queue timeout"));
            }, this.options.queueTimeoutMs)
          : undefined;
      const onAbort = () => {
        this.remove(waiter);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        grant: resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** A permit only if one is free right now and nobody is waiting for it. */
  tryAcquire(): Permit | null {
    if (this.inUse < this.options.permits && this.waiters.length === 0) {
      this.inUse++;
      return this.permit();
    }
    return null;
  }

  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const permit = await this.acquire(signal);
    try {
      return await fn();
    } finally {
      permit.release();
    }
  }

  private permit(): Permit {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const next = this.waiters.shift();
        if (next) {
          next.cleanup();
          next.grant(this.permit());
        } else {
          this.inUse--;
        }
      },
    };
  }

  private remove(waiter: Waiter): void {
    waiter.cleanup();
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private refusal(reason: string): DomainError {
    const estimate = this.options.retryAfterSeconds();
    const retryAfterSeconds = Number.isFinite(estimate) ? Math.max(1, Math.ceil(estimate)) : FALLBACK_RETRY_AFTER_SECONDS;
    return new DomainError("rate_limited", `Server is at capacity: ${reason}. Retry after ${retryAfterSeconds} s.`, {
      retryAfterSeconds,
    });
  }
}
