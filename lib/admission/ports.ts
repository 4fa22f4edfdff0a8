import { StoreUnavailable } from "../errors.ts";
/**
 * Transcriptions running at once across the deployment: each holds one lease while it runs. The
 * local limiters bound one instance by its memory and cores; a LeaseStore bounds the whole
 * deployment (CLUSTER_MAX_TRANSCRIPTIONS). Embedded: one process, nothing to share. Upstash: leases in
 * Redis that expire unless renewed, so a crashed instance's leases come back by themselves.
 */
export interface LeaseHolder {
  instance: string;
  /** Job or request id the lease is held for. */
  job: string;
}

export interface TranscriptionLease {
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
  /** `jobs` hold transcription leases; `fetching` hold leases that count against no cap (see holdWhileFetching). */
  instances: { instance: string; held: number; jobs: string[]; fetching: string[] }[];
}

/** Jobs some instance is running: transcribing, or fetching their media first. */
export function jobsHeld(capacity: ClusterCapacity): Set<string> {
  return new Set(capacity.instances.flatMap((i) => [...i.jobs, ...i.fetching]));
}

export interface LeaseStore {
  readonly kind: "embedded" | "upstash";
  /** A lease, or null when the cluster is at its cap right now. Throws LeaseStoreUnavailable when the store cannot be reached. */
  tryAcquire(holder: LeaseHolder): Promise<TranscriptionLease | null>;
  /**
   * A lease that counts against no cap, for a job's run while it fetches its media: other instances
   * see the run alive as a transcription lease shows it, while it holds no transcription place (a
   * slow media host would otherwise hold one of the cluster's for up to DOWNLOAD_TIMEOUT). Expires
   * unrenewed as that lease does. Throws LeaseStoreUnavailable when the store cannot be reached.
   */
  holdWhileFetching(holder: LeaseHolder): Promise<TranscriptionLease>;
  /**
   * Ends every lease and fetch hold held for `job`, whichever instance holds them (a job canceled
   * on another instance than the one running it): the holder learns through `lost` at its next
   * renewal, and the room is free for others at once. Returns how many there were.
   */
  revoke(job: string): Promise<number>;
  snapshot(): Promise<ClusterCapacity>;
  close(): Promise<void>;
}

export class LeaseStoreUnavailable extends StoreUnavailable {
  constructor(message: string, cause?: unknown) {
    super(message, cause);
    this.name = "LeaseStoreUnavailable";
  }
}
