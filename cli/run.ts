import { availableParallelism } from "node:os";
import { VERSION } from "../lib/version.ts";

export interface Command {
  name: string;
  /** The command's line in the overview: how it is called and what it does. */
  synopsis: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

/** Runs the command the first argument names; without one (or with --help) prints every command's usage; --version the release. */
export async function runCli(argv: string[], commands: readonly Command[]): Promise<number> {
  // onnxruntime-node runs each inference call on libuv's pool: give it a thread per core beyond its
  // default of four, before anything first uses the pool.
  process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() + 2));
  // onnxruntime-node's library ships Microsoft's telemetry client, which on the first session wrote
  // mat-debug-<pid>.log and .ses into TMPDIR (one more log per start, never removed) and kept a
  // database open under ~/.cache/Microsoft: files outside DATA_DIR, and events a self-hosted service
  // has no business sending. It reads this variable when its environment is created.
  process.env.ORT_DISABLE_TELEMETRY ??= "1";
  // A reader that stops early (slotscribe capacity | head) closes the pipe: that is not a failure.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
    process.exit(process.exitCode ?? 0);
  });
  const [name, ...rest] = argv;
  if (name === "--version" || name === "-v" || name === "version") {
    console.log(`slotscribe ${VERSION}`);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  if (command) return command.run(rest);
  const overview = [
    `usage: slotscribe <command> [options]   (slotscribe --version: the release)\n\ncommands:\n${commands.map((c) => `  ${c.synopsis}`).join("\n")}`,
    ...commands.map((c) => c.usage),
  ].join("\n\n");
  // Help asked for goes to stdout, to be paged or searched; after a mistake it is the error output.
  if (name === "--help" || name === "-h" || name === "help") {
    console.log(overview);
    return 0;
  }
  // A mistyped command is named first: the overview that follows is long.
  console.error(name === undefined ? overview : `slotscribe: unknown command "${name}" (slotscribe --help lists them)\n\n${overview}`);
  return 2;
}
