import { ConfigError, loadConfig } from "../config.ts";
import { createLogger } from "../log.ts";

export const SERVE_USAGE = `slotscribe serve

Runs the HTTP service on PORT (default 8080). Configuration comes from the environment; see the
README's configuration table.`;

export async function serveCommand(): Promise<number> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`slotscribe: refusing to start, ${err.message}`);
      return 1;
    }
    throw err;
  }
  const log = createLogger(config.LOG_LEVEL);
  const { startServer } = await import("../../functions/server.ts");
  const server = await startServer(config, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, "shutting down");
      server.close().then(resolve, resolve);
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  return 0;
}
