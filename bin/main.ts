import { availableParallelism } from "node:os";
import { batchCommand, BATCH_USAGE } from "../lib/cli/batch.ts";
import { benchCommand, BENCH_USAGE } from "../lib/cli/bench.ts";
import { capacityCommand, CAPACITY_USAGE } from "../lib/cli/capacity.ts";
import { jobsCommand, JOBS_USAGE } from "../lib/cli/jobs.ts";
import { modelsCommand, MODELS_USAGE } from "../lib/cli/models.ts";
import { serveCommand, SERVE_USAGE } from "../lib/cli/serve.ts";
import { transcribeCommand, TRANSCRIBE_USAGE } from "../lib/cli/transcribe.ts";

// onnxruntime-node runs each inference call on libuv's pool: give it a thread per core beyond its
// default of four, before anything first uses the pool.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() + 2));

const USAGE = `usage: slotscribe <command> [options]

commands:
  serve             run the HTTP service
  models generate   write a generated Whisper model directory
  transcribe        transcribe a file or URL on a server
  jobs              get, list, cancel a server's transcription jobs, or fetch a result
  batch             transcribe a directory or a list of files and URLs, resumably
  capacity          print the slot plan per model for this or a hypothetical machine
  bench             measure speed, memory and latency against the product targets

${SERVE_USAGE}

${MODELS_USAGE}

${TRANSCRIBE_USAGE}

${JOBS_USAGE}

${BATCH_USAGE}

${CAPACITY_USAGE}

${BENCH_USAGE}`;

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  serve: serveCommand,
  models: modelsCommand,
  transcribe: transcribeCommand,
  jobs: jobsCommand,
  batch: batchCommand,
  capacity: capacityCommand,
  bench: benchCommand,
};

const [name, ...rest] = process.argv.slice(2);
const command = name ? commands[name] : undefined;
if (!command) {
  console.error(USAGE);
  process.exit(name === "--help" || name === "-h" ? 0 : 2);
}
process.exitCode = await command(rest);
