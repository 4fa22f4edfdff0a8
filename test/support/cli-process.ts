/** The slotscribe CLI in a child process (bin/main.ts under tsx), its output collected. */
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts `slotscribe <args>` with `env` over this process's environment; `done` settles when it exits. */
export function startCli(args: string[], env: Record<string, string>): { child: ChildProcess; done: Promise<CliRun> } {
  const child = spawn(process.execPath, ["--import", "tsx", "bin/main.ts", ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
  return { child, done };
}
