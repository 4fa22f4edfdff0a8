import { StoreUnavailable } from "../errors.ts";
/**
 * Cluster-wide concurrency slots. The local limiter bounds one instance by its memory and cores; a
 * SlotStore bounds the whole deployment. Embedded: one process, nothing to share. Upstash: leases in
 * Redis that expire unless renewed, so a crashed instance's slots come back by themselves.
 */
export interface SlotHolder {
  instance: string;
  /** Job or request id the slot is held for. */
  job: string;
}

export interface SlotLease {
  readonly id: string;
  /** Resolves when the lease was lost (expired before renewal, e.g. after a network cut). */
  readonly lost: Promise<void>;
  release(): Promise<void>;
}

export interface ClusterCapacity {
  /** Cluster-wide cap; null when the store imposes none beyond each instance's own. */
  cap: number | null;
  held: number;
  free: number | null;
  instances: { instance: string; held: number; jobs: string[] }[];
}

export interface SlotStore {
  readonly kind: "embedded" | "upstash";
  /** A lease, or null when the cluster is at its cap right now. Throws SlotStoreUnavailable when the store cannot be reached. */
  tryAcquire(holder: SlotHolder): Promise<SlotLease | null>;
  snapshot(): Promise<ClusterCapacity>;
  close(): Promise<void>;
}

export class SlotStoreUnavailable extends StoreUnavailable {
  constructor(message: string, cause?: unknown) {
    super(message, cause);
    this.name = "SlotStoreUnavailable";
  }
}
