import { existsSync, statSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Redis } from "@upstash/redis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startRedisServer, type RedisServer } from "../../test/support/redis-server.ts";
import { startUpstashRestBridge, type UpstashRestBridge } from "../../test/support/upstash-rest-bridge.ts";
import type { Command } from "../cluster/redis.ts";
import { StoreUnavailable } from "../errors.ts";
import { FileBlobs, RedisBlobs, removeUnclaimed } from "./blobs.ts";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

const shm = "/dev/shm";
const otherFilesystem = existsSync(shm) && statSync(shm).dev !== statSync(tmpdir()).dev;

describe("uploads no job claims", () => {
  it("are removed, by name, and the claimed ones kept", async () => {
    const inputs = await mkdtemp(join(tmpdir(), "blobs-inputs-"));
    dirs.push(inputs);
    for (const name of ["job_kept", "job_orphan1", "job_orphan2"]) await writeFile(join(inputs, name), "audio");
    // A claim written under another working directory, with a relative DATA_DIR.
    expect(await removeUnclaimed(inputs, ["data/inputs/job_kept"])).toBe(2);
    expect(await readdir(inputs)).toEqual(["job_kept"]);
    expect(await removeUnclaimed(join(inputs, "missing"), [])).toBe(0);
  });
});

describe.skipIf(!otherFilesystem)("FileBlobs across filesystems", () => {
  it("moves a file from another filesystem into place and consumes the original", async () => {
    const source = await mkdtemp(join(tmpdir(), "blobs-src-"));
    const inputs = await mkdtemp(join(shm, "blobs-inputs-"));
    dirs.push(source, inputs);
    const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    await writeFile(join(source, "upload"), bytes);

    const stored = await new FileBlobs(inputs).save("job_1", join(source, "upload"), { filename: "a.wav", bytes: bytes.length });

    expect(stored).toEqual({ kind: "upload", path: join(inputs, "job_1"), filename: "a.wav", bytes: bytes.length });
    expect((await readFile(join(inputs, "job_1"))).equals(bytes)).toBe(true);
    expect(await readdir(source)).toEqual([]);
  });
});

describe("RedisBlobs against a real redis-server behind the Upstash REST bridge", () => {
  const TOKEN = "blobs-test-token";
  let server: RedisServer | undefined;
  let bridge: UpstashRestBridge | undefined;

  beforeAll(async () => {
    server = await startRedisServer();
    bridge = await startUpstashRestBridge({ redisPort: server.port, token: TOKEN });
  });

  afterEach(() => bridge?.setAvailable(true));

  afterAll(async () => {
    await bridge?.stop();
    await server?.stop();
  });

  const client = () => new Redis({ url: bridge!.url, token: TOKEN, retry: { retries: 0 } });

  async function upload(bytes: Buffer): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "blobs-redis-"));
    dirs.push(dir);
    await writeFile(join(dir, "upload"), bytes);
    return join(dir, "upload");
  }

  it("keeps a complete upload for as long as it was told, and one cut short for an hour at most", async () => {
    const real = client();
    const week = 7 * 86_400_000;
    const stored = await new RedisBlobs(real, week, { prefix: "test:keep:" }).save("job_kept", await upload(Buffer.alloc(1_200_000, 1)), { filename: "a.wav", bytes: 1_200_000 });
    for (const key of [stored.kind === "blob" ? stored.key : "", "test:keep:blob:job_kept:0", "test:keep:blob:job_kept:2"]) {
      expect(await real.pttl(key), key).toBeGreaterThan(week - 60_000);
    }
    // The store fails as the upload ends: the clean-up cannot reach it either.
    let down = false;
    const failing = new Proxy(real, {
      get: (target, property, receiver) =>
        property === "exec"
          ? (command: Command) => {
              if (command[0].startsWith("EVAL")) down = true;
              return down ? Promise.reject(new Error("fetch failed")) : target.exec(command);
            }
          : Reflect.get(target, property, receiver),
    });
    await expect(
      new RedisBlobs(failing, week, { prefix: "test:keep:" }).save("job_cut", await upload(Buffer.alloc(1_200_000, 2)), { filename: "a.wav", bytes: 1_200_000 }),
    ).rejects.toMatchObject({
      code: "unavailable",
    });
    const left = await real.keys("test:keep:blob:job_cut*");
    expect(left).toHaveLength(3);
    for (const key of left) expect(await real.pttl(key), key).toBeLessThanOrEqual(3_600_000);
  });

  it("refuses an upload a chunk of which expired before it was complete, leaving nothing", async () => {
    const real = client();
    // As if the copy took longer than a chunk lives while the upload is written: one is gone at the commit.
    const slow = new Proxy(real, {
      get: (target, property, receiver) =>
        property === "exec"
          ? async (command: Command) => {
              if (command[0].startsWith("EVAL")) await target.exec(["DEL", "test:expired:blob:job_slow:1"]);
              return target.exec(command);
            }
          : Reflect.get(target, property, receiver),
    });
    await expect(
      new RedisBlobs(slow, 60_000, { prefix: "test:expired:" }).save("job_slow", await upload(Buffer.alloc(1_200_000, 3)), { filename: "a.wav", bytes: 1_200_000 }),
    ).rejects.toMatchObject({
      code: "unavailable",
    });
    expect(await real.keys("test:expired:*")).toEqual([]);
  });

  it("keeps an upload in chunks that any instance reads back whole, until it is removed", async () => {
    const bytes = Buffer.from(Array.from({ length: 1_200_000 }, (_, i) => (i * 7) % 256));
    const path = await upload(bytes);

    const stored = await new RedisBlobs(client(), 60_000, { prefix: "test:blobs:" }).save("job_1", path, { filename: "a.wav", bytes: bytes.length });

    expect(stored).toEqual({ kind: "blob", key: "test:blobs:blob:job_1", filename: "a.wav", bytes: bytes.length });
    expect(existsSync(path)).toBe(false);
    const other = new RedisBlobs(client(), 60_000, { prefix: "test:blobs:" });
    const scratch = await mkdtemp(join(tmpdir(), "blobs-scratch-"));
    dirs.push(scratch);
    expect((await readFile(await other.localPath(stored, scratch))).equals(bytes)).toBe(true);
    await other.remove(stored);
    await expect(other.localPath(stored, scratch)).rejects.toMatchObject({ code: "not_found", retryable: false });
    expect(await client().keys("test:blobs:*")).toEqual([]);
  });

  // 1.2 MB is three chunks, then the header and the chunks' expiry in one script: four writes.
  const WRITES = new Set(["SET", "EVALSHA", "EVAL"]);
  it.each([
    ["a chunk", 2],
    ["the header", 4],
  ])("leaves nothing in Redis when a write of %s fails partway through the upload", async (_part, failingSet) => {
    const real = client();
    let sets = 0;
    // Redis refusing one write, as it refuses a write over maxmemory, after the ones before it landed.
    const failing = new Proxy(real, {
      get: (target, property, receiver) =>
        property === "exec"
          ? (command: Command) =>
              WRITES.has(command[0]) && ++sets === failingSet ? Promise.reject(new Error("OOM command not allowed when used memory > 'maxmemory'.")) : target.exec(command)
          : Reflect.get(target, property, receiver),
    });
    const path = await upload(Buffer.alloc(1_200_000, 7));

    await expect(new RedisBlobs(failing, 60_000, { prefix: "test:partial:" }).save(`job_${failingSet}`, path, { filename: "a.wav", bytes: 1_200_000 })).rejects.toMatchObject({
      code: "unavailable",
      message: "shared upload store unreachable",
    });
    expect(sets).toBe(failingSet);
    expect(await real.keys(`test:partial:blob:job_${failingSet}*`)).toEqual([]);
    expect(existsSync(path)).toBe(false);
  });

  it("reports an unreachable or silent store as StoreUnavailable on every operation", async () => {
    const blobs = new RedisBlobs(client(), 60_000, { prefix: "test:down:" });
    const stored = await blobs.save("job_2", await upload(Buffer.from("audio")), { filename: "a.wav", bytes: 5 });
    bridge!.setAvailable(false);

    const unavailable = { code: "unavailable", retryable: true, retryAfterSeconds: 5, message: "shared upload store unreachable" };
    await expect(blobs.save("job_3", await upload(Buffer.from("audio")), { filename: "a.wav", bytes: 5 })).rejects.toMatchObject(unavailable);
    await expect(blobs.localPath(stored, tmpdir())).rejects.toBeInstanceOf(StoreUnavailable);
    await expect(blobs.remove(stored)).rejects.toMatchObject(unavailable);

    // Accepts the request and never answers, like a Redis endpoint stuck behind a dead proxy.
    const silent = createServer(() => {});
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    try {
      const stalled = new Redis({ url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, token: TOKEN, retry: { retries: 0 } });
      await expect(new RedisBlobs(stalled, 60_000, { requestTimeoutMs: 200 }).localPath(stored, tmpdir())).rejects.toMatchObject({
        ...unavailable,
        cause: { message: "no reply within 200 ms" },
      });
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });
});
