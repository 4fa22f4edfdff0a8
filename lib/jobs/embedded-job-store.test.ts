import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { AppError } from "../errors.ts";
import { EmbeddedJobStore, inputsDir } from "./embedded-job-store.ts";
import type { JobRecord, JobStatus } from "./ports.ts";

const RETENTION_MS = 60_000;
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const storeModule = fileURLToPath(new URL("./embedded-job-store.ts", import.meta.url));

const tempDirs: string[] = [];
const openStores: EmbeddedJobStore[] = [];

afterEach(async () => {
  await Promise.all(openStores.splice(0).map((store) => store.close()));
  await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "slotscribe-jobs-"));
  tempDirs.push(dir);
  return dir;
}

async function openStore(dataDir: string, warnings: string[] = []): Promise<EmbeddedJobStore> {
  const store = await EmbeddedJobStore.open({
    dataDir,
    retentionMs: RETENTION_MS,
    onWarning: (message) => warnings.push(message),
  });
  openStores.push(store);
  return store;
}

/** Closes the store and opens the same data dir again, as a restarted process would. */
async function reopen(store: EmbeddedJobStore, dataDir: string, warnings?: string[]): Promise<EmbeddedJobStore> {
  await store.close();
  return openStore(dataDir, warnings);
}

function makeJob(id: string, overrides: Partial<JobRecord> = {}): JobRecord {
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

function at(second: number): string {
  return new Date(Date.UTC(2025, 0, 1, 0, 0, second)).toISOString();
}

describe("EmbeddedJobStore", () => {
  it("returns a created job from get() and null for an unknown id", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    const job = makeJob("job_a", { idempotencyKey: "key-a" });

    expect(await store.create(job)).toEqual({ job, created: true });
    expect(await store.get("job_a")).toEqual(job);
    expect(await store.get("job_missing")).toBeNull();
    expect(store.kind).toBe("embedded");
  });

  it("creates the inputs directory at open", async () => {
    const dataDir = await tempDir();
    await openStore(dataDir);

    expect((await stat(inputsDir(dataDir))).isDirectory()).toBe(true);
  });

  it("hands out copies, so mutating a returned job does not change the stored one", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    const { job } = await store.create(makeJob("job_a"));

    job.status = "failed";
    const fetched = await store.get("job_a");
    fetched!.progress.doneSeconds = 99;

    expect(await store.get("job_a")).toEqual(makeJob("job_a"));
  });

  it("sees every job with the same content after reopening the data dir", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    const jobs = [
      makeJob("job_a", { createdAt: at(1), idempotencyKey: "k1" }),
      makeJob("job_b", { createdAt: at(2), input: { kind: "upload", path: "/x/in.wav", filename: "in.wav", bytes: 10 } }),
      makeJob("job_c", {
        createdAt: at(3),
        callback: { webhookId: "msg_1", state: "pending", attempts: [{ at: at(4), status: null, latencyMs: 5 }] },
      }),
    ];
    for (const job of jobs) await store.create(job);
    const updated = await store.update("job_b", (job) => ({
      ...job,
      status: "running",
      runs: 1,
      startedAt: at(5),
      progress: { doneSeconds: 12.5, totalSeconds: 30 },
    }));

    const reopened = await reopen(store, dataDir);

    expect(await reopened.get("job_a")).toEqual(jobs[0]);
    expect(await reopened.get("job_b")).toEqual(updated);
    expect(await reopened.get("job_c")).toEqual(jobs[2]);
    expect((await reopened.list({ limit: 10 })).jobs.map((job) => job.id)).toEqual(["job_c", "job_b", "job_a"]);
  });

  it("returns the existing job for a repeated idempotency key, also after reopening", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    const first = await store.create(makeJob("job_first", { idempotencyKey: "same" }));

    const second = await store.create(makeJob("job_second", { idempotencyKey: "same" }));
    expect(second).toEqual({ job: first.job, created: false });

    const reopened = await reopen(store, dataDir);
    const third = await reopened.create(makeJob("job_third", { idempotencyKey: "same" }));
    expect(third).toEqual({ job: first.job, created: false });
    expect(await reopened.get("job_second")).toBeNull();
    expect(await reopened.get("job_third")).toBeNull();
  });

  it("yields one job for concurrent creates with the same idempotency key", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);

    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.create(makeJob(`job_${i}`, { idempotencyKey: "race" }))),
    );

    expect(results.filter((result) => result.created)).toHaveLength(1);
    expect(new Set(results.map((result) => result.job.id)).size).toBe(1);
    const reopened = await reopen(store, dataDir);
    expect((await reopened.list({ limit: 100 })).jobs).toHaveLength(1);
  });

  it("rejects a second job with an id that already exists", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_a"));

    await expect(store.create(makeJob("job_a", { status: "failed" }))).rejects.toMatchObject({ code: "conflict" });
    expect(await store.get("job_a")).toEqual(makeJob("job_a"));
  });

  it("applies every one of 50 concurrent updates of one job", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_a"));

    await Promise.all(
      Array.from({ length: 50 }, () =>
        store.update("job_a", (job) => ({
          ...job,
          progress: { ...job.progress, doneSeconds: job.progress.doneSeconds + 1 },
        })),
      ),
    );

    expect((await store.get("job_a"))?.progress.doneSeconds).toBe(50);
    const reopened = await reopen(store, dataDir);
    expect((await reopened.get("job_a"))?.progress.doneSeconds).toBe(50);
  });

  it("returns null when updating an absent job and keeps the job when a change throws", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_a"));

    expect(await store.update("job_missing", (job) => job)).toBeNull();
    await expect(
      store.update("job_a", (job) => {
        job.status = "failed";
        throw new Error("change failed");
      }),
    ).rejects.toThrow("change failed");
    expect(await store.get("job_a")).toEqual(makeJob("job_a"));
  });

  it("refuses an update that changes the job's id or idempotency key", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_a", { idempotencyKey: "k" }));

    await expect(store.update("job_a", (job) => ({ ...job, id: "job_b" }))).rejects.toBeInstanceOf(AppError);
    await expect(store.update("job_a", (job) => ({ ...job, idempotencyKey: "other" }))).rejects.toBeInstanceOf(AppError);
    expect(await store.get("job_b")).toBeNull();
  });

  it("sets expiresAt to finishedAt plus the retention when a job finishes without one", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_a"));

    const finished = await store.update("job_a", (job) => ({ ...job, status: "succeeded", finishedAt: at(10) }));

    expect(finished?.expiresAt).toBe(new Date(Date.parse(at(10)) + RETENTION_MS).toISOString());
  });

  it("lists by status newest first and pages through every job exactly once", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    const statuses: JobStatus[] = ["queued", "running", "succeeded", "failed", "canceled"];
    // Every third job shares its createdAt with the previous one, so paging must break ties by id.
    const jobs = Array.from({ length: 23 }, (_, i) =>
      makeJob(`job_${String(i).padStart(2, "0")}`, {
        createdAt: at(i - (i % 3 === 2 ? 1 : 0)),
        status: statuses[i % statuses.length],
      }),
    );
    // Created out of order: insertion order must not leak into list order.
    for (const job of [...jobs].reverse()) await store.create(job);

    async function collect(status?: JobStatus): Promise<string[]> {
      const ids: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await store.list({ status, limit: 4, cursor });
        expect(page.jobs.length).toBeLessThanOrEqual(4);
        ids.push(...page.jobs.map((job) => job.id));
        if (page.nextCursor === null) return ids;
        cursor = page.nextCursor;
      }
    }

    const newestFirst = [...jobs]
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))
      .map((job) => job.id);
    expect(await collect()).toEqual(newestFirst);
    const succeeded = await collect("succeeded");
    expect(succeeded).toEqual(newestFirst.filter((id) => jobs.find((job) => job.id === id)?.status === "succeeded"));
    expect(succeeded.length).toBeGreaterThan(0);
    expect(await store.list({ limit: 23 })).toMatchObject({ nextCursor: null });
    await expect(store.list({ limit: 4, cursor: "not-a-cursor" })).rejects.toMatchObject({ code: "invalid_request" });
    await expect(store.list({ limit: 0 })).rejects.toMatchObject({ code: "invalid_request" });
  });

  it("returns queued and running jobs oldest first from unfinished()", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_running_new", { status: "running", createdAt: at(30) }));
    await store.create(makeJob("job_done", { status: "succeeded", createdAt: at(5) }));
    await store.create(makeJob("job_queued_old", { status: "queued", createdAt: at(10) }));
    await store.create(makeJob("job_queued_mid", { status: "queued", createdAt: at(20) }));
    await store.create(makeJob("job_canceled", { status: "canceled", createdAt: at(1) }));

    const reopened = await reopen(store, dataDir);

    expect((await reopened.unfinished()).map((job) => job.id)).toEqual([
      "job_queued_old",
      "job_queued_mid",
      "job_running_new",
    ]);
  });

  it("returns only jobs whose callback is pending from pendingCallbacks()", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    const callback = (state: "pending" | "delivered") => ({ webhookId: "msg", state, attempts: [] });
    await store.create(makeJob("job_pending", { status: "succeeded", callback: callback("pending") }));
    await store.create(makeJob("job_delivered", { status: "succeeded", callback: callback("delivered") }));
    await store.create(makeJob("job_none"));

    expect((await store.pendingCallbacks()).map((job) => job.id)).toEqual(["job_pending"]);
  });

  it("sweeps only expired finished jobs and their uploads inside the data dir", async () => {
    const dataDir = await tempDir();
    const outsideDir = await tempDir();
    const store = await openStore(dataDir);
    const now = new Date(Date.parse(at(100)));
    const upload = async (dir: string, name: string) => {
      const path = join(dir, name);
      await writeFile(path, "audio");
      return { kind: "upload" as const, path, filename: name, bytes: 5 };
    };
    const insideUpload = await upload(inputsDir(dataDir), "expired.wav");
    const keptUpload = await upload(inputsDir(dataDir), "queued.wav");
    const outsideUpload = await upload(outsideDir, "outside.wav");

    await store.create(makeJob("job_expired_upload", { status: "succeeded", expiresAt: at(50), input: insideUpload }));
    await store.create(makeJob("job_expired_url", { status: "failed", expiresAt: at(100) }));
    await store.create(makeJob("job_expired_outside", { status: "canceled", expiresAt: at(99), input: outsideUpload }));
    await store.create(makeJob("job_not_yet", { status: "succeeded", expiresAt: at(101) }));
    await store.create(makeJob("job_queued", { status: "queued", expiresAt: at(1), input: keptUpload }));
    await store.create(makeJob("job_running", { status: "running", expiresAt: at(1) }));

    expect(await store.sweep(now)).toBe(3);

    const reopened = await reopen(store, dataDir);
    expect((await reopened.list({ limit: 10 })).jobs.map((job) => job.id).sort()).toEqual([
      "job_not_yet",
      "job_queued",
      "job_running",
    ]);
    await expect(stat(insideUpload.path)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(stat(keptUpload.path)).resolves.toBeDefined();
    await expect(stat(outsideUpload.path)).resolves.toBeDefined();
    expect(await reopened.sweep(now)).toBe(0);
  });

  it("opens despite a leftover temp file and a corrupt job file, setting the corrupt one aside", async () => {
    const dataDir = await tempDir();
    const store = await openStore(dataDir);
    await store.create(makeJob("job_good"));
    await store.close();
    const jobsDir = join(dataDir, "jobs");
    await writeFile(join(jobsDir, "job_good.json.tmp"), '{"id":"job_good","status":"ru');
    await writeFile(join(jobsDir, "job_torn.json"), '{"id":"job_torn","sta');
    await writeFile(join(jobsDir, "job_renamed.json"), JSON.stringify(makeJob("job_other")));

    const warnings: string[] = [];
    const reopened = await openStore(dataDir, warnings);

    expect(await reopened.get("job_good")).toEqual(makeJob("job_good"));
    expect(await reopened.get("job_torn")).toBeNull();
    expect(await reopened.get("job_other")).toBeNull();
    expect(warnings).toHaveLength(2);
    expect((await readdir(jobsDir)).sort()).toEqual(["corrupt", "job_good.json"]);
    const corrupt = await readdir(join(jobsDir, "corrupt"));
    expect(corrupt.map((name) => name.replace(/\.\d+$/, "")).sort()).toEqual(["job_renamed.json", "job_torn.json"]);
  });

  it("loses no acknowledged write when the writing process is killed with SIGKILL", async () => {
    const dataDir = await tempDir();
    const scriptDir = await tempDir();
    const script = join(scriptDir, "crash-writer.mts");
    await writeFile(script, crashWriterScript());

    const child = spawn(process.execPath, ["--import", "tsx", script, dataDir], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const acknowledged: string[] = [];
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const lines = stdout.split("\n");
      // The last element is an unfinished line (or ""); only whole lines are acknowledgements.
      stdout = lines.pop() ?? "";
      acknowledged.push(...lines);
      if (acknowledged.length >= 300) child.kill("SIGKILL");
    });
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
      child.on("close", (code, signal) => done({ code, signal })),
    );
    expect(exit, `writer exited on its own; stderr:\n${stderr}`).toEqual({ code: null, signal: "SIGKILL" });
    expect(acknowledged.length).toBeGreaterThanOrEqual(300);

    const warnings: string[] = [];
    const store = await openStore(dataDir, warnings);

    expect(warnings).toEqual([]);
    let created = 0;
    let hotMax = 0;
    for (const line of acknowledged) {
      const [kind, id, value] = line.split(" ");
      if (kind === "hot") {
        hotMax = Math.max(hotMax, Number(value));
        continue;
      }
      const job = await store.get(id!);
      expect(job, `acknowledged ${line}`).not.toBeNull();
      if (kind === "created") created += 1;
      if (kind === "updated") expect(job?.progress.doneSeconds).toBeGreaterThanOrEqual(Number(value));
    }
    expect(created).toBeGreaterThan(0);
    expect(hotMax).toBeGreaterThan(0);
    expect((await store.get("job_hot"))?.progress.doneSeconds).toBeGreaterThanOrEqual(hotMax);
    // Every file left behind parses as a job: nothing half-written survived the kill or the open.
    for (const name of await readdir(join(dataDir, "jobs"))) {
      if (name === "corrupt") continue;
      expect(name).toMatch(/\.json$/);
      expect(JSON.parse(await readFile(join(dataDir, "jobs", name), "utf8"))).toHaveProperty("id");
    }
  });
});

/**
 * A writer that never stops on its own: four concurrent loops creating jobs, updating them and
 * bumping one shared job, printing a line only after each write resolved (was acknowledged).
 */
function crashWriterScript(): string {
  return `
import { EmbeddedJobStore } from ${JSON.stringify(pathToFileURL(storeModule).href)};

const store = await EmbeddedJobStore.open({ dataDir: process.argv[2], retentionMs: 60_000 });
const job = (id) => ({
  id,
  status: "queued",
  request: { model: "whisper-tiny.en", task: "transcribe", responseFormat: "json", callbackIncludeResult: false },
  input: { kind: "url", url: "https://example.com/" + id },
  idempotencyKey: "key-" + id,
  createdAt: new Date().toISOString(),
  runs: 0,
  progress: { doneSeconds: 0, totalSeconds: null },
});
const ack = (line) => process.stdout.write(line + "\\n");

await store.create(job("job_hot"));
let next = 0;
async function writer() {
  for (;;) {
    const id = "job_" + String(next++).padStart(6, "0");
    await store.create(job(id));
    ack("created " + id);
    const updated = await store.update(id, (j) => ({ ...j, status: "running", runs: 1, progress: { doneSeconds: 1, totalSeconds: 2 } }));
    ack("updated " + id + " " + updated.progress.doneSeconds);
    const hot = await store.update("job_hot", (j) => ({ ...j, progress: { ...j.progress, doneSeconds: j.progress.doneSeconds + 1 } }));
    ack("hot job_hot " + hot.progress.doneSeconds);
  }
}
await Promise.all([writer(), writer(), writer(), writer()]);
`;
}
