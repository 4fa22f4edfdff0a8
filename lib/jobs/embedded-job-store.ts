/**
 * A JobStore for a single machine: one JSON file per job under `<dataDir>/jobs/`, with every job
 * also held in memory. The files are the source of truth at start-up; memory serves reads after.
 *
 * Durability: a job file is only ever replaced whole (temp file, fsync, rename, fsync of the
 * directory), and no create or update resolves before that sequence finishes. So a process killed
 * at any instant, or a machine losing power, leaves each job either at its last acknowledged
 * version or at a newer one that was never acknowledged, never half-written. One process per
 * dataDir: two processes sharing one would overwrite each other's writes.
 */
import { open, readdir, readFile, realpath, rename, unlink } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { ensureDirectory } from "../directories.ts";
import { DomainError } from "../errors.ts";
import type { JobPage, JobRecord, JobStatus, JobStore } from "./ports.ts";
import { type DirectoryLock, lockDirectory } from "./directory-lock.ts";
import { PerKeyQueue } from "./per-key-queue.ts";
import { decodeCursor, encodeCursor, jobProblem, prepareForStorage, newestFirst, oldestFirst, removableAt } from "./records.ts";

export interface EmbeddedJobStoreOptions {
  dataDir: string;
  /** How long a finished job is kept when whoever finished it did not set expiresAt. */
  retentionMs: number;
  /** Told about job files that open() set aside instead of loading. */
  onWarning?: (message: string, cause?: unknown) => void;
}

/** Where the service keeps uploaded audio; sweep() deletes a job's upload along with the job. */
export function inputsDir(dataDir: string): string {
  return join(dataDir, "inputs");
}

const JOB_SUFFIX = ".json";
const TEMP_SUFFIX = ".json.tmp";
/** Ids become file names, so they may not hold separators, dots or anything a filesystem mangles. */

export class EmbeddedJobStore implements JobStore {
  readonly kind = "embedded" as const;
  readonly #dataDir: string;
  readonly #jobsDir: string;
  readonly #retentionMs: number;
  readonly #jobs = new Map<string, JobRecord>();
  readonly #idsByKey = new Map<string, string>();
  /** Creates not yet durable, by idempotency key, so a second create with the key waits for the first. */
  readonly #creating = new Map<string, Promise<void>>();
  readonly #queue = new PerKeyQueue();
  /** Resolved once at open, so a symlinked dataDir still contains its own uploads. */
  #realDataDir = "";
  #closed = false;
  #lock: DirectoryLock | null = null;

  private constructor(dataDir: string, retentionMs: number) {
    this.#dataDir = dataDir;
    this.#jobsDir = join(dataDir, "jobs");
    this.#retentionMs = retentionMs;
  }

  static async open(options: EmbeddedJobStoreOptions): Promise<EmbeddedJobStore> {
    if (!Number.isFinite(options.retentionMs) || options.retentionMs < 0) {
      throw new RangeError(`retentionMs must be a finite number >= 0, got ${options.retentionMs}`);
    }
    const store = new EmbeddedJobStore(resolve(options.dataDir), options.retentionMs);
    await ensureDirectory(store.#dataDir);
    store.#lock = await lockDirectory(store.#dataDir);
    try {
      await store.#load(options.onWarning ?? (() => {}));
    } catch (err) {
      await store.#lock.release();
      throw err;
    }
    return store;
  }

  async findByIdempotencyKey(key: string): Promise<JobRecord | null> {
    this.#assertOpen();
    await this.#creating.get(key)?.catch(() => undefined);
    const job = this.#jobs.get(this.#idsByKey.get(key) ?? "");
    return job ? structuredClone(job) : null;
  }

  async create(job: JobRecord): Promise<{ job: JobRecord; created: boolean }> {
    this.#assertOpen();
    const record = prepareForStorage(structuredClone(job), this.#retentionMs);
    const key = record.idempotencyKey;
    if (key !== undefined) {
      const pending = this.#creating.get(key);
      if (pending) {
        // If the first create failed there is no job for the key, and this call becomes the creator.
        await pending.catch(() => undefined);
        return this.create(job);
      }
      const existing = this.#jobs.get(this.#idsByKey.get(key) ?? "");
      if (existing) return { job: structuredClone(existing), created: false };
    }
    // Everything from the key check to registering the write runs without yielding, so two
    // concurrent creates with one key cannot both get past the check.
    const write = this.#queue.run(record.id, async () => {
      if (this.#jobs.has(record.id)) throw new DomainError("conflict", `job ${record.id} already exists`);
      await this.#persist(record);
      this.#jobs.set(record.id, record);
      if (key !== undefined) this.#idsByKey.set(key, record.id);
    });
    if (key === undefined) {
      await write;
    } else {
      this.#creating.set(key, write);
      try {
        await write;
      } finally {
        this.#creating.delete(key);
      }
    }
    return { job: structuredClone(record), created: true };
  }

  async get(id: string): Promise<JobRecord | null> {
    const job = this.#jobs.get(id);
    return job ? structuredClone(job) : null;
  }

  update(id: string, change: (job: JobRecord) => JobRecord): Promise<JobRecord | null> {
    this.#assertOpen();
    return this.#queue.run(id, async () => {
      const current = this.#jobs.get(id);
      if (!current) return null;
      // Cloned both ways so neither a throwing change nor a kept reference can alter stored state.
      const next = prepareForStorage(structuredClone(change(structuredClone(current))), this.#retentionMs);
      if (next.id !== id || next.idempotencyKey !== current.idempotencyKey) {
        throw new DomainError("internal", `an update may not change the id or idempotency key of job ${id}`);
      }
      await this.#persist(next);
      this.#jobs.set(id, next);
      return structuredClone(next);
    });
  }

  async list(filter: { status?: JobStatus; limit: number; cursor?: string }): Promise<JobPage> {
    if (!Number.isInteger(filter.limit) || filter.limit < 1) {
      throw new DomainError("invalid_request", "limit must be a positive integer");
    }
    const after = filter.cursor === undefined ? null : decodeCursor(filter.cursor);
    const matching = [...this.#jobs.values()]
      .filter((job) => filter.status === undefined || job.status === filter.status)
      .filter((job) => after === null || newestFirst(job, after) > 0)
      .sort(newestFirst);
    const page = matching.slice(0, filter.limit);
    const last = page.at(-1);
    return {
      jobs: page.map((job) => structuredClone(job)),
      nextCursor: matching.length > filter.limit && last ? encodeCursor(last) : null,
    };
  }

  async count(status: JobStatus): Promise<number> {
    let n = 0;
    for (const job of this.#jobs.values()) if (job.status === status) n++;
    return n;
  }

  async unfinished(): Promise<JobRecord[]> {
    return this.#oldestFirst((job) => job.status === "queued" || job.status === "running");
  }

  async pendingCallbacks(): Promise<JobRecord[]> {
    return this.#oldestFirst((job) => job.callback?.state === "pending");
  }

  async sweep(now: Date): Promise<number> {
    this.#assertOpen();
    const cutoff = now.getTime();
    const expired = (job: JobRecord) => {
      const at = removableAt(job);
      return at !== undefined && Date.parse(at) <= cutoff;
    };
    const removed = await Promise.all(
      [...this.#jobs.values()].filter(expired).map((candidate) =>
        // Through the job's queue, and checked again there, so an update that lands first wins.
        this.#queue.run(candidate.id, async () => {
          const job = this.#jobs.get(candidate.id);
          if (!job || !expired(job)) return false;
          // Upload first: a crash in between leaves the job file, and the next sweep finishes the job.
          if (job.input.kind === "upload") await this.#removeUpload(job.input.path);
          // No directory fsync: if the unlink is lost in a crash, the job reappears and is swept again.
          await unlinkIfPresent(this.#jobFile(job.id));
          this.#jobs.delete(job.id);
          if (job.idempotencyKey !== undefined) this.#idsByKey.delete(job.idempotencyKey);
          return true;
        }),
      ),
    );
    return removed.filter(Boolean).length;
  }

  async close(): Promise<void> {
    this.#closed = true;
    // A create that passed its open check just before close may still queue one more write.
    await this.#queue.idle();
    await this.#lock?.release();
  }

  async #load(warn: (message: string, cause?: unknown) => void): Promise<void> {
    const corruptDir = join(this.#jobsDir, "corrupt");
    await ensureDirectory(corruptDir);
    await ensureDirectory(inputsDir(this.#dataDir));
    // Directories just created are only durable once their parents' entries are.
    await syncDirectory(this.#dataDir);
    await syncDirectory(this.#jobsDir);
    this.#realDataDir = await realpath(this.#dataDir);

    for (const entry of await readdir(this.#jobsDir, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const file = join(this.#jobsDir, entry.name);
      if (entry.name.endsWith(TEMP_SUFFIX)) {
        // A temp file is never the acknowledged version of a job (the rename is), so it is safe to drop.
        await unlinkIfPresent(file);
        continue;
      }
      if (!entry.name.endsWith(JOB_SUFFIX)) continue;
      try {
        const job = parseJobFile(await readFile(file, "utf8"), entry.name);
        this.#jobs.set(job.id, job);
      } catch (err) {
        const target = join(corruptDir, `${entry.name}.${Date.now()}`);
        try {
          await rename(file, target);
          warn(`job file ${entry.name} is unreadable; moved it to ${target}`, err);
        } catch (moveErr) {
          warn(`job file ${entry.name} is unreadable and could not be moved aside; skipped it`, moveErr);
        }
      }
    }

    // Creates never let two jobs share a key, so a duplicate means hand-edited files: the oldest keeps it.
    for (const job of [...this.#jobs.values()].sort(oldestFirst)) {
      const key = job.idempotencyKey;
      if (key === undefined) continue;
      const holder = this.#idsByKey.get(key);
      if (holder === undefined) this.#idsByKey.set(key, job.id);
      else warn(`jobs ${holder} and ${job.id} share an idempotency key; it refers to ${holder}`);
    }
  }

  async #persist(job: JobRecord): Promise<void> {
    const target = this.#jobFile(job.id);
    const temp = join(this.#jobsDir, `${job.id}${TEMP_SUFFIX}`);
    try {
      const handle = await open(temp, "w");
      try {
        await handle.writeFile(JSON.stringify(job));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, target);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    // The rename itself is not durable until the directory entry is.
    await syncDirectory(this.#jobsDir);
  }

  async #removeUpload(path: string): Promise<void> {
    const absolute = resolve(path);
    let parent: string;
    try {
      // The parent's real path, so a symlinked directory cannot lead the unlink outside dataDir.
      parent = await realpath(dirname(absolute));
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    const inside = relative(this.#realDataDir, join(parent, basename(absolute)));
    if (inside === "" || inside === ".." || inside.startsWith(`..${sep}`) || isAbsolute(inside)) return;
    await unlinkIfPresent(absolute);
  }

  #oldestFirst(include: (job: JobRecord) => boolean): JobRecord[] {
    return [...this.#jobs.values()]
      .filter(include)
      .sort(oldestFirst)
      .map((job) => structuredClone(job));
  }

  #jobFile(id: string): string {
    return join(this.#jobsDir, `${id}${JOB_SUFFIX}`);
  }

  #assertOpen(): void {
    if (this.#closed) throw new DomainError("unavailable", "job store is closed");
  }
}

function parseJobFile(text: string, fileName: string): JobRecord {
  const value: unknown = JSON.parse(text);
  const problem = jobProblem(value);
  if (problem !== null) throw new Error(problem);
  const job = value as JobRecord;
  if (`${job.id}${JOB_SUFFIX}` !== fileName) throw new Error(`file holds job ${job.id}`);
  return job;
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === "ENOENT";
}
