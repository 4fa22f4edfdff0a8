import { createHash } from "node:crypto";
import type { Redis } from "@upstash/redis";
import { describe, expect, it } from "vitest";
import { eventually, upstashRedis } from "../../test/support/upstash-redis.ts";
import { DomainError } from "../errors.ts";
import type { Segment, Transcript } from "../transcript.ts";
import { describeJobStore, makeJob, RETENTION_MS } from "../../test/support/job-store-behaviour.ts";
import type { JobRecord } from "./ports.ts";
import { UpstashJobStore, type UpstashJobStoreOptions } from "./upstash-job-store.ts";

const TOKEN = "job-store-test-token";

describe("UpstashJobStore against a real redis-server behind the Upstash REST bridge", () => {
  const stores: UpstashJobStore[] = [];
  const { restApi, client, prefix } = upstashRedis(TOKEN, async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
  });
  const store = (options: Partial<UpstashJobStoreOptions> = {}) => {
    const created = new UpstashJobStore({ redis: client(), retentionMs: RETENTION_MS, keyPrefix: prefix(), ...options });
    stores.push(created);
    return created;
  };
  const jobKey = (id: string) => `${prefix()}job:${id}`;

  describeJobStore("UpstashJobStore", {
    open: async () => store(),
    // Another client on the same keys, as another instance of the service would be.
    reopen: async () => store(),
    peers: async (first) => [first, store()],
  });
  const index = (name: string) => `${prefix()}jobs:${name}`;

  it("keeps a created job in its hash, its idempotency key and its indexes, with no TTL while unfinished", async () => {
    await store().create(makeJob("job_a", { idempotencyKey: "key-a" }));

    const redis = client();
    expect(await redis.hget(jobKey("job_a"), "v")).toBe(1);
    expect(await redis.pttl(jobKey("job_a"))).toBe(-1);
    expect(await redis.get(`${prefix()}idempotency:key-a`)).toBe("job_a");
    expect(await redis.zrange(index("by-created"), 0, -1)).toEqual(["job_a"]);
    expect(await redis.zrange(index("status:queued"), 0, -1)).toEqual(["job_a"]);
    expect(await store().get("job_a:chunk:x:0")).toBeNull();
  });

  it("accepts every kind of input the embedded store accepts and refuses a malformed one", async () => {
    const jobs = store();
    const blob = makeJob("job_blob", { input: { kind: "blob", key: "slotscribe:blob:job_blob", filename: "a.wav", bytes: 10 } });
    const upload = makeJob("job_upload", { input: { kind: "upload", path: "/data/inputs/job_upload", filename: "a.wav", bytes: 10 } });

    expect((await jobs.create(blob)).created).toBe(true);
    expect((await jobs.create(upload)).created).toBe(true);
    expect(await jobs.get("job_blob")).toEqual(blob);
    const malformed = { ...makeJob("job_bad"), input: { kind: "url" } } as unknown as JobRecord;
    await expect(jobs.create(malformed)).rejects.toMatchObject({ code: "internal" });
  });

  it("bumps the version once per update, however many instances race", async () => {
    const instances = [store(), store()];
    await instances[0]!.create(makeJob("job_a"));

    await Promise.all(Array.from({ length: 50 }, (_, i) => instances[i % 2]!.update("job_a", (job) => ({ ...job, runs: job.runs + 1 }))));

    expect(await client().hget(jobKey("job_a"), "v")).toBe(51);
    const trips = instances[0]!.roundTrips + instances[1]!.roundTrips;
    console.log(`50 contended updates from two instances took ${trips} round trips (2 each without conflicts)`);
  });

  it("has Redis expire a finished job and its idempotency key at its expiresAt, and sweep() then cleans its index entries", async () => {
    const retentionMs = 1500;
    const jobs = store({ retentionMs });
    await jobs.create(makeJob("job_a", { idempotencyKey: "k", createdAt: new Date().toISOString() }));
    const redis = client();
    expect(await redis.pttl(jobKey("job_a"))).toBe(-1);
    expect(await redis.pttl(`${prefix()}idempotency:k`)).toBe(-1);

    const finishedAt = Date.now();
    const finished = await jobs.update("job_a", (job) => ({ ...job, status: "succeeded", finishedAt: new Date(finishedAt).toISOString() }));

    const expiresAt = finishedAt + retentionMs;
    expect(finished?.expiresAt).toBe(new Date(expiresAt).toISOString());
    for (const key of [jobKey("job_a"), `${prefix()}idempotency:k`]) {
      expect(await redis.exec(["PEXPIRETIME", key])).toBe(expiresAt);
    }
    expect(await jobs.sweep(new Date(expiresAt - 1))).toBe(0);

    await eventually(async () => (await jobs.get("job_a")) === null);
    expect(await redis.exists(jobKey("job_a"), `${prefix()}idempotency:k`)).toBe(0);
    expect(await redis.zcard(index("by-created"))).toBe(1);
    expect((await jobs.list({ limit: 10 })).jobs).toEqual([]);

    expect(await jobs.sweep(new Date(expiresAt))).toBe(1);
    for (const name of ["by-created", "status:succeeded", "expiring", "callback-pending"]) {
      expect(await redis.zcard(index(name))).toBe(0);
    }
    expect(await jobs.sweep(new Date(expiresAt))).toBe(0);
    expect((await jobs.create(makeJob("job_b", { idempotencyKey: "k" }))).created).toBe(true);
  });

  it("stores a 5 MB transcript in chunks under a 64 KiB request limit and reads it back identical", async () => {
    const maxValueBytes = 64 * 1024;
    const traffic = { largestRequest: 0, largestReply: 0 };
    const writer = store({ maxValueBytes, redis: measured(client(), traffic) });
    const reader = store({ maxValueBytes, redis: measured(client(), traffic) });
    const transcript = bigTranscript(50_000);
    expect(JSON.stringify(transcript).length).toBeGreaterThan(5_000_000);
    await writer.create(makeJob("job_big", { createdAt: new Date().toISOString() }));

    const finishedAt = new Date().toISOString();
    await writer.update("job_big", (job) => ({ ...job, status: "succeeded", finishedAt, result: transcript }));

    const redis = client();
    const chunks = await redis.keys(`${jobKey("job_big")}:chunk:*`);
    expect(chunks.length).toBeGreaterThan(1);
    for (const key of chunks) {
      expect(await redis.strlen(key)).toBeLessThanOrEqual(maxValueBytes);
      expect(await redis.pttl(key)).toBeGreaterThan(RETENTION_MS - 5_000);
    }
    expect((await reader.get("job_big"))?.result).toEqual(transcript);
    // Digests from here on: a deep comparison of 50k segments takes most of a second each.
    expect(digest((await reader.list({ limit: 10 })).jobs[0]?.result)).toBe(digest(transcript));

    // An update that leaves the result alone keeps its chunks: it reads them for the change, uploads none.
    const before = writer.roundTrips;
    const delivered = await writer.update("job_big", (job) => ({ ...job, callback: { webhookId: "msg", state: "delivered", attempts: [] } }));
    expect(writer.roundTrips - before).toBe(2 + chunks.length);
    expect((await redis.keys(`${jobKey("job_big")}:chunk:*`)).sort()).toEqual(chunks.sort());
    const reread = await reader.get("job_big");
    expect({ ...reread, result: undefined }).toEqual({ ...delivered, result: undefined });
    expect(digest(reread?.result)).toBe(digest(delivered?.result));

    // A replaced result replaces the chunks.
    const shorter = bigTranscript(20_000);
    await writer.update("job_big", (job) => ({ ...job, result: shorter }));
    const replaced = await redis.keys(`${jobKey("job_big")}:chunk:*`);
    expect(replaced.some((key) => chunks.includes(key))).toBe(false);
    expect(digest((await reader.get("job_big"))?.result)).toBe(digest(shorter));

    // A chunk lost while the job did not change is reported, never papered over with a partial result.
    await redis.del(replaced[0]!);
    await expect(reader.get("job_big")).rejects.toMatchObject({ code: "internal", message: expect.stringContaining("is missing") });

    // Replies arrive base64-encoded, so they count 4/3 of their JSON size.
    expect(traffic.largestRequest).toBeLessThanOrEqual(maxValueBytes);
    expect(Math.ceil((traffic.largestReply * 4) / 3)).toBeLessThanOrEqual(maxValueBytes);
    console.log(`5 MB transcript: ${chunks.length} chunks; largest request ${traffic.largestRequest} B, largest reply ${traffic.largestReply} B decoded`);
  });

  it("throws DomainError unavailable while Redis is unreachable and works again once it is back", async () => {
    const jobs = store();
    await jobs.create(makeJob("job_a"));
    restApi().setAvailable(false);

    const unavailable = { code: "unavailable", message: "job store unreachable", retryAfterSeconds: 5 };
    await expect(jobs.get("job_a")).rejects.toMatchObject(unavailable);
    await expect(jobs.create(makeJob("job_b"))).rejects.toMatchObject(unavailable);
    await expect(jobs.update("job_a", (job) => ({ ...job, runs: 1 }))).rejects.toMatchObject(unavailable);
    await expect(jobs.list({ limit: 10 })).rejects.toMatchObject(unavailable);
    await expect(jobs.unfinished()).rejects.toMatchObject(unavailable);
    await expect(jobs.sweep(new Date())).rejects.toMatchObject(unavailable);
    await expect(jobs.get("job_a")).rejects.toBeInstanceOf(DomainError);

    restApi().setAvailable(true);
    expect(await eventually(() => jobs.get("job_a"))).toEqual(makeJob("job_a"));
    expect((await jobs.create(makeJob("job_b"))).created).toBe(true);
    expect((await jobs.update("job_a", (job) => ({ ...job, runs: 1 })))?.runs).toBe(1);
  });

  it("costs one round trip per create and get and two per update once its scripts are cached", async () => {
    await client().exec(["SCRIPT", "FLUSH"]);
    const jobs = store();
    const cost = async (operation: () => Promise<unknown>) => {
      const before = jobs.roundTrips;
      await operation();
      return jobs.roundTrips - before;
    };
    const lifecycle = async (id: string) => ({
      create: await cost(() => jobs.create(makeJob(id))),
      get: await cost(() => jobs.get(id)),
      update: await cost(() => jobs.update(id, (job) => ({ ...job, status: "running", runs: 1 }))),
    });

    // Cold, each script's first EVALSHA is answered NOSCRIPT and followed by EVAL.
    expect(await lifecycle("job_cold")).toEqual({ create: 2, get: 2, update: 3 });
    const warm = await lifecycle("job_warm");

    expect(warm).toEqual({ create: 1, get: 1, update: 2 });
    console.log(`Redis round trips per operation: ${JSON.stringify(warm)}`);
  });
});

/** A transcript of pseudo-random words, so gzip cannot shrink it to almost nothing. */
function bigTranscript(segments: number): Transcript {
  const words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima"];
  let seed = 42;
  const next = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed;
  };
  const list: Segment[] = Array.from({ length: segments }, (_, id) => ({
    id,
    start: id * 2,
    end: id * 2 + 1.98,
    text: ` ${Array.from({ length: 6 }, () => words[next() % words.length]).join(" ")} ${next()}`,
    tokens: Array.from({ length: 5 }, () => next() % 51_865),
  }));
  return {
    task: "transcribe",
    language: "english",
    duration: segments * 2,
    text: list.map((segment) => segment.text).join(""),
    segments: list,
  };
}

function digest(value: unknown): string {
  return createHash("sha256")
    .update(JSON.stringify(value) ?? "undefined")
    .digest("hex");
}

/** The client, recording the size of every command it sends with exec and of every reply. */
function measured(redis: Redis, traffic: { largestRequest: number; largestReply: number }): Redis {
  const exec = redis.exec;
  redis.exec = async <T>(command: Parameters<typeof exec>[0]): Promise<T> => {
    traffic.largestRequest = Math.max(traffic.largestRequest, Buffer.byteLength(JSON.stringify(command)));
    const reply = await exec<T>(command);
    traffic.largestReply = Math.max(traffic.largestReply, Buffer.byteLength(JSON.stringify(reply ?? null)));
    return reply;
  };
  return redis;
}
