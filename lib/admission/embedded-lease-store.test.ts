import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { EmbeddedLeaseStore } from "./embedded-lease-store.ts";
import { LeaseStoreUnavailable } from "./ports.ts";

describe("EmbeddedLeaseStore", () => {
  it("grants every acquire when it has no cluster cap, leaving the bound to the local limiter", async () => {
    const store = new EmbeddedLeaseStore();
    const leases = await Promise.all(Array.from({ length: 100 }, (_, i) => store.tryAcquire({ instance: "solo", job: `job-${i}` })));

    expect(leases.every((lease) => lease !== null)).toBe(true);
    expect(await store.snapshot()).toMatchObject({ cap: null, held: 100, free: null });
  });

  it("refuses beyond its cap until a lease is released", async () => {
    const store = new EmbeddedLeaseStore({ cap: 2 });
    const first = await store.tryAcquire({ instance: "solo", job: "a" });
    expect(await store.tryAcquire({ instance: "solo", job: "b" })).not.toBeNull();
    expect(await store.tryAcquire({ instance: "solo", job: "c" })).toBeNull();

    await first?.release();
    await first?.release();
    expect(await store.tryAcquire({ instance: "solo", job: "d" })).not.toBeNull();
    expect(await store.tryAcquire({ instance: "solo", job: "e" })).toBeNull();
  });

  it("reports holders grouped by instance, in acquisition order, with held and free counts", async () => {
    const store = new EmbeddedLeaseStore({ cap: 5 });
    await store.tryAcquire({ instance: "b", job: "job-1" });
    await store.tryAcquire({ instance: "a", job: "job-2" });
    await store.tryAcquire({ instance: "b", job: "job-3" });

    expect(await store.snapshot()).toEqual({
      cap: 5,
      held: 3,
      free: 2,
      instances: [
        { instance: "a", held: 1, jobs: ["job-2"], fetching: [] },
        { instance: "b", held: 2, jobs: ["job-1", "job-3"], fetching: [] },
      ],
    });
  });

  it("takes a fetch hold whatever the cap, and shows it apart from the leases the cap counts", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    const fetching = await store.holdWhileFetching({ instance: "a", job: "job-url" });
    const lease = await store.tryAcquire({ instance: "b", job: "job-upload" });
    expect(lease).not.toBeNull();
    expect(await store.holdWhileFetching({ instance: "b", job: "job-url-2" })).toBeDefined();
    expect(await store.tryAcquire({ instance: "a", job: "job-over-cap" })).toBeNull();
    expect(await store.snapshot()).toEqual({
      cap: 1,
      held: 1,
      free: 0,
      instances: [
        { instance: "a", held: 0, jobs: [], fetching: ["job-url"] },
        { instance: "b", held: 1, jobs: ["job-upload"], fetching: ["job-url-2"] },
      ],
    });
    await fetching.release();
    await lease!.release();
    expect(await store.snapshot()).toMatchObject({ held: 0, free: 1, instances: [{ instance: "b", held: 0, jobs: [], fetching: ["job-url-2"] }] });
  });

  it("revokes every lease and fetch hold held for a job, and only those", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    await store.tryAcquire({ instance: "a", job: "job-canceled" });
    await store.holdWhileFetching({ instance: "a", job: "job-canceled" });
    await store.holdWhileFetching({ instance: "a", job: "job-kept" });
    expect(await store.revoke("job-canceled")).toBe(2);
    expect(await store.snapshot()).toEqual({ cap: 1, held: 0, free: 1, instances: [{ instance: "a", held: 0, jobs: [], fetching: ["job-kept"] }] });
  });

  it("never resolves lost, since nothing outside the process can take a lease away", async () => {
    const lease = await new EmbeddedLeaseStore({ cap: 1 }).tryAcquire({ instance: "solo", job: "kept" });
    const outcome = await Promise.race([lease?.lost.then(() => "lost"), sleep(50, "held")]);
    expect(outcome).toBe("held");
  });

  it("refuses to acquire once closed", async () => {
    const store = new EmbeddedLeaseStore();
    await store.tryAcquire({ instance: "solo", job: "before" });
    await store.close();

    await expect(store.tryAcquire({ instance: "solo", job: "after" })).rejects.toBeInstanceOf(LeaseStoreUnavailable);
    expect(await store.snapshot()).toMatchObject({ held: 0, instances: [] });
  });

  it("rejects a cap that is not a positive integer", () => {
    expect(() => new EmbeddedLeaseStore({ cap: 0 })).toThrow(RangeError);
    expect(() => new EmbeddedLeaseStore({ cap: 1.5 })).toThrow(RangeError);
  });
});
