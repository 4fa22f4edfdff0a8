import { createReadStream } from "node:fs";
import { copyFile, open, readdir, rename, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Redis } from "@upstash/redis";
import { RedisCalls, script } from "../cluster/redis.ts";
import { DomainError } from "../errors.ts";
import type { JobInput } from "./ports.ts";

export type StoredInput = Exclude<JobInput, { kind: "url" }>;

/** Where uploaded audio waits for its job. */
export interface InputBlobs {
  /** Keeps the file at `path` (consumed: it may be moved) for job `jobId`. */
  save(jobId: string, path: string, meta: { filename: string; bytes: number }): Promise<StoredInput>;
  /** A local path holding the input; `scratchDir` is the caller's to use and remove. */
  localPath(input: StoredInput, scratchDir: string): Promise<string>;
  remove(input: StoredInput): Promise<void>;
}

/** One machine: uploads stay in DATA_DIR/inputs, where they survive a restart. */
export class FileBlobs implements InputBlobs {
  constructor(private readonly dir: string) {}

  async save(jobId: string, path: string, meta: { filename: string; bytes: number }): Promise<StoredInput> {
    const target = join(this.dir, jobId);
    try {
      await rename(path, target);
    } catch (err) {
      // The caller's file may be on another filesystem than DATA_DIR, where no rename reaches.
      if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
      await copyDurably(path, target);
      await rm(path, { force: true });
    }
    return { kind: "upload", path: target, ...meta };
  }

  async localPath(input: StoredInput): Promise<string> {
    if (input.kind !== "upload") throw new DomainError("internal", "this instance keeps uploads on disk, not in a shared store");
    return input.path;
  }

  async remove(input: StoredInput): Promise<void> {
    if (input.kind === "upload") await rm(input.path, { force: true });
  }
}

/**
 * Removes the files in `dir` no job claims: uploads stored by a process that died before it wrote
 * their job. Only while nothing else writes there (at start-up, before the first request).
 */
export async function removeUnclaimed(dir: string, claimed: Iterable<string>): Promise<number> {
  // By name (each is named after its job): a job written with a relative DATA_DIR under another
  // working directory still claims its file.
  const keep = new Set([...claimed].map((path) => basename(path)));
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const unclaimed = entries.filter((e) => e.isFile() && !keep.has(e.name));
  await Promise.all(unclaimed.map((e) => rm(join(dir, e.name), { force: true })));
  return unclaimed.length;
}

/** A copy that is on disk once this resolves; on failure nothing is left at `target`. */
async function copyDurably(source: string, target: string): Promise<void> {
  try {
    await copyFile(source, target);
    const handle = await open(target, "r+");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    await rm(target, { force: true });
    throw err;
  }
}

const CHUNK_BYTES = 512 * 1024;

/**
 * Chunks of an upload still being copied in live this long: an upload cut short where its clean-up
 * cannot reach Redis (the store failing, the instance killed) is gone within the hour.
 */
const WRITING_TTL_MS = 3_600_000;

/**
 * Writes the header of a complete upload and gives its chunks the same, long expiry; refuses when a
 * chunk is gone already (an upload slower than WRITING_TTL_MS), rather than accept a job that fails later.
 */
const COMMIT = script(`
for i = 0, tonumber(ARGV[2]) - 1 do
  if redis.call('PEXPIRE', KEYS[1] .. ':' .. i, ARGV[3]) == 0 then return redis.error_reply('chunk ' .. i .. ' expired before the upload was complete') end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`);

/**
 * Cluster mode: uploads live in Redis, in base64 chunks small enough for one Upstash request each,
 * so whichever instance QStash delivers the job to can read them (also after the instance that took
 * the upload died). Removed when the job ends; `keepMs` only bounds one whose job never does.
 */
export class RedisBlobs implements InputBlobs {
  readonly #redis: RedisCalls;
  readonly #keepMs: string;
  readonly #prefix: string;

  constructor(redis: Redis, keepMs: number, options: { prefix?: string; requestTimeoutMs?: number; onFailure?: () => void } = {}) {
    this.#redis = new RedisCalls(redis, { store: "shared upload store", requestTimeoutMs: options.requestTimeoutMs ?? 10_000, onFailure: options.onFailure });
    this.#keepMs = String(keepMs);
    this.#prefix = options.prefix ?? "slotscribe:";
  }

  async save(jobId: string, path: string, meta: { filename: string; bytes: number }): Promise<StoredInput> {
    const key = `${this.#prefix}blob:${jobId}`;
    let chunks = 0;
    try {
      for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES })) {
        await this.#redis.send(["SET", `${key}:${chunks++}`, (chunk as Buffer).toString("base64"), "PX", String(WRITING_TTL_MS)]);
      }
      await this.#redis.eval(COMMIT, [key], [JSON.stringify({ chunks, bytes: meta.bytes }), String(chunks), this.#keepMs]);
    } catch (err) {
      // The chunks written would otherwise stay for the hour, and each failed upload add to Redis's
      // memory. The write that failed is removed too: it may have landed with its answer lost.
      // Best effort, as the store itself may be what failed.
      await this.#redis.send(["DEL", key, ...Array.from({ length: chunks }, (_, i) => `${key}:${i}`)]).catch(() => undefined);
      throw err;
    } finally {
      await rm(path, { force: true });
    }
    return { kind: "blob", key, ...meta };
  }

  async localPath(input: StoredInput, scratchDir: string): Promise<string> {
    if (input.kind !== "blob") throw new DomainError("internal", "cluster instances keep uploads in the shared store, not on disk");
    const header = await this.#redis.send<{ chunks: number; bytes: number } | null>(["GET", input.key]);
    if (!header) throw new DomainError("not_found", "The job's uploaded audio has expired or was removed.");
    const path = join(scratchDir, "input");
    const file = await open(path, "w");
    try {
      for (let i = 0; i < header.chunks; i++) {
        const data = await this.#redis.send<string | null>(["GET", `${input.key}:${i}`]);
        if (data === null) throw new DomainError("not_found", "Part of the job's uploaded audio has expired.");
        await file.write(Buffer.from(data, "base64"));
      }
    } finally {
      await file.close();
    }
    return path;
  }

  async remove(input: StoredInput): Promise<void> {
    if (input.kind !== "blob") return;
    const header = await this.#redis.send<{ chunks: number } | null>(["GET", input.key]);
    const keys = [input.key, ...Array.from({ length: header?.chunks ?? 0 }, (_, i) => `${input.key}:${i}`)];
    await this.#redis.send(["DEL", ...keys]);
  }
}
