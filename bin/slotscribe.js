#!/usr/bin/env node
// The published entry point: runs the TypeScript CLI of the source checkout (bin/dev.ts: the service's
// commands and the development tools') with tsx's loader, so no build step is needed.
import { spawn } from "node:child_process";
import { constants } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// The service's process environment (lib/process-env.ts; this file runs without a TypeScript loader),
// which glibc reads at start: hence a child process rather than loading dev.ts here.
const env = { MALLOC_ARENA_MAX: "1", ...process.env };
const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), join(here, "dev.ts"), ...process.argv.slice(2)], { stdio: "inherit", env });
// A supervisor stops this process, not its child: pass SIGTERM and SIGHUP on so `serve` drains as
// under `npm start`. A terminal's Ctrl-C already reaches the whole process group, the child included.
for (const signal of ["SIGTERM", "SIGHUP"]) process.on(signal, () => child.kill(signal));
process.on("SIGINT", () => {});
// `npx` dies on SIGTERM without passing it on, which leaves this process orphaned: stop the child then too.
const parent = process.ppid;
const watch = setInterval(() => {
  if (process.ppid === parent) return;
  clearInterval(watch);
  child.kill("SIGTERM");
}, 1000).unref();
child.on("exit", (code, signal) => process.exit(code ?? 128 + (signal ? constants.signals[signal] : 0)));
