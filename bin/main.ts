import { modelsCommand, MODELS_USAGE } from "../lib/cli/models.ts";

const USAGE = `usage: slotscribe <command> [options]

commands:
  models generate   write a generated Whisper model directory

${MODELS_USAGE}`;

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  models: modelsCommand,
};

const [name, ...rest] = process.argv.slice(2);
const command = name ? commands[name] : undefined;
if (!command) {
  console.error(USAGE);
  process.exit(name === "--help" || name === "-h" ? 0 : 2);
}
process.exitCode = await command(rest);
