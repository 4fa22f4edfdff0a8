import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { finished } from "node:stream";
import type { Context, MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { presentedKey } from "../lib/auth.ts";
import { DomainError, errorBody, StorageFull, toDomainError, type ErrorCode } from "../lib/errors.ts";
import { ERROR_STATUS } from "./error-status.ts";
import type { HttpDeps } from "./deps.ts";
import type { AppEnv } from "./env.ts";

/** Paths anyone may call: probes, the API description and the status page. */
const PUBLIC_PATHS = new Set(["/healthz", "/readyz", "/openapi.json", "/docs", "/", "/status-page.js"]);
/** Framing and headers on top of a refused body's allowance, below. */
const DRAIN_SLACK_BYTES = 1024 * 1024;
/** QStash deliveries carry QStash's signature instead of an API key; their handlers verify it. */
const SIGNED_PREFIX = "/internal/qstash/";

export function newRequestId(): string {
  return `req_${randomUUID().replaceAll("-", "")}`;
}

/** The request in progress on a connection, for an answer Node's server gives it (functions/server.ts). */
const IN_PROGRESS = Symbol("requestInProgress");

export interface RequestInProgress {
  id: string;
  origin: string | undefined;
}

export function requestOn(socket: object): RequestInProgress | undefined {
  return (socket as { [IN_PROGRESS]?: RequestInProgress })[IN_PROGRESS];
}

/**
 * The origin the client reached us at, for links when PUBLIC_URL is not set: behind a platform's TLS
 * proxy (Fly, Railway) the request arrives over http with X-Forwarded-Proto: https, and links must
 * say https. The header only shapes links in answers to that same client.
 */
export function requestOrigin(c: Context): string {
  const url = new URL(c.req.url);
  const forwarded = c.req.header("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase();
  if (forwarded === "https" || forwarded === "http") url.protocol = `${forwarded}:`;
  return url.origin;
}

export function provide(deps: HttpDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("deps", deps);
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && /^[\w.-]{1,128}$/.test(incoming) ? incoming : newRequestId();
    c.set("requestId", requestId);
    c.header("x-request-id", requestId);
    c.set("spooled", []);
    const socket = c.env?.incoming?.socket as { [IN_PROGRESS]?: RequestInProgress } | undefined;
    if (socket) socket[IN_PROGRESS] = { id: requestId, origin: c.req.header("origin") };
    try {
      await next();
    } finally {
      if (socket) delete socket[IN_PROGRESS];
      await Promise.all(c.get("spooled").map((path) => rm(path, { force: true })));
      await settleUnreadBody(c, deps.config.MAX_UPLOAD_BYTES);
    }
  };
}

/**
 * A body refused or replayed before it was read must still leave the connection usable: a
 * keep-alive client sends its next request on it. The rest is read and discarded (at wire speed,
 * into no buffer); closing instead would reset a client still sending and lose the answer, or
 * leave it a pooled connection that is already dead. The rest counts from where the app stopped
 * reading (an upload refused at the limit has already been read that far). Up to twice the upload
 * limit is discarded, so an upload refused by its declared length, a little over the limit, still
 * gets its 413 (test/service.test.ts); a rest beyond that is cut off, and the client is told so
 * with Connection: close.
 *
 * A connection that is not kept alive (Connection: close, HTTP/1.0) Node closes as soon as the
 * answer is written, the rest of the body unread: the client, still sending, is reset and may never
 * read its answer (node:http clients with agent: false got EPIPE instead of an immediate 429 in 9
 * of 20 tries). On such a connection the rest is read before the answer goes out.
 */
async function settleUnreadBody(c: Context<AppEnv>, maxUploadBytes: number): Promise<void> {
  const incoming = c.env?.incoming;
  if (!incoming || incoming.readableEnded || incoming.destroyed) return;
  const bound = 2 * maxUploadBytes + DRAIN_SLACK_BYTES;
  const declared = Number(c.req.header("content-length") ?? 0);
  const cutOff = declared - (c.get("bodyBytesRead") ?? 0) > bound;
  if (cutOff) c.res.headers.set("connection", "close");
  // A web stream made of the request (a body checked by its length before it was read) pauses it
  // again whenever its own queue is full: it would never end, so that answer does not wait.
  const heldElsewhere = incoming.listenerCount("data") > 0;
  let discarded = 0;
  const read = new Promise<void>((resolve) => {
    incoming.on("data", (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > bound) {
        incoming.socket.destroy();
        resolve();
      }
    });
    incoming.once("end", resolve);
    incoming.once("close", resolve);
    incoming.on("error", () => resolve());
  });
  incoming.resume();
  if (!cutOff && !heldElsewhere && c.env?.outgoing?.shouldKeepAlive === false) await read;
}

export const requireApiKey: MiddlewareHandler<AppEnv> = async (c, next) => {
  const { apiKeys } = c.var.deps;
  if (apiKeys.required && !PUBLIC_PATHS.has(c.req.path) && !c.req.path.startsWith(SIGNED_PREFIX) && !c.req.path.startsWith("/docs/")) {
    const key = presentedKey(c.req.header("authorization"), c.req.header("x-api-key"));
    if (!apiKeys.accepts(key)) {
      c.header("www-authenticate", 'Bearer realm="slotscribe"');
      throw new DomainError("unauthorized", key ? "Invalid API key." : "Missing API key: send Authorization: Bearer <key> or X-API-Key: <key>.");
    }
  }
  await next();
};

export function logRequests(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } catch (err) {
      // Hono hands only Error instances to onError; @hono/node-server aborts a request whose client
      // went away with a string as the reason, which work stopped by that signal throws.
      c.res = handleError(err instanceof Error ? err : new Error(String(err), { cause: err }), c);
    }
    // A streamed answer (a worker's, passed on; a transcript's events) can still fail after its status
    // went out, so the answer is recorded once it has ended, not when the handler returned it.
    const outgoing = c.env?.outgoing;
    if (outgoing) finished(outgoing, (err) => recordRequest(c, started, err !== undefined));
    else recordRequest(c, started, false);
  };
}

/**
 * The request's line and duration. `error` is its failure's code, also one that came after a 200 went
 * out; `aborted`, that its connection closed before the whole answer was written (the client left, or
 * we broke the answer off).
 */
function recordRequest(c: Context<AppEnv>, started: number, aborted: boolean): void {
  const { log, metrics } = c.var.deps;
  const ms = performance.now() - started;
  const error = c.get("errorCode");
  // Labelled by the error's code too: a 200 broken off mid-answer must not count as a success.
  metrics.httpDuration.observe({ method: c.req.method, route: c.req.routePath, status: String(c.res.status), ...(error ? { error } : {}) }, ms / 1000);
  // Error level is for our bugs (500): a readiness probe's 503 while a model loads, or a store that
  // is down, is the service answering as designed, and must not page whoever alerts on errors. A
  // failure after the status went out weighs as the status it would have had.
  const weight = error ? ERROR_STATUS[error] : c.res.status;
  const level = weight === 500 ? "error" : weight > 500 ? "warn" : "info";
  const jobId = c.get("jobId");
  log[level](
    {
      requestId: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ...(error ? { error } : {}),
      ...(c.get("errorCause") ? { cause: c.get("errorCause") } : {}),
      ...(aborted ? { aborted } : {}),
      ...(jobId ? { jobId } : {}),
      ms: Math.round(ms),
    },
    "request",
  );
}

/**
 * A request's failure as the core's error, counted and, when someone has to act (our bug, a full
 * disk), logged: for the error handler, and for a stream whose status has already gone out.
 */
export function recordError(err: unknown, c: Context<AppEnv>, requestId = c.get("requestId")): DomainError {
  const error = err instanceof Error ? err : new Error(String(err));
  const domainError =
    toDomainError(error) ??
    (error instanceof HTTPException && error.status < 500
      ? clientError(error)
      : // The work stopped because the client went away (its request's signal): no fault of ours.
        c.req.raw.signal?.aborted
        ? new DomainError("invalid_request", "The client closed the connection before the answer.", { cause: error })
        : new DomainError("internal", error.message, { cause: error }));
  c.set("errorCode", domainError.code);
  if (domainError.code === "internal") {
    c.get("deps")?.log.error({ requestId, err: error.stack ?? error.message, cause: describeCause(error) }, "unhandled error");
  } else if (domainError instanceof StorageFull) {
    c.get("deps")?.log.error({ requestId, err: error.message }, "no room on disk for the request's data: free space under DATA_DIR");
  } else if (ERROR_STATUS[domainError.code] >= 500) {
    // A 503 for a store or QStash that failed: the operator needs what it said (a revoked token, a timeout).
    const cause = describeCause(domainError);
    if (cause !== undefined) c.set("errorCause", cause);
  }
  c.get("deps")?.metrics.errors.inc({ code: domainError.code });
  return domainError;
}

/** The one error handler: every failure leaves as the same JSON shape with the request id. */
export function handleError(err: Error, c: Context<AppEnv>): Response {
  const requestId = c.get("requestId") ?? newRequestId();
  const domainError = recordError(err, c, requestId);
  if (domainError.retryAfterSeconds !== undefined) c.header("retry-after", String(domainError.retryAfterSeconds));
  return c.json(errorBody(domainError, requestId), ERROR_STATUS[domainError.code]);
}

/**
 * Hono's validators refuse a body they cannot parse (a multipart body without its boundary or
 * closing line, malformed JSON) or a media type the route does not take: the client's mistake,
 * said in the service's own words.
 */
function clientError(err: HTTPException): DomainError {
  const options = { cause: err };
  if (err.status === 415) {
    return new DomainError(
      "unsupported_media",
      "Unsupported Content-Type: send multipart/form-data with a file (or application/json with a url where the endpoint takes one).",
      options,
    );
  }
  if (err.status === 413) return new DomainError("payload_too_large", "The request body is too large.", options);
  if (/FormData/.test(err.message)) {
    return new DomainError(
      "invalid_request",
      "The multipart/form-data body is malformed: it needs the boundary from its Content-Type and must end with the closing boundary line.",
      options,
    );
  }
  if (/JSON/.test(err.message)) return new DomainError("invalid_request", "The request body is not valid JSON.", options);
  const code = (Object.keys(ERROR_STATUS) as ErrorCode[]).find((k) => ERROR_STATUS[k] === err.status) ?? "invalid_request";
  return new DomainError(code, err.message || "Invalid request.", options);
}

/** The messages of `err`'s causes, outermost first: a store's error wraps what Redis itself said. */
function describeCause(err: Error): string | undefined {
  const messages: string[] = [];
  for (let cause = (err as { cause?: unknown }).cause; cause !== undefined && messages.length < 5; cause = (cause as { cause?: unknown }).cause) {
    messages.push(cause instanceof Error ? cause.message : String(cause));
    if (!(cause instanceof Error)) break;
  }
  return messages.length > 0 ? messages.join(": ") : undefined;
}
