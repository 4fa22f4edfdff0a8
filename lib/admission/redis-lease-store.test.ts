import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "@upstash/redis";
import { describe, expect, it, vi } from "vitest";
import { eventually, GENEROUS_MS, upstashRedis } from "../../test/support/upstash-redis.ts";
import { LeaseStoreUnavailable, type TranscriptionLease } from "./ports.ts";
import { RedisLeaseStore, type RedisLeaseStoreOptions } from "./redis-lease-store.ts";

const TOKEN = "slot-store-test-token";

describe("RedisLeaseStore against a real redis-server behind the Upstash REST bridge", () => {
  const stores: RedisLeaseStore[] = [];
  const { restApi, client, prefix } = upstashRedis(TOKEN, async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
    vi.restoreAllMocks();
  });
  const store = (instance: string, options: Partial<RedisLeaseStoreOptions> = {}) => {
    const created = new RedisLeaseStore(client(), { cap: 3, instance, keyPrefix: prefix(), ...options });
    stores.push(created);
    return created;
  };
  const leasesKey = () => `${prefix()}slots:leases`;
  const holdersKey = () => `${prefix()}slots:holders`;
  const serverNowMs = async () => {
    const [seconds, micros] = await client().time();
    return seconds * 1000 + Math.floor(micros / 1000);
  };

  it("honours the cap across instances sharing one Redis: of 20 racing acquires exactly 3 win, and a release lets one more in", async () => {
    const instances = [store("a"), store("b"), store("c")];
    const attempts = Array.from({ length: 20 }, (_, i) => {
      const instance = instances[i % instances.length] as RedisLeaseStore;
      return instance.tryAcquire({ instance: String.fromCharCode(97 + (i % 3)), job: `job-${i}` });
    });
    const leases = (await Promise.all(attempts)).filter((lease): lease is TranscriptionLease => lease !== null);

    expect(leases).toHaveLength(3);
    expect(await client().zcard(leasesKey())).toBe(3);
    expect(await instances[0]?.snapshot()).toMatchObject({ cap: 3, held: 3, free: 0 });

    await leases[0]?.release();
    const [late] = instances;
    expect(await late?.tryAcquire({ instance: "a", job: "late" })).not.toBeNull();
    expect(await late?.tryAcquire({ instance: "a", job: "too-late" })).toBeNull();
  });

  it("frees a crashed instance's lease after its TTL so another instance can take it", async () => {
    // Never renews within the test and is never released: an instance that died holding a lease.
    const crashed = store("crashed", { cap: 1, leaseTtlMs: 300, heartbeatMs: 60_000 });
    const survivor = store("survivor", { cap: 1 });
    const acquiredAt = performance.now();
    expect(await crashed.tryAcquire({ instance: "crashed", job: "orphan" })).not.toBeNull();
    expect(await survivor.tryAcquire({ instance: "survivor", job: "early" })).toBeNull();

    const lease = await eventually(() => survivor.tryAcquire({ instance: "survivor", job: "reclaimed" }));
    const reclaimMs = Math.round(performance.now() - acquiredAt);
    console.log(`lease of a crashed holder (lease TTL 300 ms) reclaimed after ${reclaimMs} ms`);

    expect(lease.id).toEqual(expect.any(String));
    expect(await survivor.snapshot()).toMatchObject({
      held: 1,
      instances: [{ instance: "survivor", held: 1, jobs: ["reclaimed"], fetching: [] }],
    });
  });

  it("keeps a lease alive well past its TTL by renewing it on every heartbeat", async () => {
    const holder = store("holder", { cap: 1, leaseTtlMs: 300, heartbeatMs: 75 });
    const lease = await holder.tryAcquire({ instance: "holder", job: "long" });
    if (!lease) throw new Error("expected a lease");
    let lost = false;
    void lease.lost.then(() => (lost = true));

    await sleep(1_500);

    expect(lost).toBe(false);
    expect(await store("rival", { cap: 1 }).tryAcquire({ instance: "rival", job: "blocked" })).toBeNull();
    expect(await client().zscore(leasesKey(), lease.id)).toBeGreaterThan(await serverNowMs());
    await lease.release();
    expect(await client().zcard(leasesKey())).toBe(0);
  });

  it("reports instances, held and free counts and the job ids in a snapshot", async () => {
    const a = store("instance-a", { cap: 4 });
    const b = store("instance-b", { cap: 4 });
    await a.tryAcquire({ instance: "instance-a", job: "job-1" });
    await a.tryAcquire({ instance: "instance-a", job: "job-2" });
    await b.tryAcquire({ instance: "instance-b", job: "42" });

    const snapshot = await b.snapshot();
    expect(snapshot).toEqual({
      cap: 4,
      held: 3,
      free: 1,
      instances: [
        { instance: "instance-a", held: 2, jobs: expect.arrayContaining(["job-1", "job-2"]), fetching: [] },
        { instance: "instance-b", held: 1, jobs: ["42"], fetching: [] },
      ],
    });
    expect(await store("empty", { keyPrefix: `${prefix()}other:` }).snapshot()).toEqual({
      cap: 3,
      held: 0,
      free: 3,
      instances: [],
    });
  });

  it("takes fetch holds beyond the cap, shows them apart from leases, renews them, and frees a crashed holder's after its TTL", async () => {
    const a = store("instance-a", { cap: 1, leaseTtlMs: 300, heartbeatMs: 75 });
    const crashed = store("crashed", { cap: 1, leaseTtlMs: 300, heartbeatMs: 60_000 });
    const lease = await a.tryAcquire({ instance: "instance-a", job: "job-upload" });
    expect(lease).not.toBeNull();
    const renewed = await a.holdWhileFetching({ instance: "instance-a", job: "job-url" });
    await crashed.holdWhileFetching({ instance: "crashed", job: "job-orphan" });
    expect(await crashed.tryAcquire({ instance: "crashed", job: "over-cap" })).toBeNull();
    expect(await a.snapshot()).toEqual({
      cap: 1,
      held: 1,
      free: 0,
      instances: [
        { instance: "crashed", held: 0, jobs: [], fetching: ["job-orphan"] },
        { instance: "instance-a", held: 1, jobs: ["job-upload"], fetching: ["job-url"] },
      ],
    });

    // Past several TTLs: the renewed hold stays, the crashed instance's is gone.
    let lost = false;
    void renewed.lost.then(() => (lost = true));
    await sleep(1_000);
    expect(lost).toBe(false);
    expect((await a.snapshot()).instances).toEqual([{ instance: "instance-a", held: 1, jobs: ["job-upload"], fetching: ["job-url"] }]);

    await renewed.release();
    await lease!.release();
    expect(await a.snapshot()).toEqual({ cap: 1, held: 0, free: 1, instances: [] });
    expect(await client().zcard(`${prefix()}slots:fetching`)).toBe(0);
    expect(await client().hlen(holdersKey())).toBe(0);
  });

  it("revokes a job's lease and fetch hold from any instance: the room is free at once and each holder hears it at its next renewal", async () => {
    const holder = store("holder", { cap: 1, leaseTtlMs: 3_000, heartbeatMs: 75 });
    const canceler = store("canceler", { cap: 1 });
    const lease = (await holder.tryAcquire({ instance: "holder", job: "job-canceled" }))!;
    const hold = await holder.holdWhileFetching({ instance: "holder", job: "job-canceled" });
    const other = await holder.holdWhileFetching({ instance: "holder", job: "job-kept" });
    let lost = 0;
    void lease.lost.then(() => lost++);
    void hold.lost.then(() => lost++);
    void other.lost.then(() => lost++);

    expect(await canceler.revoke("job-canceled")).toBe(2);
    expect(await canceler.snapshot()).toEqual({ cap: 1, held: 0, free: 1, instances: [{ instance: "holder", held: 0, jobs: [], fetching: ["job-kept"] }] });
    expect(await canceler.tryAcquire({ instance: "canceler", job: "next" })).not.toBeNull();
    await vi.waitFor(() => expect(lost).toBe(2));
    await sleep(300);
    expect(lost).toBe(2);
    expect(await canceler.revoke("job-canceled")).toBe(0);
  });

  it("tells an instance the cap the one started before it announced", async () => {
    expect(await store("first", { cap: 3 }).announceCap()).toBeNull();
    expect(await store("second", { cap: 5 }).announceCap()).toBe(3);
    expect(await store("third", { cap: 5 }).announceCap()).toBe(5);
  });

  it("rejects with LeaseStoreUnavailable while Redis is unreachable, leaks no lease, and acquires again once it is back", async () => {
    const instance = store("cut-off", { cap: 1 });
    restApi().setAvailable(false);

    const failure = await instance.tryAcquire({ instance: "cut-off", job: "during-outage" }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(LeaseStoreUnavailable);
    expect((failure as LeaseStoreUnavailable).cause).toBeDefined();
    await expect(instance.snapshot()).rejects.toBeInstanceOf(LeaseStoreUnavailable);

    restApi().setAvailable(true);
    await eventually(async () => (await client().ping()) === "PONG");
    expect(await client().zcard(leasesKey())).toBe(0);
    expect(await client().hlen(holdersKey())).toBe(0);
    expect(await instance.tryAcquire({ instance: "cut-off", job: "after-outage" })).not.toBeNull();
  });

  it("times out a call that gets no reply and reports it as LeaseStoreUnavailable", async () => {
    // Accepts the request and never answers, like a Redis endpoint stuck behind a dead proxy.
    const silent = createServer(() => {});
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    try {
      const { port } = silent.address() as AddressInfo;
      const stalled = new Redis({ url: `http://127.0.0.1:${port}`, token: TOKEN, retry: { retries: 0 } });
      const instance = new RedisLeaseStore(stalled, { cap: 1, instance: "stalled", keyPrefix: prefix(), requestTimeoutMs: 200 });

      await expect(instance.tryAcquire({ instance: "stalled", job: "hangs" })).rejects.toMatchObject({
        name: "LeaseStoreUnavailable",
        cause: { message: "no reply within 200 ms" },
      });
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });

  it("resolves lost when a renewal finds the lease gone", async () => {
    const holder = store("holder", { leaseTtlMs: 5_000, heartbeatMs: 50 });
    const lease = await holder.tryAcquire({ instance: "holder", job: "evicted" });
    if (!lease) throw new Error("expected a lease");

    // As if an operator or a purge removed it: the holder must stop trusting its lease.
    await client().zrem(leasesKey(), lease.id);
    await client().hdel(holdersKey(), lease.id);

    await within(GENEROUS_MS, lease.lost);
  });

  it("resolves lost when renewals fail for longer than the TTL, and Redis frees the lease itself", async () => {
    const holder = store("holder", { cap: 1, leaseTtlMs: 400, heartbeatMs: 100 });
    const lease = await holder.tryAcquire({ instance: "holder", job: "partitioned" });
    if (!lease) throw new Error("expected a lease");

    restApi().setAvailable(false);
    await within(GENEROUS_MS, lease.lost);
    restApi().setAvailable(true);

    const rival = store("rival", { cap: 1 });
    expect(await eventually(() => rival.tryAcquire({ instance: "rival", job: "after-partition" }))).not.toBeNull();
  });

  it("takes expiry and acquiredAt from the Redis server clock, not the client's", async () => {
    const instance = store("skewed", { leaseTtlMs: 15_000 });
    // Only Date is faked: timers and the monotonic clock keep working, so the store still runs.
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2001-02-03T04:05:06Z"));
    try {
      const before = await serverNowMs();
      const lease = await instance.tryAcquire({ instance: "skewed", job: "clocked" });
      const after = await serverNowMs();
      if (!lease) throw new Error("expected a lease");

      const expiry = await client().zscore(leasesKey(), lease.id);
      expect(expiry).toBeGreaterThanOrEqual(before + 15_000);
      expect(expiry).toBeLessThanOrEqual(after + 15_000);
      const holder = await client().hget<{ acquiredAt: number }>(holdersKey(), lease.id);
      expect(holder?.acquiredAt).toBeGreaterThanOrEqual(before);
      expect(holder?.acquiredAt).toBeLessThanOrEqual(after);
      expect(Math.abs((expiry ?? 0) - (Date.now() + 15_000))).toBeGreaterThan(365 * 24 * 3_600_000);
    } finally {
      vi.useRealTimers();
    }
  });

  it("costs one round trip to acquire, one per heartbeat and one to release, plus one EVAL when the script cache is cold", async () => {
    const requests = vi.spyOn(globalThis, "fetch");
    await client().scriptFlush();
    const cold = store("cold");
    const sentBefore = requests.mock.calls.length;
    const coldLease = await cold.tryAcquire({ instance: "cold", job: "first" });
    expect(cold.roundTrips).toBe(2);
    expect(requests.mock.calls.length - sentBefore).toBe(2);
    await coldLease?.release();

    const warm = store("warm", { leaseTtlMs: 5_000, heartbeatMs: 100 });
    const start = requests.mock.calls.length;
    const lease = await warm.tryAcquire({ instance: "warm", job: "measured" });
    if (!lease) throw new Error("expected a lease");
    expect(warm.roundTrips).toBe(1);
    const firstExpiry = await client().zscore(leasesKey(), lease.id);

    await eventually(async () => warm.roundTrips >= 3);
    const renewedExpiry = await client().zscore(leasesKey(), lease.id);
    expect(renewedExpiry).toBeGreaterThan(firstExpiry ?? Infinity);

    const beforeRelease = warm.roundTrips;
    await lease.release();
    expect(warm.roundTrips).toBe(beforeRelease + 1);
    // The helper clients in this test also use fetch; the store's own requests all went to the bridge.
    const storeRequests = requests.mock.calls.slice(start).filter(([, init]) => {
      const body = String(init?.body);
      return body.includes(lease.id) && /"eval(sha)?"/i.test(body);
    });
    expect(storeRequests).toHaveLength(warm.roundTrips);
  });

  it("hands held leases back on close and tells their holders through lost", async () => {
    const closing = store("closing", { cap: 1 });
    const lease = await closing.tryAcquire({ instance: "closing", job: "shutdown" });
    if (!lease) throw new Error("expected a lease");

    await closing.close();

    await within(GENEROUS_MS, lease.lost);
    expect(await client().zcard(leasesKey())).toBe(0);
    await expect(closing.tryAcquire({ instance: "closing", job: "after-close" })).rejects.toBeInstanceOf(LeaseStoreUnavailable);
  });

  it("refuses a holder from another instance than the store's", async () => {
    await expect(store("mine").tryAcquire({ instance: "theirs", job: "x" })).rejects.toThrow(/not this store's instance/);
  });
});

async function within(ms: number, promise: Promise<void>): Promise<void> {
  const timeout = sleep(ms, "timeout" as const, { ref: false });
  const outcome = await Promise.race([promise.then(() => "done" as const), timeout]);
  expect(outcome).toBe("done");
}
