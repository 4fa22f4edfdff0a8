/**
 * The service's CLI, as the image runs it compiled (`node dist/bin/main.js serve`). The development
 * tools' commands (models generate, bench) are in bin/dev.ts, which a source checkout runs.
 */
import { runCli } from "../cli/run.ts";
import { SERVICE_COMMANDS } from "./commands.ts";

process.exitCode = await runCli(process.argv.slice(2), SERVICE_COMMANDS);
