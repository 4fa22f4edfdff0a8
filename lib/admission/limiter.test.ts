import { afterEach, describe, expect, it, vi } from "vitest";
import { DomainError } from "../errors.ts";
import { Limiter, type LimiterOptions, type Permit } from "./limiter.ts";

function limiter(options: Partial<LimiterOptions> = {}): Limiter {
  return new Limiter({ permits: 1, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 5, ...options });
}

/** Lets every already-settled promise callback run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(promise: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { settled: () => settled, promise };
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected the promise to reject");
}

afterEach(() => {
  vi.useRealTimers();
});

describe("Limiter", () => {
  it("refuses to be built without at least one slot", () => {
    expect(() => limiter({ permits: 0 })).toThrow(RangeError);
  });

  it("grants up to `permits` permits at once and makes the next caller wait", async () => {
    const l = limiter({ permits: 3 });
    await Promise.all([l.acquire(), l.acquire(), l.acquire()]);
    expect(l.stats).toEqual({ permits: 3, inUse: 3, queued: 0 });

    const fourth = track(l.acquire());
    await flush();
    expect(fourth.settled()).toBe(false);
    expect(l.stats).toEqual({ permits: 3, inUse: 3, queued: 1 });
  });

  it("hands a released slot to the waiter that queued first", async () => {
    const l = limiter({ permits: 1 });
    const held = await l.acquire();
    const order: string[] = [];
    const first = l.acquire().then((p) => (order.push("first"), p));
    const second = l.acquire().then((p) => (order.push("second"), p));
    const third = l.acquire().then((p) => (order.push("third"), p));

    held.release();
    (await first).release();
    (await second).release();
    (await third).release();

    expect(order).toEqual(["first", "second", "third"]);
    expect(l.stats).toEqual({ permits: 1, inUse: 0, queued: 0 });
  });

  it("does not let a newcomer jump ahead of queued waiters when a slot frees up", async () => {
    const l = limiter({ permits: 1 });
    const held = await l.acquire();
    const waiter = track(l.acquire());
    held.release();
    // The slot went to the waiter, so a fresh caller has to queue behind it.
    const newcomer = track(l.acquire());
    await flush();
    expect(waiter.settled()).toBe(true);
    expect(newcomer.settled()).toBe(false);
    expect(l.stats).toEqual({ permits: 1, inUse: 1, queued: 1 });
  });

  it("interleaves jobs that re-acquire a slot for every window, so none is starved", async () => {
    const l = limiter({ permits: 1 });
    const steps: string[] = [];
    const job = async (name: string, windows: number): Promise<void> => {
      for (let w = 0; w < windows; w++) {
        await l.run(async () => {
          steps.push(`${name}${w}`);
          await flush();
        });
      }
    };

    await Promise.all([job("a", 3), job("b", 3)]);
    expect(steps).toEqual(["a0", "b0", "a1", "b1", "a2", "b2"]);

    // With three jobs a last-in-first-out or barging queue would starve one; FIFO takes turns.
    steps.length = 0;
    await Promise.all([job("a", 2), job("b", 2), job("c", 2)]);
    expect(steps).toEqual(["a0", "b0", "c0", "a1", "b1", "c1"]);
  });

  it("refuses at once with rate_limited when the queue is full", async () => {
    const l = limiter({ permits: 1, queueSize: 1, retryAfterSeconds: () => 0.2 });
    await l.acquire();
    void l.acquire(); // fills the queue

    const err = await rejectionOf(l.acquire());

    expect(err).toBeInstanceOf(DomainError);
    expect(err).toMatchObject({ code: "rate_limited", retryable: true });
    // A sub-second or zero estimate still tells the client to wait at least a second.
    expect((err as DomainError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(l.stats.queued).toBe(1);
  });

  it("refuses at once when the queue size is zero and every permit is taken", async () => {
    const l = limiter({ permits: 1, queueSize: 0 });
    await l.acquire();
    await expect(l.acquire()).rejects.toMatchObject({ code: "rate_limited" });
  });

  it("rounds a fractional Retry-After estimate up to whole seconds", async () => {
    const l = limiter({ permits: 1, queueSize: 0, retryAfterSeconds: () => 7.2 });
    await l.acquire();
    await expect(l.acquire()).rejects.toMatchObject({ retryAfterSeconds: 8 });
  });

  it.each([Number.NaN, Number.POSITIVE_INFINITY])("suggests a whole number of seconds when the estimate is %d", async (estimate) => {
    const l = limiter({ permits: 1, queueSize: 0, retryAfterSeconds: () => estimate });
    await l.acquire();
    const err = (await rejectionOf(l.acquire())) as DomainError;
    expect(Number.isInteger(err.retryAfterSeconds)).toBe(true);
    expect(err.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(err.message).toMatch(new RegExp(`Retry after ${err.retryAfterSeconds} s\\.$`));
  });

  it("refuses a waiter with rate_limited when the queue timeout passes, and frees its place", async () => {
    vi.useFakeTimers();
    const l = limiter({ permits: 1, queueSize: 1, queueTimeoutMs: 1_000 });
    const held = await l.acquire();
    const waiting = l.acquire();
    const outcome = rejectionOf(waiting);

    await vi.advanceTimersByTimeAsync(999);
    expect(l.stats.queued).toBe(1);
    await vi.advanceTimersByTimeAsync(1);

    const err = await outcome;
    expect(err).toMatchObject({ code: "rate_limited" });
    expect((err as DomainError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(l.stats).toEqual({ permits: 1, inUse: 1, queued: 0 });

    // The timed-out waiter must not be handed the slot later.
    held.release();
    expect(l.stats).toEqual({ permits: 1, inUse: 0, queued: 0 });
  });

  it("does not time out a waiter that was granted a slot before the timeout", async () => {
    vi.useFakeTimers();
    const l = limiter({ permits: 1, queueTimeoutMs: 1_000 });
    const held = await l.acquire();
    const waiting = l.acquire();
    await vi.advanceTimersByTimeAsync(500);
    held.release();
    const permit = await waiting;

    await vi.advanceTimersByTimeAsync(5_000);
    expect(l.stats).toEqual({ permits: 1, inUse: 1, queued: 0 });
    permit.release();
    expect(l.stats.inUse).toBe(0);
  });

  it("removes an aborted waiter, rejects with the abort reason and frees its queue place", async () => {
    const l = limiter({ permits: 1, queueSize: 1 });
    const held = await l.acquire();
    const controller = new AbortController();
    const waiting = l.acquire(controller.signal);
    await expect(l.acquire()).rejects.toMatchObject({ code: "rate_limited" });

    const reason = new Error("client went away");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(l.stats.queued).toBe(0);

    // Its place in the queue is free again, and the slot goes to the new waiter, not the aborted one.
    const next = track(l.acquire());
    expect(l.stats.queued).toBe(1);
    held.release();
    await flush();
    expect(next.settled()).toBe(true);
    expect(l.stats).toEqual({ permits: 1, inUse: 1, queued: 0 });
  });

  it("rejects at once when the signal is already aborted, without taking a slot", async () => {
    const l = limiter({ permits: 1 });
    const controller = new AbortController();
    const reason = new Error("already gone");
    controller.abort(reason);
    // acquire() throws synchronously here; callers always await it, which turns that into a rejection.
    await expect((async () => l.acquire(controller.signal))()).rejects.toBe(reason);
    expect(l.stats).toEqual({ permits: 1, inUse: 0, queued: 0 });
  });

  it("ignores an abort that arrives after the slot was granted", async () => {
    const l = limiter({ permits: 1 });
    const controller = new AbortController();
    const permit = await l.acquire(controller.signal);
    controller.abort(new Error("late"));
    expect(l.stats).toEqual({ permits: 1, inUse: 1, queued: 0 });
    permit.release();
    expect(l.stats.inUse).toBe(0);
  });

  it("treats releasing a permit twice as a no-op", async () => {
    const l = limiter({ permits: 2 });
    const a = await l.acquire();
    const b = await l.acquire();
    const waiter = track(l.acquire());

    a.release();
    await flush();
    expect(waiter.settled()).toBe(true);
    expect(l.stats).toEqual({ permits: 2, inUse: 2, queued: 0 });

    a.release();
    expect(l.stats).toEqual({ permits: 2, inUse: 2, queued: 0 });
    b.release();
    b.release();
    (await waiter.promise).release();
    expect(l.stats).toEqual({ permits: 2, inUse: 0, queued: 0 });
    // A double release must not have created an extra slot.
    const permits: Permit[] = [await l.acquire(), await l.acquire()];
    const third = track(l.acquire());
    await flush();
    expect(third.settled()).toBe(false);
    permits.forEach((p) => p.release());
  });

  it("reports inUse and queued accurately as permits come and go", async () => {
    const l = limiter({ permits: 2 });
    expect(l.stats).toEqual({ permits: 2, inUse: 0, queued: 0 });
    const a = await l.acquire();
    expect(l.stats).toEqual({ permits: 2, inUse: 1, queued: 0 });
    const b = await l.acquire();
    const c = l.acquire();
    const d = l.acquire();
    expect(l.stats).toEqual({ permits: 2, inUse: 2, queued: 2 });
    a.release();
    expect(l.stats).toEqual({ permits: 2, inUse: 2, queued: 1 });
    b.release();
    expect(l.stats).toEqual({ permits: 2, inUse: 2, queued: 0 });
    (await c).release();
    expect(l.stats).toEqual({ permits: 2, inUse: 1, queued: 0 });
    (await d).release();
    expect(l.stats).toEqual({ permits: 2, inUse: 0, queued: 0 });
  });

  it("run() returns the function's result and releases the slot", async () => {
    const l = limiter({ permits: 1 });
    await expect(l.run(async () => 42)).resolves.toBe(42);
    expect(l.stats.inUse).toBe(0);
  });

  it("run() releases the slot when the function throws, passing the error on", async () => {
    const l = limiter({ permits: 1 });
    const boom = new Error("boom");
    await expect(
      l.run(async () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(l.stats).toEqual({ permits: 1, inUse: 0, queued: 0 });
    // The slot is really usable again.
    await expect(l.run(async () => "next")).resolves.toBe("next");
  });

  it("run() does not call the function when the wait is aborted", async () => {
    const l = limiter({ permits: 1 });
    const held = await l.acquire();
    const controller = new AbortController();
    const fn = vi.fn(async () => "ran");
    const running = l.run(fn, controller.signal);
    controller.abort(new Error("cancelled"));
    await expect(running).rejects.toThrow("cancelled");
    held.release();
    await flush();
    expect(fn).not.toHaveBeenCalled();
    expect(l.stats.inUse).toBe(0);
  });
});
