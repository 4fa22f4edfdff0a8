import { serve, type ServerType } from "@hono/node-server";
import { type IncomingMessage, type Server, STATUS_CODES } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import type { Config } from "../lib/config.ts";
import { DomainError, errorBody } from "../lib/errors.ts";
import { formatBytes } from "../lib/capacity/machine.ts";
import type { Logger } from "../lib/log.ts";
import { createServices, type Services } from "../lib/services.ts";
import { createApp } from "./app.ts";
import { ERROR_STATUS } from "./error-status.ts";
import { corsHeaders } from "./cors.ts";
import { newRequestId, requestOn } from "./middleware.ts";

/** How long requests interrupted at the end of the grace period have to write their 503. */
const INTERRUPTED_ANSWER_MS = 1_000;

/**
 * How long the stop may take beyond SHUTDOWN_GRACE, every step together: the 503s above, jobs
 * handed back, callbacks still on the wire, the inference thread's last call, ffmpeg. What is not
 * done by then is cut off (a callback cut off is sent again at the next start), so the process is
 * gone before a container runtime's stop timeout of SHUTDOWN_GRACE + this + 1 s (README, infra/README.md).
 */
export const STOP_AFTER_GRACE_MS = 4_000;

/** Where a client on this machine reaches a server listening on `host` (a wildcard is not an address to connect to). */
function reachableHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::") return "[::1]";
  return host.includes(":") ? `[${host}]` : host;
}

/** The Origin header among the bytes Node's parser had when it refused a request (headers usually come in one packet). */
function originIn(rawPacket: unknown): string | undefined {
  return Buffer.isBuffer(rawPacket) ? /\r\norigin:[ \t]*([^\r\n]*?)[ \t]*\r\n/i.exec(rawPacket.toString("latin1"))?.[1] : undefined;
}

/**
 * Requests Node's HTTP server refuses before or while the app reads them (headers over its 16 KiB
 * limit, a broken request line, a request not received whole within its requestTimeout) still get
 * the service's error shape, CORS headers and a log line, under the id of the request in progress
 * on the socket when there is one, so the id the client sees is the one the logs carry.
 */
function answerUnparsableRequest(log: Logger, origins: string[]): (err: NodeJS.ErrnoException & { rawPacket?: unknown }, socket: Duplex) => void {
  return (err, socket) => {
    if (!socket.writable || err.code === "ECONNRESET") {
      socket.destroy();
      return;
    }
    const inProgress = requestOn(socket);
    const requestId = inProgress?.id ?? newRequestId();
    const error =
      err.code === "HPE_HEADER_OVERFLOW"
        ? new DomainError("headers_too_large", "The request headers are too large.")
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? new DomainError("request_timeout", "The request was not received whole in time; send it again.")
          : new DomainError("invalid_request", "The request is not valid HTTP.");
    const status = ERROR_STATUS[error.code];
    log.info({ requestId, status, error: error.code, reason: err.code }, "request refused by the HTTP parser");
    const body = JSON.stringify(errorBody(error, requestId));
    const headers = {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
      "x-request-id": requestId,
      ...corsHeaders(inProgress?.origin ?? originIn(err.rawPacket), origins),
      connection: "close",
    };
    const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${head.join("")}\r\n${body}`);
  };
}

/** What the listener answers while the services are still being built, logged as the app logs every request. */
export function startingUp(request: Request, origins: string[], log: Pick<Logger, "warn">): Response {
  const requestId = newRequestId();
  log.warn({ requestId, method: request.method, path: new URL(request.url).pathname, status: ERROR_STATUS.unavailable, error: "unavailable", ms: 0 }, "request");
  return Response.json(errorBody(new DomainError("unavailable", "Starting up."), requestId), {
    status: ERROR_STATUS.unavailable,
    headers: { "retry-after": "2", "x-request-id": requestId, ...corsHeaders(request.headers.get("origin") ?? undefined, origins) },
  });
}

export interface RunningServer {
  url: string;
  services: Services;
  close(): Promise<void>;
}

/**
 * Listens first (so the port, possibly a random one, is known for callback links), then builds the
 * services; until they are ready every request gets 503.
 */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  // env carries Node's request and response, which the app reads uploads from.
  let handle: ((request: Request, env: unknown) => Response | Promise<Response>) | null = null;
  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve(
      {
        fetch: (request, env) => handle?.(request, env) ?? startingUp(request, config.CORS_ORIGINS, log),
        port: config.PORT,
        hostname: config.HOST,
        // A body the app did not read is discarded by the app (settleUnreadBody), with no deadline
        // that would close a keep-alive connection under a client still sending it.
        autoCleanupIncoming: false,
        // Node checks the deadline every connectionsCheckingInterval (30 s by default), which would
        // stretch a short one.
        serverOptions: { requestTimeout: config.REQUEST_TIMEOUT, connectionsCheckingInterval: connectionsCheckingInterval(config.REQUEST_TIMEOUT) },
      },
      () => {
        s.off("error", reject);
        resolve(s);
      },
    );
    // A port in use or not ours to bind: the start fails with it rather than crashing the process.
    s.once("error", reject);
  });
  (server as Server).on("clientError", answerUnparsableRequest(log, config.CORS_ORIGINS));
  const { port } = server.address() as AddressInfo;
  const url = `http://${reachableHost(config.HOST)}:${port}`;
  let services: Services;
  try {
    services = await createServices(config, log, { listenUrl: url });
  } catch (err) {
    // The listener answered 503 while the services were built; it must not keep a process that
    // cannot serve alive, nor wait for a client still sending a request it could not answer yet
    // (up to REQUEST_TIMEOUT): such a connection is closed too.
    const closed = new Promise<void>((resolve) => (server as Server).close(() => resolve()));
    (server as Server).closeAllConnections();
    await closed;
    throw err;
  }
  const { transcriber } = services;
  if (transcriber) {
    const { plan } = transcriber;
    log.info(
      {
        role: config.ROLE,
        memory: `${formatBytes(plan.machine.memoryBytes)} (${plan.machine.memorySource})`,
        cpus: `${plan.machine.cpus} (${plan.machine.cpuSource})`,
        models: plan.rows.map(
          (r) =>
            `${r.model} ${r.dtype}: ${formatBytes(r.footprint.residentBytes)} loaded, ${formatBytes(r.footprint.rowBytes)} per slot${r.size === null ? " (its size is not in its name: planned as small)" : r.footprint.measured ? "" : " (estimated)"}`,
        ),
        slots: plan.slots,
        threads: plan.threads,
        modelCopies: 1,
        limitedBy: plan.limitedBy,
        transcriptionsAtOnce: transcriber.admission.stats.permits,
        queue: config.QUEUE_SIZE,
        // A beam search's beams are rows (at most the slots): fewer windows decode at once.
        decoding: config.BEAM_SIZE > 1 ? `beam search, ${Math.min(config.BEAM_SIZE, plan.slots)} beams: ${searchesAtOnce(plan.slots, config.BEAM_SIZE)}` : "greedy",
        bestOf: config.BEST_OF,
      },
      "capacity plan",
    );
    if (plan.machine.memoryWarning) log.warn(plan.machine.memoryWarning);
    if (!plan.fits) log.warn("the configured models leave no memory for even one job; expect failures under load");
    if (plan.threads > plan.machine.cpus) {
      log.warn({ threads: plan.threads, cpus: plan.machine.cpus }, "THREADS is more than the cores: onnxruntime's threads take turns on them, which is slower, not faster");
    }
  } else {
    log.info(
      { role: config.ROLE, workerUrl: config.WORKER_URL, qstashDeliveryUrl: services.qstash?.deliveryUrl },
      "api only: no model loaded, jobs go to QStash, /v1/audio/* to the workers",
    );
  }
  for (const warning of config.deprecations) log.warn(warning);
  if (!services.apiKeys.required) log.warn("ALLOW_ANONYMOUS=true: the API accepts requests without an API key");

  const app = createApp(services);
  handle = (request, env) => app.fetch(request, env as { incoming?: IncomingMessage });
  // url is where a client on this machine connects; the socket itself is bound to HOST.
  log.info({ url, bound: `${config.HOST}:${port}` }, "listening");
  return {
    url,
    services,
    async close() {
      const graceMs = config.SHUTDOWN_GRACE;
      log.info({ graceMs }, "draining: no new connections; running work gets the grace period");
      // One bound on the whole stop, not one per step; referenced, so the steps waiting on it keep
      // the process alive until it passes, and cleared at the end so it does not keep it any longer.
      const deadline = new AbortController();
      const deadlineTimer = setTimeout(() => deadline.abort(), graceMs + STOP_AFTER_GRACE_MS);
      try {
        const http = server as Server;
        const requestsDone = new Promise<void>((resolve) => http.close(() => resolve()));
        http.closeIdleConnections();
        // The timer is cleared once requests are done: left pending it would hold the process open
        // for the whole grace period after everything had stopped.
        let graceTimer: NodeJS.Timeout | undefined;
        const graceOver = new Promise<void>((resolve) => (graceTimer = setTimeout(resolve, graceMs)));
        await Promise.all([services.drain(graceMs, deadline.signal), Promise.race([requestsDone, graceOver]).finally(() => clearTimeout(graceTimer))]);
        // Past the grace: a request still transcribing is answered 503, and has a moment to be written,
        // rather than have its connection closed with no answer at all.
        services.interruptRunning();
        let answeredTimer: NodeJS.Timeout | undefined;
        await Promise.race([requestsDone, new Promise<void>((resolve) => (answeredTimer = setTimeout(resolve, INTERRUPTED_ANSWER_MS)))]).finally(() => clearTimeout(answeredTimer));
        http.closeAllConnections();
        // Only now: a request still arriving (an upload) needs the stores and the scratch space.
        await services.close(deadline.signal);
      } finally {
        clearTimeout(deadlineTimer);
      }
      log.info("stopped: jobs handed back, leases released");
      log.flush();
    },
  };
}

/** How many windows' beam searches fit the slots at once (a beam size above the slots searches with the slots). */
function searchesAtOnce(slots: number, beamSize: number): string {
  const n = Math.max(1, Math.floor(slots / Math.min(beamSize, slots)));
  return `${n} window${n === 1 ? "" : "s"} at once`;
}

/**
 * How often Node looks for requests past their deadline: a quarter of it, between 100 ms and 30 s,
 * in whole milliseconds (Node refuses a fraction: REQUEST_TIMEOUT=1.25s stopped the server starting).
 */
export function connectionsCheckingInterval(requestTimeoutMs: number): number {
  return Math.min(30_000, Math.max(100, Math.floor(requestTimeoutMs / 4)));
}
