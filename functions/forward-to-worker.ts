import type { Handler } from "hono";
import type { WorkerForwarder } from "../lib/cluster/worker-forwarder.ts";
import { DomainError, errorBody } from "../lib/errors.ts";
import type { AppEnv } from "./env.ts";
import { route as extract } from "./extract.ts";
import { recordError } from "./middleware.ts";
import { route as transcriptions } from "./transcriptions.ts";
import { route as translations } from "./translations.ts";

/** The synchronous endpoints that need a model: on an api instance, a worker answers them. */
export const WORKER_PATHS = [transcriptions.path, translations.path, extract.path];

/** Passes the request on as it arrives, before anything here reads the body. */
export function forwardToWorker(forwarder: Pick<WorkerForwarder, "forward">): Handler<AppEnv> {
  return (c) => {
    const requestId = c.get("requestId");
    return forwarder.forward(c.req.raw, requestId, (err, betweenEvents) => {
      // The request's line, written once the answer ended, carries the code: its 200 was no success.
      const error = recordError(new DomainError("upstream_failed", "The worker transcribing this request stopped answering; send it again.", { cause: err }), c);
      // A worker that died mid-answer needs looking at, and the cause is only known here.
      c.var.deps.log.error({ requestId, method: c.req.method, path: c.req.path, error: "upstream_failed", err: err.message }, "worker's answer cut off");
      // A transcript stream ends as one whose transcription failed on the worker itself: with an error
      // event, which the SDKs raise as the service's error rather than as a broken connection.
      if (betweenEvents) return { type: "error", ...errorBody(error, requestId) };
      // Otherwise the client's connection breaks as the worker's did, so no truncated answer reads as
      // whole; ended here rather than by erroring the body, which Node's server prints as a bare stack.
      c.env?.outgoing?.destroy();
      return undefined;
    });
  };
}
