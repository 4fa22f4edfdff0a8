import type { LeaseStore, TranscriptionLease } from "./ports.ts";

/** How often the line's first waiter asks the store again while the cluster is at its cap. */
const POLL_MS = 100;

interface Waiter {
  job: string;
  deadline: number;
  settle: (outcome: { lease: TranscriptionLease | null } | { error: unknown }) => void;
}

/**
 * This instance's line for cluster leases, first come first served. Only its first waiter asks the
 * store, every POLL_MS (with jitter) and at once when a lease of this instance's is given back, so
 * a freed lease is taken within a poll of being freed, by whoever has waited longest here, and the
 * store hears one request a poll from an instance, however many wait on it. (Waiters polling each
 * on its own, backing off, leave a freed lease idle until one of them looks again, and newcomers,
 * which look sooner, overtake them.) Between instances the first to ask wins: each instance's line
 * is fair, the cluster's is not ordered beyond that.
 */
export class LeaseLine {
  private readonly waiters: Waiter[] = [];
  private wake: (() => void) | null = null;
  private polling = false;

  constructor(
    private readonly store: LeaseStore,
    private readonly instance: string,
  ) {}

  /** Requests waiting here for a lease. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** A lease if one is free now and nobody here waits for one (the line is not cut); else null. */
  async tryNow(job: string): Promise<TranscriptionLease | null> {
    if (this.waiters.length > 0) return null;
    return this.given(await this.store.tryAcquire({ instance: this.instance, job }));
  }

  /**
   * A lease once this request's turn comes and one is free, or null if `deadline` (epoch ms) passes
   * first. Rejects with the store's error when it cannot be reached (every waiter then: none of
   * them would get a lease from it), or with the signal's reason.
   */
  async acquire(job: string, deadline: number, signal?: AbortSignal): Promise<TranscriptionLease | null> {
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        job,
        deadline,
        settle: (outcome) => {
          signal?.removeEventListener("abort", onAbort);
          if ("error" in outcome) reject(outcome.error);
          else resolve(outcome.lease);
        },
      };
      const onAbort = () => this.leave(waiter, { error: signal!.reason });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
      void this.poll();
    });
  }

  private leave(waiter: Waiter, outcome: Parameters<Waiter["settle"]>[0]): void {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return;
    this.waiters.splice(index, 1);
    waiter.settle(outcome);
    this.wake?.();
  }

  /** The first waiter's turn at the store, again and again, until nobody waits. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      while (this.waiters.length > 0) {
        const first = this.waiters[0]!;
        if (Date.now() >= first.deadline) {
          this.leave(first, { lease: null });
          continue;
        }
        let lease: TranscriptionLease | null;
        try {
          lease = await this.store.tryAcquire({ instance: this.instance, job: first.job });
        } catch (error) {
          for (const waiter of [...this.waiters]) this.leave(waiter, { error });
          break;
        }
        if (lease && this.waiters[0] !== first) {
          // Its waiter left meanwhile (deadline or signal): given back, and the next one asks at once
          // under its own name (the store records whom a lease is for).
          await lease.release().catch(() => undefined);
          continue;
        }
        if (lease) {
          this.waiters.shift();
          first.settle({ lease: this.given(lease) });
          continue;
        }
        await this.pause(Math.min(POLL_MS * (0.8 + Math.random() * 0.4), Math.max(0, first.deadline - Date.now())));
      }
    } finally {
      this.polling = false;
    }
  }

  /** Until `ms` pass or a lease of this instance's is given back, or a waiter leaves. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  /** The lease, whose release also wakes the line: the lease it gave back is free for the next waiter here. */
  private given(lease: TranscriptionLease | null): TranscriptionLease | null {
    if (!lease) return null;
    return {
      id: lease.id,
      lost: lease.lost,
      release: async () => {
        await lease.release();
        this.wake?.();
      },
    };
  }
}
