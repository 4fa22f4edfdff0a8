/**
 * Every child process and temp dir the benchmark makes is registered here, so every exit path
 * (normal end, exception, SIGINT/SIGTERM, process exit) removes them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./context.ts";

// Cleanup: every child process and temp dir the benchmark makes is registered here, so exit paths
// (normal end, exception, SIGINT/SIGTERM, process exit) all remove them.

const children = new Set<ChildProcess>();
export const tempDirs = new Set<string>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Synchronous, for signal handlers and process "exit": SIGKILL what is left, remove temp dirs. */
export function cleanupNow(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Runs one of tools/bench's probe scripts in a fresh process and returns the JSON line it prints last. */
export function runProbe<T>(script: string, args: string[]): Promise<T> {
  return new Promise((resolveProbe, reject) => {
    const child = track(
      spawn(process.execPath, ["--expose-gc", "--import", "tsx", join(ROOT, "tools", "bench", script), ...args], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    child.once("exit", (code) => {
      const json = stdout
        .split("\n")
        .reverse()
        .find((l) => l.startsWith("{"));
      if (code === 0 && json) resolveProbe(JSON.parse(json) as T);
      else reject(new Error(`${script} exited with ${code}: ${stderr}`));
    });
  });
}
