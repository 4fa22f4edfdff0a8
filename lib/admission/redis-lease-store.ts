import { randomUUID } from "node:crypto";
import type { Redis } from "@upstash/redis";
import { capacityOf, type Holder } from "./embedded-lease-store.ts";
import { RedisCalls, script, type Script } from "../cluster/redis.ts";
import { LeaseStoreUnavailable, type ClusterCapacity, type LeaseHolder, type TranscriptionLease, type LeaseStore } from "./ports.ts";

export interface RedisLeaseStoreOptions {
  /** Transcriptions at once across the cluster. Every instance must be configured with the same value. */
  cap: number;
  /** How long a lease lives without renewal, i.e. how long a crashed instance's leases stay taken. */
  leaseTtlMs?: number;
  /** Renewal period; keep it well under leaseTtlMs (a third) so one failed renewal is survivable. */
  heartbeatMs?: number;
  keyPrefix?: string;
  /** This service instance's name, written into every lease it takes. */
  instance: string;
  /** Upper bound on one Redis call, whatever the client's own retry settings. */
  requestTimeoutMs?: number;
  /** Told of every Redis call that failed. */
  onFailure?: () => void;
}

// Expiries are compared against the Redis server's clock only, so instances whose clocks disagree
// still agree on which leases are live. Since Redis 5 scripts replicate by effects, so calling
// TIME before writing is allowed.
const NOW = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
`;

// A lease whose expiry is <= now is dead; every script agrees on that boundary. KEYS[1] holds the
// transcription leases (the ones the cap counts), KEYS[3] the fetch holds; KEYS[2] both's holders.
const PURGE_EXPIRED = `
for _, set in ipairs({KEYS[1], KEYS[3]}) do
  local expired = redis.call('ZRANGEBYSCORE', set, '-inf', now)
  if #expired > 0 then
    redis.call('ZREM', set, unpack(expired))
    redis.call('HDEL', KEYS[2], unpack(expired))
  end
end
`;

/** ARGV: lease id, cap, ttl ms, instance, job. Returns the lease id, or nil at the cap. */
const ACQUIRE = `${NOW}${PURGE_EXPIRED}
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return false end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({instance = ARGV[4], job = ARGV[5], acquiredAt = now}))
return ARGV[1]
`;

/** ARGV: lease id, ttl ms, instance, job. A fetch hold: counted by no cap, so always taken. */
const HOLD = `${NOW}${PURGE_EXPIRED}
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({instance = ARGV[3], job = ARGV[4], acquiredAt = now, fetching = true}))
return ARGV[1]
`;

/**
 * ARGV: lease id, ttl ms, "fetching" for a fetch hold. Returns 1 if extended, 0 if the lease is
 * gone. An expired lease is never revived: its slot may already have been counted as free and
 * handed to someone else.
 */
const RENEW = `${NOW}
local set = ARGV[3] == 'fetching' and KEYS[3] or KEYS[1]
local expiry = redis.call('ZSCORE', set, ARGV[1])
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', set, ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', set, 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
`;

/** ARGV: lease id. */
const RELEASE = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`;

/** KEYS[1]: the cap's key. ARGV: this instance's cap. Returns the cap written there before (nil if none). */
const ANNOUNCE_CAP = `
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return previous
`;

/** ARGV: job. Ends every lease and fetch hold held for the job; returns how many. */
const REVOKE = `
local entries = redis.call('HGETALL', KEYS[2])
local revoked = 0
for i = 1, #entries, 2 do
  local ok, holder = pcall(cjson.decode, entries[i + 1])
  if ok and type(holder) == 'table' and holder.job == ARGV[1] then
    redis.call('ZREM', KEYS[1], entries[i])
    redis.call('ZREM', KEYS[3], entries[i])
    redis.call('HDEL', KEYS[2], entries[i])
    revoked = revoked + 1
  end
end
return revoked
`;

/** Returns the holder JSON of every live lease and fetch hold. */
const SNAPSHOT = `${NOW}${PURGE_EXPIRED}
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do table.insert(ids, id) end
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
`;

interface StoredHolder extends Holder {
  acquiredAt: number;
}

const SCRIPTS = {
  acquire: script(ACQUIRE),
  hold: script(HOLD),
  renew: script(RENEW),
  release: script(RELEASE),
  revoke: script(REVOKE),
  announceCap: script(ANNOUNCE_CAP),
  snapshot: script(SNAPSHOT),
};

/** What a lease needs from its store, so the lease cannot reach anything else. */
interface LeaseOwner {
  readonly leaseTtlMs: number;
  readonly heartbeatMs: number;
  renew(id: string): Promise<boolean>;
  release(id: string): Promise<void>;
  forget(lease: RedisLease): void;
}

/**
 * Cluster-wide transcription leases in Redis (Upstash REST via @upstash/redis): a sorted set of lease
 * ids scored by expiry in server milliseconds (`<prefix>slots:leases`) and a hash of lease id ->
 * `{instance, job, acquiredAt}` (`<prefix>slots:holders`); the keys keep their first name, so
 * instances of every version share one set. Fetch holds (holdWhileFetching) live in a set of their
 * own (`<prefix>slots:fetching`), which the cap does not count, with `fetching: true` in the hash.
 * Each operation is one Lua script, so purge, count and insert are atomic across instances. Held
 * leases are renewed every heartbeatMs; a crashed instance stops renewing and its leases free
 * themselves after leaseTtlMs.
 *
 * Requests go through RedisCalls (construct the client as it says): each is cut off after
 * requestTimeoutMs, and any failure is reported as LeaseStoreUnavailable.
 *
 * A failed acquire never leaves a lease that anyone renews. If the script did run but its reply
 * was lost (timeout, dropped connection), the lease exists unowned and counts against the cap until
 * it expires, at most leaseTtlMs later.
 *
 * Round trips (see `roundTrips`): acquire 1, each renewal 1, release 1, snapshot 1; the first use
 * of a script against a Redis that has not cached it costs one more (EVALSHA answered NOSCRIPT,
 * then EVAL). A job holding a slot for d ms costs at most 2 + floor(d / heartbeatMs).
 */
export class RedisLeaseStore implements LeaseStore {
  readonly kind = "upstash";
  private readonly cap: number;
  private readonly leaseTtlMs: number;
  private readonly heartbeatMs: number;
  private readonly instance: string;
  private readonly keys: string[];
  private readonly capKey: string;
  private readonly redis: RedisCalls;
  private readonly leases = new Set<RedisLease>();
  /** For transcription leases, and for fetch holds (renewed in their own set). */
  private readonly owners: Record<"transcribing" | "fetching", LeaseOwner>;
  private closed = false;

  constructor(redis: Redis, options: RedisLeaseStoreOptions) {
    this.cap = positiveInteger("cap", options.cap);
    this.leaseTtlMs = positiveInteger("leaseTtlMs", options.leaseTtlMs ?? 15_000);
    this.heartbeatMs = positiveInteger("heartbeatMs", options.heartbeatMs ?? 5_000);
    const requestTimeoutMs = positiveInteger("requestTimeoutMs", options.requestTimeoutMs ?? 2_000);
    if (!options.instance) throw new RangeError("instance must be a non-empty string");
    this.instance = options.instance;
    const prefix = options.keyPrefix ?? "slotscribe:";
    this.keys = [`${prefix}slots:leases`, `${prefix}slots:holders`, `${prefix}slots:fetching`];
    this.capKey = `${prefix}slots:cap`;
    this.redis = new RedisCalls(redis, { store: "Redis lease store", requestTimeoutMs, unavailable: LeaseStoreUnavailable, onFailure: options.onFailure });
    const owner = (kind: "transcribing" | "fetching"): LeaseOwner => ({
      leaseTtlMs: this.leaseTtlMs,
      heartbeatMs: this.heartbeatMs,
      renew: async (id) => (await this.call<number>(SCRIPTS.renew, [id, String(this.leaseTtlMs), kind])) === 1,
      release: async (id) => {
        await this.call(SCRIPTS.release, [id]);
      },
      forget: (lease) => this.leases.delete(lease),
    });
    this.owners = { transcribing: owner("transcribing"), fetching: owner("fetching") };
  }

  /** Redis requests this store has sent, for reporting round trips per job. */
  get roundTrips(): number {
    return this.redis.roundTrips;
  }

  tryAcquire(holder: LeaseHolder): Promise<TranscriptionLease | null> {
    return this.take("transcribing", holder, (id) => [id, String(this.cap), String(this.leaseTtlMs), holder.instance, holder.job]);
  }

  async holdWhileFetching(holder: LeaseHolder): Promise<TranscriptionLease> {
    return (await this.take("fetching", holder, (id) => [id, String(this.leaseTtlMs), holder.instance, holder.job]))!;
  }

  private async take(kind: "transcribing" | "fetching", holder: LeaseHolder, args: (id: string) => string[]): Promise<TranscriptionLease | null> {
    if (this.closed) throw new LeaseStoreUnavailable("Redis lease store is closed");
    if (holder.instance !== this.instance) {
      throw new Error(`holder instance ${holder.instance} is not this store's instance ${this.instance}`);
    }
    const id = randomUUID();
    const sentAt = performance.now();
    const reply = await this.call<string | null>(kind === "fetching" ? SCRIPTS.hold : SCRIPTS.acquire, args(id));
    if (reply === null) return null;
    if (reply !== id) throw this.redis.unavailable(`unexpected acquire reply ${JSON.stringify(reply)}`);
    const lease = new RedisLease(id, sentAt, this.owners[kind]);
    if (this.closed) {
      // close() ran while this acquire was in flight and could not hand the slot back itself.
      await lease.surrender();
      throw new LeaseStoreUnavailable("Redis lease store is closed");
    }
    this.leases.add(lease);
    return lease;
  }

  /**
   * Writes this instance's cap where every instance writes its own, and returns the one written
   * before (by the instance that started last): each instance enforces its own, so instances that
   * disagree let more transcriptions run than the lowest says. Null when none was written.
   */
  async announceCap(): Promise<number | null> {
    const previous = await this.redis.eval<string | number | null>(SCRIPTS.announceCap, [this.capKey], [String(this.cap)]);
    return previous === null ? null : Number(previous);
  }

  revoke(job: string): Promise<number> {
    return this.call<number>(SCRIPTS.revoke, [job]);
  }

  async snapshot(): Promise<ClusterCapacity> {
    const reply = await this.call<unknown[]>(SCRIPTS.snapshot, []);
    const holders = reply.flatMap((entry) => {
      // The SDK parses JSON replies by default; with automaticDeserialization off they stay strings.
      const parsed: unknown = typeof entry === "string" ? JSON.parse(entry) : entry;
      return isStoredHolder(parsed) ? [parsed] : [];
    });
    holders.sort((a, b) => a.acquiredAt - b.acquiredAt);
    return capacityOf(this.cap, holders);
  }

  /** Stops every heartbeat and hands held leases back now rather than after their TTL. */
  async close(): Promise<void> {
    this.closed = true;
    const held = [...this.leases];
    // A failed release only means the slot frees itself at expiry instead.
    await Promise.allSettled(held.map((lease) => lease.surrender()));
  }

  private call<T>(target: Script, args: string[]): Promise<T> {
    return this.redis.eval<T>(target, this.keys, args);
  }
}

class RedisLease implements TranscriptionLease {
  readonly lost: Promise<void>;
  private signalLost: () => void = () => {};
  private held = true;
  private heartbeat: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    readonly id: string,
    sentAt: number,
    private readonly owner: LeaseOwner,
  ) {
    this.lost = new Promise((resolve) => {
      this.signalLost = resolve;
    });
    this.confirmed(sentAt);
    this.scheduleHeartbeat();
  }

  async release(): Promise<void> {
    this.stop();
    await this.owner.release(this.id);
  }

  /** Gives the slot up from the store's side: the holder learns through `lost`. */
  async surrender(): Promise<void> {
    this.markLost();
    await this.owner.release(this.id);
  }

  private scheduleHeartbeat(): void {
    this.heartbeat = setTimeout(() => void this.renew(), this.owner.heartbeatMs).unref();
  }

  private async renew(): Promise<void> {
    const sentAt = performance.now();
    let alive: boolean;
    try {
      alive = await this.owner.renew(this.id);
    } catch {
      // Keep trying; the deadline alone decides when failures have lasted too long.
      if (this.held) this.scheduleHeartbeat();
      return;
    }
    if (!this.held) return;
    if (!alive) return this.markLost();
    this.confirmed(sentAt);
    this.scheduleHeartbeat();
  }

  /**
   * Redis set the new expiry no earlier than the request left, so the lease lives at least until
   * sentAt + ttl; past that without a confirmed renewal it may be gone. Measured on the local
   * monotonic clock, which only has to agree with the server's on the length of a TTL.
   */
  private confirmed(sentAt: number): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => this.markLost(), sentAt + this.owner.leaseTtlMs - performance.now()).unref();
  }

  private markLost(): void {
    if (!this.held) return;
    this.stop();
    this.signalLost();
  }

  private stop(): void {
    this.held = false;
    clearTimeout(this.heartbeat);
    clearTimeout(this.deadline);
    this.owner.forget(this);
  }
}

function positiveInteger(name: string, value: number): number {
  // setTimeout treats anything above 2^31 - 1 ms as 1 ms.
  if (!Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1) {
    throw new RangeError(`${name} must be a positive integer of at most 2^31 - 1, got ${value}`);
  }
  return value;
}

function isStoredHolder(value: unknown): value is StoredHolder {
  if (typeof value !== "object" || value === null) return false;
  const { instance, job, acquiredAt, fetching } = value as Record<string, unknown>;
  return typeof instance === "string" && typeof job === "string" && typeof acquiredAt === "number" && (fetching === undefined || fetching === true);
}
