#!/usr/bin/env node
// The published entry point: runs the TypeScript CLI of the source checkout (bin/dev.ts: the service's
// commands and the development tools') through tsx, so no build step is needed.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const tsx = createRequire(import.meta.url).resolve("tsx/cli");
// The service's process environment (lib/process-env.ts; this file runs without a TypeScript loader).
const env = { MALLOC_ARENA_MAX: "1", ...process.env };
const result = spawnSync(process.execPath, [tsx, join(here, "dev.ts"), ...process.argv.slice(2)], { stdio: "inherit", env });
process.exit(result.status ?? 1);
