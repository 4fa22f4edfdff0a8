/**
 * What every JobStore does, whatever keeps the jobs. Each store's test file runs this suite with
 * its own harness and adds only what is particular to that store (files, Redis layout, limits).
 */
import { describe, expect, it } from "vitest";
import type { CallbackState, JobRecord, JobStatus, JobStore } from "../../lib/jobs/ports.ts";

export const RETENTION_MS = 60_000;

export interface JobStoreHarness {
  /** A store with no jobs, keeping finished ones RETENTION_MS by default. */
  open(): Promise<JobStore>;
  /**
   * The same jobs through another instance: the embedded store closed and opened again, as a
   * restarted process would, or a second Upstash client. Use the returned store from then on.
   */
  reopen(store: JobStore): Promise<JobStore>;
  /** Instances that may work on the same jobs at once: one embedded store, or two Upstash clients. */
  peers(store: JobStore): Promise<JobStore[]>;
}

export function makeJob(id: string, overrides: Partial<JobRecord> = {}): JobRecord {
  return {
    id,
    status: "queued",
    request: { model: "whisper-tiny.en", task: "transcribe", responseFormat: "json", callbackIncludeResult: false },
    input: { kind: "url", url: "https://example.com/audio.wav" },
    createdAt: "2025-01-01T00:00:00.000Z",
    runs: 0,
    progress: { doneSeconds: 0, totalSeconds: null },
    ...overrides,
  };
}

export function at(second: number): string {
  return new Date(Date.UTC(2025, 0, 1, 0, 0, second)).toISOString();
}

export function describeJobStore(name: string, harness: JobStoreHarness): void {
  describe(`${name}: JobStore behaviour`, () => {
    it("returns a created job from get() with its content intact, hands out copies, and null for an unknown id", async () => {
      const store = await harness.open();
      const job = makeJob("job_a", {
        idempotencyKey: "key-a",
        requestDigest: `sha256:${"ab".repeat(32)}`,
        input: { kind: "upload", path: "/x/in.wav", filename: "in.wav", bytes: 10 },
        request: { model: "m", task: "translate", responseFormat: "verbose_json", callbackIncludeResult: true, metadata: { customer: "Zoë", nested: { list: [1, "two", null] } } },
        callback: { webhookId: "msg_1", state: "pending", attempts: [{ at: at(4), status: null, latencyMs: 5 }] },
      });

      const created = await store.create(job);
      expect(created).toEqual({ job, created: true });
      created.job.status = "failed";
      const fetched = await store.get("job_a");
      expect(fetched).toEqual(job);
      fetched!.progress.doneSeconds = 99;
      expect(await store.get("job_a")).toEqual(job);
      const reopened = await harness.reopen(store);
      expect(await reopened.get("job_a")).toEqual(job);
      expect(await reopened.get("job_missing")).toBeNull();
    });

    it("returns the existing job for a repeated idempotency key, also through another instance", async () => {
      const store = await harness.open();
      const first = await store.create(makeJob("job_first", { idempotencyKey: "same" }));

      expect(await store.create(makeJob("job_second", { idempotencyKey: "same" }))).toEqual({ job: first.job, created: false });
      const other = await harness.reopen(store);
      expect(await other.create(makeJob("job_third", { idempotencyKey: "same" }))).toEqual({ job: first.job, created: false });
      expect(await other.get("job_second")).toBeNull();
      expect(await other.get("job_third")).toBeNull();
    });

    it("yields one job for 20 concurrent creates with the same idempotency key", async () => {
      const peers = await harness.peers(await harness.open());

      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => peers[i % peers.length]!.create(makeJob(`job_${i}`, { idempotencyKey: "race" }))));

      expect(results.filter((result) => result.created)).toHaveLength(1);
      expect(new Set(results.map((result) => result.job.id)).size).toBe(1);
      expect((await peers[0]!.list({ limit: 100 })).jobs).toHaveLength(1);
    });

    it("rejects a second job with an id that already exists", async () => {
      const store = await harness.open();
      await store.create(makeJob("job_a"));

      await expect(store.create(makeJob("job_a", { status: "failed" }))).rejects.toMatchObject({ code: "conflict" });
      expect(await store.get("job_a")).toEqual(makeJob("job_a"));
    });

    it("applies every one of 50 concurrent updates of one job", async () => {
      const store = await harness.open();
      await store.create(makeJob("job_a"));
      const peers = await harness.peers(store);

      const updates = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          peers[i % peers.length]!.update("job_a", (job) => ({ ...job, progress: { ...job.progress, doneSeconds: job.progress.doneSeconds + 1 } })),
        ),
      );

      expect(updates.every((job) => job !== null)).toBe(true);
      expect((await (await harness.reopen(store)).get("job_a"))?.progress.doneSeconds).toBe(50);
    });

    it("returns null when updating an absent job, keeps the job when a change throws, and refuses id or key changes", async () => {
      const store = await harness.open();
      await store.create(makeJob("job_a", { idempotencyKey: "k" }));

      expect(await store.update("job_missing", (job) => job)).toBeNull();
      await expect(
        store.update("job_a", (job) => {
          job.status = "failed";
          throw new Error("change failed");
        }),
      ).rejects.toThrow("change failed");
      await expect(store.update("job_a", (job) => ({ ...job, id: "job_b" }))).rejects.toMatchObject({ code: "internal" });
      await expect(store.update("job_a", (job) => ({ ...job, idempotencyKey: "other" }))).rejects.toMatchObject({ code: "internal" });
      await expect(store.update("job_a", (job) => ({ ...job, createdAt: "yesterday" }))).rejects.toMatchObject({ code: "internal" });
      expect(await store.get("job_a")).toEqual(makeJob("job_a", { idempotencyKey: "k" }));
      expect(await store.get("job_b")).toBeNull();
    });

    it("sets expiresAt to finishedAt plus the retention when a job finishes without one", async () => {
      const store = await harness.open();
      await store.create(makeJob("job_a", { createdAt: new Date().toISOString() }));
      const finishedAt = new Date();

      const finished = await store.update("job_a", (job) => ({ ...job, status: "succeeded", finishedAt: finishedAt.toISOString() }));

      expect(finished?.expiresAt).toBe(new Date(finishedAt.getTime() + RETENTION_MS).toISOString());
    });

    it("lists by status newest first and pages through every job exactly once", async () => {
      const store = await harness.open();
      const statuses: JobStatus[] = ["queued", "running", "succeeded", "failed", "canceled"];
      // Every third job shares its createdAt with the previous one, so paging must break ties by id.
      const all = Array.from({ length: 23 }, (_, i) =>
        makeJob(`job_${String(i).padStart(2, "0")}`, { createdAt: at(i - (i % 3 === 2 ? 1 : 0)), status: statuses[i % statuses.length] }),
      );
      // Created out of order: insertion order must not leak into list order.
      for (const job of [...all].reverse()) await store.create(job);

      const collect = async (status?: JobStatus): Promise<string[]> => {
        const ids: string[] = [];
        let cursor: string | undefined;
        for (;;) {
          const page = await store.list({ status, limit: 4, cursor });
          expect(page.jobs.length).toBeLessThanOrEqual(4);
          ids.push(...page.jobs.map((job) => job.id));
          if (page.nextCursor === null) return ids;
          cursor = page.nextCursor;
        }
      };

      const newestFirst = [...all].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id)).map((job) => job.id);
      expect(await collect()).toEqual(newestFirst);
      for (const status of statuses) {
        const listed = await collect(status);
        expect(listed).toEqual(newestFirst.filter((id) => all.find((job) => job.id === id)?.status === status));
        expect(listed.length).toBeGreaterThan(0);
      }
      // Finished jobs come back with the expiresAt the store gave them.
      expect((await store.list({ limit: 4 })).jobs[0]).toMatchObject({ ...all.find((job) => job.id === newestFirst[0]), expiresAt: expect.any(String) });
      expect(await store.list({ limit: 23 })).toMatchObject({ nextCursor: null });
      await expect(store.list({ limit: 4, cursor: "not-a-cursor" })).rejects.toMatchObject({ code: "invalid_request" });
      await expect(store.list({ limit: 0 })).rejects.toMatchObject({ code: "invalid_request" });
    });

    it("counts the jobs in a status, following every change of status", async () => {
      const store = await harness.open();
      for (const [i, status] of (["queued", "queued", "queued", "running", "succeeded"] as const).entries()) await store.create(makeJob(`job_${i}`, { status }));

      expect(await store.count("queued")).toBe(3);
      await store.update("job_0", (job) => ({ ...job, status: "running" }));
      await store.update("job_1", (job) => ({ ...job, status: "canceled" }));
      const counts = await Promise.all((["queued", "running", "succeeded", "failed", "canceled"] as const).map((status) => store.count(status)));
      expect(counts).toEqual([1, 2, 1, 0, 1]);
    });

    it("returns queued and running jobs oldest first from unfinished(), across more than one page of a scan", async () => {
      const store = await harness.open();
      await store.create(makeJob("job_running_new", { status: "running", createdAt: at(300) }));
      await store.create(makeJob("job_done", { status: "succeeded", createdAt: at(5) }));
      await store.create(makeJob("job_canceled", { status: "canceled", createdAt: at(1) }));
      const queued = Array.from({ length: 150 }, (_, i) => `job_queued_${String(i).padStart(3, "0")}`);
      for (const [i, id] of queued.entries()) await store.create(makeJob(id, { createdAt: at(10 + i) }));

      const reopened = await harness.reopen(store);
      expect((await reopened.unfinished()).map((job) => job.id)).toEqual([...queued, "job_running_new"]);

      await reopened.update("job_queued_000", (job) => ({ ...job, status: "running" }));
      await reopened.update("job_running_new", (job) => ({ ...job, status: "succeeded" }));
      expect((await reopened.unfinished()).map((job) => job.id)).toEqual(queued);
    });

    it("returns only jobs whose callback is pending from pendingCallbacks(), oldest first", async () => {
      const store = await harness.open();
      const callback = (state: "pending" | "delivered") => ({ webhookId: "msg", state, attempts: [] });
      await store.create(makeJob("job_pending_new", { status: "succeeded", createdAt: at(20), callback: callback("pending") }));
      await store.create(makeJob("job_pending_old", { status: "failed", createdAt: at(10), callback: callback("pending") }));
      await store.create(makeJob("job_delivered", { status: "succeeded", callback: callback("delivered") }));
      await store.create(makeJob("job_none"));

      expect((await store.pendingCallbacks()).map((job) => job.id)).toEqual(["job_pending_old", "job_pending_new"]);
      await store.update("job_pending_old", (job) => ({ ...job, callback: callback("delivered") }));
      expect((await store.pendingCallbacks()).map((job) => job.id)).toEqual(["job_pending_new"]);
    });

    it("sweeps finished jobs due by the given time and nothing else, whatever their expiresAt says of unfinished ones", async () => {
      const store = await harness.open();
      // In the future, so a store that also expires jobs by itself (Redis TTLs) has not done so yet.
      const sweepAt = Date.now() + 60_000;
      const due = (seconds: number) => new Date(sweepAt + seconds * 1000).toISOString();
      await store.create(makeJob("job_due", { status: "failed", expiresAt: due(-50), idempotencyKey: "due" }));
      await store.create(makeJob("job_due_now", { status: "canceled", expiresAt: due(0) }));
      await store.create(makeJob("job_later", { status: "succeeded", expiresAt: due(1) }));
      await store.create(makeJob("job_queued", { status: "queued", expiresAt: due(-99) }));
      await store.create(makeJob("job_running", { status: "running", expiresAt: due(-99) }));

      expect(await store.sweep(new Date(sweepAt))).toBe(2);

      expect(await store.get("job_due")).toBeNull();
      expect((await store.list({ limit: 10 })).jobs.map((job) => job.id).sort()).toEqual(["job_later", "job_queued", "job_running"]);
      expect(await store.sweep(new Date(sweepAt))).toBe(0);
      // The swept job's idempotency key is free again.
      expect((await store.create(makeJob("job_new", { idempotencyKey: "due" }))).created).toBe(true);
    });

    it("keeps a finished job past its expiresAt while its callback is still to be delivered, and sweeps it once that settles", async () => {
      const store = await harness.open();
      const past = new Date(Date.now() - 60_000).toISOString();
      const callback = (state: CallbackState["state"]): CallbackState => ({ webhookId: "msg_1", state, attempts: [] });
      await store.create(makeJob("job_calling_back", { status: "succeeded", expiresAt: past, callback: callback("pending") }));
      // A sweep due by now (a Redis TTL would have fired too, at expiresAt).
      expect(await store.sweep(new Date())).toBe(0);
      expect(await store.get("job_calling_back")).toMatchObject({ callback: { state: "pending" } });
      await store.update("job_calling_back", (job) => ({ ...job, callback: callback("delivered") }));
      await store.sweep(new Date());
      expect(await store.get("job_calling_back")).toBeNull();
    });

    it("forgets a job ended with expiresAt now at the next sweep, its idempotency key with it (a submission refused after its create)", async () => {
      const store = await harness.open();
      await store.create(makeJob("job_refused", { idempotencyKey: "refused" }));
      const now = new Date();
      await store.update("job_refused", (job) => ({ ...job, status: "failed", expiresAt: now.toISOString() }));
      expect(await store.sweep(now)).toBe(1);
      expect(await store.get("job_refused")).toBeNull();
      expect(await store.findByIdempotencyKey("refused")).toBeNull();
      expect((await store.list({ limit: 10 })).jobs).toEqual([]);
      expect(await store.count("failed")).toBe(0);
    });
  });
}
