import { batchCommand, BATCH_USAGE } from "../cli/batch.ts";
import { capacityCommand, CAPACITY_USAGE } from "../cli/capacity.ts";
import { jobsCommand, JOBS_USAGE } from "../cli/jobs.ts";
import type { Command } from "../cli/run.ts";
import { serveCommand, SERVE_USAGE } from "../cli/serve.ts";
import { transcribeCommand, TRANSCRIBE_USAGE } from "../cli/transcribe.ts";

/**
 * The service's commands, composed here so the CLI does not depend on the HTTP layer: `serve` is
 * handed the server (loaded only when it runs; the other commands are clients and planners).
 */
export const SERVICE_COMMANDS: readonly Command[] = [
  {
    name: "serve",
    synopsis: "serve             run the HTTP service",
    usage: SERVE_USAGE,
    run: (argv) => serveCommand(argv, async (config, log) => (await import("../functions/server.ts")).startServer(config, log)),
  },
  { name: "transcribe", synopsis: "transcribe        transcribe a file or URL on a server", usage: TRANSCRIBE_USAGE, run: transcribeCommand },
  { name: "jobs", synopsis: "jobs              get, list, cancel a server's transcription jobs, or fetch a result", usage: JOBS_USAGE, run: jobsCommand },
  { name: "batch", synopsis: "batch             transcribe a directory or a list of files and URLs, resumably", usage: BATCH_USAGE, run: batchCommand },
  { name: "capacity", synopsis: "capacity          print the slot plan per model for this or a hypothetical machine", usage: CAPACITY_USAGE, run: capacityCommand },
];
