import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { EmbeddedJobStore, inputsDir } from "./embedded-job-store.ts";
import { at, describeJobStore, makeJob, RETENTION_MS } from "../../test/support/job-store-behaviour.ts";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
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

const dataDirs = new WeakMap<object, string>();

async function openStore(dataDir: string, warnings: string[] = []): Promise<EmbeddedJobStore> {
  const store = await EmbeddedJobStore.open({
    dataDir,
    retentionMs: RETENTION_MS,
    onWarning: (message) => warnings.push(message),
  });
  openStores.push(store);
  dataDirs.set(store, dataDir);
  return store;
}

/** Closes the store and opens the same data dir again, as a restarted process would. */
async function reopen(store: EmbeddedJobStore, dataDir: string, warnings?: string[]): Promise<EmbeddedJobStore> {
  await store.close();
  return openStore(dataDir, warnings);
}

describeJobStore("EmbeddedJobStore", {
  open: async () => openStore(await tempDir()),
  reopen: async (store) => {
    const dataDir = dataDirs.get(store);
    if (!dataDir) throw new Error("not a store of this file");
    return reopen(store as EmbeddedJobStore, dataDir);
  },
  peers: async (store) => [store],
});

describe("EmbeddedJobStore", () => {
  it("creates the inputs directory at open", async () => {
    const dataDir = await tempDir();
    await openStore(dataDir);

    expect((await stat(inputsDir(dataDir))).isDirectory()).toBe(true);
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
    expect((await reopened.list({ limit: 10 })).jobs.map((job) => job.id).sort()).toEqual(["job_not_yet", "job_queued", "job_running"]);
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
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.on("close", (code, signal) => done({ code, signal })));
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
