/**
 * The CLI of a source checkout (`npx slotscribe`, `npm run bench`, `npm run demo`): the service's
 * commands and the development tools' (tools/), which the compiled image leaves out.
 */
import { runCli } from "../cli/run.ts";
import { TOOL_COMMANDS } from "../tools/commands.ts";
import { SERVICE_COMMANDS } from "./commands.ts";

process.exitCode = await runCli(process.argv.slice(2), [...SERVICE_COMMANDS, ...TOOL_COMMANDS]);
