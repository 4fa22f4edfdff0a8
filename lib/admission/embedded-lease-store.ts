import { randomUUID } from "node:crypto";
import { LeaseStoreUnavailable, type ClusterCapacity, type LeaseHolder, type TranscriptionLease, type LeaseStore } from "./ports.ts";

/**
 * Slots for a single process. With `cap: null` (the default) there is nothing cluster-wide to
 * bound, so every tryAcquire succeeds and the local limiter alone decides; a number caps this
 * process as if it were the whole cluster. Holders are kept only so snapshot() can show them.
 */
export class EmbeddedLeaseStore implements LeaseStore {
  readonly kind = "embedded";
  private readonly cap: number | null;
  private readonly holders = new Map<string, Holder>();
  private closed = false;

  constructor(options: { cap?: number | null } = {}) {
    const cap = options.cap ?? null;
    if (cap !== null && (!Number.isInteger(cap) || cap < 1)) {
      throw new RangeError(`cap must be a positive integer or null, got ${cap}`);
    }
    this.cap = cap;
  }

  async tryAcquire(holder: LeaseHolder): Promise<TranscriptionLease | null> {
    if (this.closed) throw new LeaseStoreUnavailable("embedded lease store is closed");
    const transcribing = [...this.holders.values()].filter((h) => !h.fetching).length;
    if (this.cap !== null && transcribing >= this.cap) return null;
    return this.lease({ instance: holder.instance, job: holder.job });
  }

  async holdWhileFetching(holder: LeaseHolder): Promise<TranscriptionLease> {
    if (this.closed) throw new LeaseStoreUnavailable("embedded lease store is closed");
    return this.lease({ instance: holder.instance, job: holder.job, fetching: true });
  }

  private lease(holder: Holder): TranscriptionLease {
    const id = randomUUID();
    this.holders.set(id, holder);
    return {
      id,
      // Nothing outside this process can take the lease away.
      lost: new Promise<void>(() => {}),
      release: async () => {
        this.holders.delete(id);
      },
    };
  }

  async revoke(job: string): Promise<number> {
    const revoked = [...this.holders].filter(([, holder]) => holder.job === job);
    for (const [id] of revoked) this.holders.delete(id);
    return revoked.length;
  }

  async snapshot(): Promise<ClusterCapacity> {
    return capacityOf(this.cap, [...this.holders.values()]);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.holders.clear();
  }
}

/** A lease's holder; `fetching` for a lease that counts against no cap (holdWhileFetching). */
export interface Holder extends LeaseHolder {
  fetching?: boolean;
}

/** Groups holders by instance; shared with the Redis store so both report capacity alike. */
export function capacityOf(cap: number | null, holders: readonly Holder[]): ClusterCapacity {
  const byInstance = new Map<string, { jobs: string[]; fetching: string[] }>();
  for (const { instance, job, fetching } of holders) {
    const held = byInstance.get(instance) ?? { jobs: [], fetching: [] };
    byInstance.set(instance, held);
    (fetching ? held.fetching : held.jobs).push(job);
  }
  const instances = [...byInstance].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([instance, { jobs, fetching }]) => ({ instance, held: jobs.length, jobs, fetching }));
  const held = instances.reduce((sum, i) => sum + i.held, 0);
  return {
    cap,
    held,
    // A cap lowered while leases were held can leave more holders than the cap.
    free: cap === null ? null : Math.max(0, cap - held),
    instances,
  };
}
