import type { Handler } from "hono";
import type { WorkerForwarder } from "../lib/cluster/worker-forwarder.ts";
import type { AppEnv } from "./env.ts";
import { route as extract } from "./extract.ts";
import { route as transcriptions } from "./transcriptions.ts";
import { route as translations } from "./translations.ts";

/** The synchronous endpoints that need a model: on an api instance, a worker answers them. */
export const WORKER_PATHS = [transcriptions.path, translations.path, extract.path];

/** Passes the request on as it arrives, before anything here reads the body. */
export function forwardToWorker(forwarder: Pick<WorkerForwarder, "forward">): Handler<AppEnv> {
  return (c) => forwarder.forward(c.req.raw, c.get("requestId"));
}
