import { describe, expect, it, vi } from "vitest";
import { EmbeddedLeaseStore } from "./embedded-lease-store.ts";
import { LeaseLine } from "./lease-line.ts";
import { LeaseStoreUnavailable, type LeaseStore } from "./ports.ts";

const LATER = () => Date.now() + 60_000;

/** The order in which the waiters' promises settle, by name. */
function settledOrder(waiters: Record<string, Promise<unknown>>): string[] {
  const order: string[] = [];
  for (const [name, p] of Object.entries(waiters))
    void p.then(
      () => order.push(name),
      () => order.push(name),
    );
  return order;
}

describe("LeaseLine", () => {
  it("gives freed leases to the longest waiting here, never to a newcomer ahead of them", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    const line = new LeaseLine(store, "here");
    const held = (await line.tryNow("first"))!;
    const a = line.acquire("a", LATER());
    const b = line.acquire("b", LATER());
    expect(line.waiting).toBe(2);
    const order = settledOrder({ a, b });

    await held.release();
    const leaseA = (await a)!;
    // A newcomer while b waits: b has waited longer.
    const c = line.acquire("c", LATER());
    const newcomer = settledOrder({ c });
    await leaseA.release();
    const leaseB = (await b)!;
    expect(order).toEqual(["a", "b"]);
    expect(newcomer).toEqual([]);
    expect((await store.snapshot()).instances[0]!.jobs).toEqual(["b"]);
    await leaseB.release();
    await (await c)!.release();
    expect(line.waiting).toBe(0);
  });

  it("takes a lease another instance gives back, asking the store for its first waiter only", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    const asked = vi.spyOn(store, "tryAcquire");
    const line = new LeaseLine(store, "here");
    const elsewhere = (await store.tryAcquire({ instance: "other", job: "theirs" }))!;
    const waiters = ["a", "b", "c"].map((job) => line.acquire(job, LATER()));
    await vi.waitFor(() => expect(asked.mock.calls.length).toBeGreaterThan(3));
    // Every request to the store while the cap is full is the first waiter's.
    expect(new Set(asked.mock.calls.slice(1).map(([holder]) => holder.job))).toEqual(new Set(["a"]));

    await elsewhere.release();
    const lease = (await waiters[0])!;
    expect((await store.snapshot()).instances).toEqual([{ instance: "here", held: 1, jobs: ["a"], fetching: [] }]);
    await lease.release();
    await (await waiters[1])!.release();
    await (await waiters[2])!.release();
  });

  it("does not let tryNow cut the line: a lease freed elsewhere goes to the one waiting", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    const line = new LeaseLine(store, "here");
    const elsewhere = (await store.tryAcquire({ instance: "other", job: "theirs" }))!;
    const waiting = line.acquire("waiting", LATER());
    // Freed without waking the line: the waiter has not asked again yet, and a delivery that would
    // take it now is refused.
    await elsewhere.release();
    expect(await line.tryNow("delivery")).toBeNull();
    await (await waiting)!.release();
    expect(await line.tryNow("delivery")).not.toBeNull();
  });

  it("answers null at a waiter's deadline, and the one behind it keeps its turn", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    const line = new LeaseLine(store, "here");
    const held = (await line.tryNow("first"))!;
    const impatient = line.acquire("impatient", Date.now() + 150);
    const patient = line.acquire("patient", LATER());
    expect(await impatient).toBeNull();
    expect(line.waiting).toBe(1);
    await held.release();
    expect((await patient)?.id).toEqual(expect.any(String));
  });

  it("rejects a waiter whose signal aborts with its reason, and serves the next", async () => {
    const store = new EmbeddedLeaseStore({ cap: 1 });
    const line = new LeaseLine(store, "here");
    const held = (await line.tryNow("first"))!;
    const controller = new AbortController();
    const gone = line.acquire("gone", LATER(), controller.signal);
    const next = line.acquire("next", LATER());
    controller.abort(new Error("client left"));
    await expect(gone).rejects.toThrow("client left");
    await held.release();
    const lease = (await next)!;
    expect((await store.snapshot()).instances[0]!.jobs).toEqual(["next"]);
    await lease.release();
    expect(line.waiting).toBe(0);
  });

  it("rejects every waiter with the store's error when it cannot be reached", async () => {
    let reachable = true;
    const inner = new EmbeddedLeaseStore({ cap: 1 });
    const store: LeaseStore = {
      ...inner,
      kind: "upstash",
      snapshot: () => inner.snapshot(),
      holdWhileFetching: (h) => inner.holdWhileFetching(h),
      revoke: (job) => inner.revoke(job),
      close: () => inner.close(),
      tryAcquire: async (h) => {
        if (!reachable) throw new LeaseStoreUnavailable("Redis is down");
        return inner.tryAcquire(h);
      },
    };
    const line = new LeaseLine(store, "here");
    await line.tryNow("first");
    const waiters = [line.acquire("a", LATER()), line.acquire("b", LATER())];
    reachable = false;
    for (const w of waiters) await expect(w).rejects.toBeInstanceOf(LeaseStoreUnavailable);
    expect(line.waiting).toBe(0);
  });
});
