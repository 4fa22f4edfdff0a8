import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { startService, type ServiceProcess } from "../../test/support/service-process.ts";
import { type Dtype, MODELS_DIR, type ModelKind, ROOT } from "./context.ts";
import { http, sleep } from "./http.ts";
import { RssSampler } from "./memory.ts";
import { stopChild, track } from "./processes.ts";

// The service and the naive server, each a child process on a random port.

export interface Slotscribe {
  service: ServiceProcess;
  url: string;
  pid: number;
  sampler: RssSampler;
  slots: number;
  threads: number;
  cpus: number;
  memoryBytes: number;
  /** Resident bytes the model load added, as the inference thread measured it ("model loaded" log). */
  modelFootprintBytes: number | null;
  stop(): Promise<void>;
}

/**
 * Compiles the service into dist/ (`npm run build`, a few seconds), so the bench measures what the
 * image runs: under tsx, the service's four threads and the launcher each carried the loader, and
 * its esbuild service processes (~60 MiB RSS) counted in every memory figure.
 */
export function buildService(): void {
  const build = spawnSync("npm", ["run", "build"], { cwd: ROOT, encoding: "utf8" });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);
}

/** The compiled service (buildService first) on a random port, ready, with `extraEnv` over the bench's settings. */
export async function startSlotscribe(tmp: string, kind: ModelKind, dtype: Dtype, extraEnv: Record<string, string> = {}): Promise<Slotscribe> {
  const dataDir = await mkdtemp(join(tmp, "server-"));
  const service = await startService(
    {
      ALLOW_ANONYMOUS: "true",
      WHISPER_MODELS_DIR: MODELS_DIR,
      DEFAULT_MODEL: `generated/whisper-${kind}`,
      MODEL_DTYPE: dtype,
      DATA_DIR: join(dataDir, "data"),
      // Uploads are spooled under the server's temp dir: inside ours, so a killed server leaves nothing behind.
      TMPDIR: dataDir,
      ...extraEnv,
    },
    120_000,
    [],
    { compiled: true },
  );
  track(service.child);
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    const res = await http(`${service.url}/readyz`).catch(() => null);
    if (res?.status === 200) break;
    const body = res ? (JSON.parse(res.body.toString()) as { models?: { state: string; error?: string }[] }) : null;
    const failed = body?.models?.find((m) => m.state === "failed");
    if (failed || Date.now() > deadline || service.child.exitCode !== null) {
      await stopChild(service.child);
      throw new Error(`service did not become ready: ${failed?.error ?? "timeout"}`);
    }
    await sleep(200);
  }
  const capacity = JSON.parse((await http(`${service.url}/v1/capacity`)).body.toString()) as {
    instance: { slots: number; threads: number; cpus: number; memoryBytes: number };
  };
  const loaded = service.logs.find((l) => l.msg === "model loaded") as { footprintMiB?: number } | undefined;
  const sampler = new RssSampler(service.pid);
  return {
    service,
    url: service.url,
    pid: service.pid,
    sampler,
    slots: capacity.instance.slots,
    threads: capacity.instance.threads,
    cpus: capacity.instance.cpus,
    memoryBytes: capacity.instance.memoryBytes,
    modelFootprintBytes: loaded?.footprintMiB !== undefined ? loaded.footprintMiB * 2 ** 20 : null,
    async stop() {
      sampler.close();
      await stopChild(service.child);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Naive {
  url: string;
  pid: number;
  sampler: RssSampler;
  stop(): Promise<void>;
}

/** The naive server (tools/bench/naive.ts): a pipeline per request, or one pipeline behind a lock (serial). */
export async function startNaive(kind: ModelKind, dtype: Dtype, mode: "per-request" | "serial" = "per-request"): Promise<Naive> {
  const env = { ...process.env };
  // Default settings, as such a server runs: libuv's default pool (bin/main.ts raises ours) and
  // glibc's default arenas (lib/process-env.ts).
  delete env.UV_THREADPOOL_SIZE;
  delete env.MALLOC_ARENA_MAX;
  // transformers.js is imported by Node's own loader before tsx, as the engine's threads do
  // (lib/worker-entry.mjs): the naive server is measured without tsx's cost for its bundle.
  const child = track(
    spawn(
      process.execPath,
      ["--import", "@huggingface/transformers", "--import", "tsx", join(ROOT, "tools", "bench", "naive.ts"), MODELS_DIR, `generated/whisper-${kind}`, dtype, mode],
      {
        cwd: ROOT,
        env,
        stdio: ["pipe", "pipe", "pipe"],
      },
    ),
  );
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`naive server did not start:\n${stderr}`)), 60_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const { url: u } = JSON.parse(line) as { url?: string };
        if (u) {
          clearTimeout(timer);
          resolveUrl(u);
        }
      } catch {
        // library output
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`naive server exited with ${code}:\n${stderr}`));
    });
  });
  const sampler = new RssSampler(child.pid!);
  return {
    url,
    pid: child.pid!,
    sampler,
    async stop() {
      sampler.close();
      child.stdin!.end();
      await stopChild(child);
    },
  };
}
