import { parseArgs } from "node:util";
import { type Config, ConfigError, loadConfig, ROLES } from "../lib/config.ts";
import { explainAccess } from "../lib/directories.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { missingProcessEnv } from "../lib/process-env.ts";
import { isParseArgsError } from "./client.ts";

export const SERVE_USAGE = `slotscribe serve [--role ${ROLES.join("|")}]

Runs the HTTP service on PORT (default 8080). Configuration comes from the environment; see the
README's configuration table. --role sets ROLE (over the environment's): all (default) does
everything; api loads no model, hands jobs to QStash and forwards /v1/audio/* to WORKER_URL;
worker transcribes. api and worker need cluster mode.`;

/**
 * The environment with serve's options applied. The role is also an option because Fly has no
 * per-process-group [env]: each group's command line says what it is.
 */
export function serveEnv(argv: string[], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const { role } = serveOptions(argv);
  return role === undefined ? env : { ...env, ROLE: role };
}

function serveOptions(argv: string[]) {
  return parseArgs({ args: argv, options: { role: { type: "string" }, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals: false }).values;
}

/** Starts the HTTP service; the entry point hands it in (bin/commands.ts), so the CLI does not depend on the HTTP layer. */
export type StartServer = (config: Config, log: Logger) => Promise<{ close(): Promise<void> }>;

export async function serveCommand(argv: string[], startServer: StartServer): Promise<number> {
  let config;
  try {
    if (serveOptions(argv).help) {
      console.log(SERVE_USAGE);
      return 0;
    }
    config = loadConfig(serveEnv(argv));
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`slotscribe: refusing to start, ${err.message}`);
      return 1;
    }
    if (isParseArgsError(err)) {
      console.error(`slotscribe serve: ${(err as Error).message}\n\n${SERVE_USAGE}`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.LOG_LEVEL);
  const missing = missingProcessEnv();
  if (missing.length > 0)
    log.warn({ set: missing }, "started without the process environment the service is tuned for (the image, npm start and bin/slotscribe.js set it): slower and larger");
  // Installed before the start: a stop asked for while it is under way (a deploy cancelled, a
  // machine stopped as it starts) waits for the start to complete and drains then, instead of the
  // signal's default action killing the process with the runner already taking jobs.
  let started = false;
  const signals = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
  let stop: (signal: NodeJS.Signals) => void = () => undefined;
  const stopAsked = new Promise<void>((resolve) => {
    let stopping = false;
    stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        // A supervisor (or `timeout`) that signals the whole group again must not cut the drain
        // short; a second Ctrl-C is someone who wants out now.
        if (signal === "SIGINT") {
          log.warn({ signal }, "second SIGINT while shutting down: exiting now, running work is left as after a crash");
          process.exit(130);
        }
        log.info({ signal }, "already shutting down");
        return;
      }
      stopping = true;
      log.info({ signal }, started ? "shutting down" : "shutting down once started");
      resolve();
    };
  });
  // SIGHUP, a closed terminal or session (and bin/slotscribe.js passing it on): a stop like any other.
  for (const signal of signals) process.on(signal, stop);
  try {
    let server: Awaited<ReturnType<StartServer>>;
    try {
      server = await startServer(config, log);
    } catch (err) {
      // What loadConfig cannot check alone: DATA_DIR not a writable directory, a port in use.
      log.fatal({ err: await explainAccess(err) }, "refusing to start: the service could not be set up");
      return 1;
    }
    started = true;
    await stopAsked;
    try {
      await server.close();
      return 0;
    } catch (err) {
      // Said, and in the exit status: a supervisor sees a stop that left something behind.
      log.error({ err: (err as Error).message }, "shutdown did not complete");
      return 1;
    }
  } finally {
    for (const signal of signals) process.off(signal, stop);
    log.flush();
  }
}
