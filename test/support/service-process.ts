/**
 * Starts the real service (`slotscribe serve`) as a child process on a random port, the way an
 * operator runs it, and stops it with a signal. Tests talk to it over real HTTP.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { withServiceProcessEnv } from "../../lib/process-env.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export interface ServiceProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Every log line so far, parsed. */
  logs: Record<string, unknown>[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * `slotscribe serve` on a random local port, its output piped. `ownGroup`: it leads a process group
 * of its own, which a test can signal as a whole, as a terminal's Ctrl-C does.
 */
function spawnServe(env: Record<string, string>, serveArgs: string[] = [], compiled = false, ownGroup = false): ChildProcess {
  const entry = compiled ? [join(ROOT, "dist", "bin", "main.js")] : ["--import", "tsx", join(ROOT, "bin", "main.ts")];
  return spawn(process.execPath, [...entry, "serve", ...serveArgs], {
    cwd: ROOT,
    env: withServiceProcessEnv({ ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env }),
    stdio: ["ignore", "pipe", "pipe"],
    detached: ownGroup,
  });
}

/**
 * `serveArgs` go after `serve`, as a Fly process group's command line passes `--role`. `compiled`
 * runs `dist/` (built by `npm run build`) as the image does, without tsx, whose esbuild service and
 * per-thread loader would count in memory figures; tests run the sources. `ownGroup`: see spawnServe.
 */
export async function startService(
  env: Record<string, string>,
  timeoutMs = 60_000,
  serveArgs: string[] = [],
  { compiled = false, ownGroup = false } = {},
): Promise<ServiceProcess> {
  const child = spawnServe(env, serveArgs, compiled, ownGroup);
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start in ${timeoutMs} ms:\n${stderr}`)), timeoutMs);
    let buffered = "";
    child.stdout!.on("data", (d: Buffer) => {
      buffered += d.toString();
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === "listening") {
            clearTimeout(timer);
            resolve(entry.url as string);
          }
        } catch {
          // Non-JSON output (a library's own console line) is not a log record.
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`service exited with ${code} before listening:\n${stderr}`));
    });
  });
  return {
    url,
    pid: child.pid!,
    child,
    logs,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = (await once(child, "exit")) as [number | null];
      return code;
    },
  };
}

/**
 * Runs `serve` (from the sources) until it exits, for starts that must fail or are stopped before
 * they are done (`spawned` gets the process to signal): its status, JSON log lines and stderr.
 */
export async function serveUntilExit(
  env: Record<string, string>,
  timeoutMs = 60_000,
  spawned: (child: ChildProcess) => void = () => undefined,
): Promise<{ code: number | null; logs: Record<string, unknown>[]; stderr: string }> {
  const child = spawnServe(env);
  spawned(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(timer);
  const logs = stdout
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { code, logs, stderr };
}

/** Waits until `check` passes, polling; for state that settles asynchronously (never for timing). */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}
