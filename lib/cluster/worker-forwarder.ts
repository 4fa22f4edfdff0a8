/**
 * How an api instance (ROLE=api) serves the synchronous audio endpoints: it has no model, so each
 * request goes on to a worker at WORKER_URL as it arrives, and the worker's answer comes back as it
 * is produced. The api instance holds neither the whole upload nor the whole response.
 */
import { type Agent, type ClientRequest, Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { DomainError } from "../errors.ts";

/** Headers about one connection rather than the request (RFC 9110, 7.6.1), and the api's own Host. */
// Expect is hop-by-hop too: Node answered the client's 100-continue already.
const NOT_FORWARDED = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "expect"]);

// A worker that is down now is usually back within seconds (a restart, a machine replaced).
const UNREACHABLE_RETRY_AFTER_SECONDS = 5;

/**
 * How long the rest of an upload no worker takes is read (and dropped). A client that stalls or
 * trickles past it has its connection closed rather than holding the api.
 */
const DRAIN_LIMIT_MS = 30_000;

/**
 * An idle connection to the worker is closed after this, before the worker's own 5 s (Node's
 * keepAliveTimeout) could close it under a request just sent on it, which would fail as a 503.
 * Node's agent keeps idle connections open indefinitely without one.
 */
const IDLE_CONNECTION_MS = 4_000;

/** A worker only answers once it has transcribed; past this a synchronous request should have been a job. */
const HEADERS_TIMEOUT_MS = 300_000;

/**
 * Told that the worker's connection broke mid-answer (not because the client left). `betweenEvents`:
 * the answer is an event stream and what was passed on of it ends with a whole event, so one more
 * event can still end it cleanly: the one returned (its data, as JSON). Returning nothing, the
 * handler must end the client's connection itself.
 */
export type CutOffHandler = (err: Error, betweenEvents: boolean) => object | undefined;

export interface WorkerForwarderOptions {
  /** The workers' base URL, e.g. http://worker.process.<app>.internal:8080 on Fly. */
  workerUrl: string;
  /** How long after the whole upload was sent the worker may take to answer; tests shorten it. */
  headersTimeoutMs?: number;
}

export class WorkerForwarder {
  readonly #base: string;
  readonly #request: typeof httpRequest;
  readonly #agent: Agent;
  readonly #headersTimeoutMs: number;

  constructor(options: WorkerForwarderOptions) {
    this.#base = options.workerUrl.replace(/\/+$/, "");
    const https = new URL(this.#base).protocol === "https:";
    this.#request = https ? httpsRequest : httpRequest;
    const pool = { keepAlive: true, timeout: IDLE_CONNECTION_MS };
    this.#agent = https ? new HttpsAgent(pool) : new HttpAgent(pool);
    this.#headersTimeoutMs = options.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  }

  /**
   * The worker's response to `request` (same method, path, query, headers and body), under this
   * request's id so both instances log it alike. A worker that cannot be reached, or that drops the
   * connection before answering, is a 503 with Retry-After: the request can simply be sent again.
   * A worker's connection that breaks mid-answer (not because the client left) errors the answer's
   * body, or, given `onCutOff`, is handed to it instead (see CutOffHandler).
   */
  async forward(request: Request, requestId: string, onCutOff?: CutOffHandler): Promise<Response> {
    const { pathname, search } = new URL(request.url);
    const upload = request.body?.getReader();
    // Node's client, not fetch: a worker that answers before the upload ended and closes the
    // connection (its parser's 408/431/400, any answer with Connection: close) made fetch reject for
    // the failed write, and the client got a 503 "retry shortly" for a request that may never
    // succeed. Here the answer counts once it has arrived, whatever becomes of the upload.
    const outgoing = this.#request(`${this.#base}${pathname}${search}`, {
      method: request.method,
      headers: Object.fromEntries(endToEnd(request.headers, { "x-request-id": requestId })),
      agent: this.#agent,
      // A client that leaves cancels the worker's work too.
      signal: request.signal,
    });
    const sent = send(upload, outgoing);
    let response: IncomingMessage;
    try {
      response = await answerOf(outgoing, this.#headersTimeoutMs);
    } catch (err) {
      if (request.signal.aborted) throw err;
      // Answered now, the client would still be sending: it would see EPIPE instead of the 503, and a
      // connection it kept for its next request would be reset. The rest of the upload is read first.
      await sent;
      if (err instanceof HeadersTimeout) {
        throw new DomainError(
          "timeout",
          `The worker did not finish within the ${this.#headersTimeoutMs / 1000} s a forwarded request may take; submit long files as jobs (POST /v1/jobs).`,
          { cause: err },
        );
      }
      throw new DomainError("unavailable", "No transcription worker could be reached; retry shortly.", { cause: err, retryAfterSeconds: UNREACHABLE_RETRY_AFTER_SECONDS });
    }
    const headers = new Headers();
    for (let i = 0; i < response.rawHeaders.length; i += 2) headers.append(response.rawHeaders[i]!, response.rawHeaders[i + 1]!);
    return new Response(bodyOf(response, request.signal, onCutOff), { status: response.statusCode, statusText: response.statusMessage, headers: endToEnd(headers) });
  }
}

class HeadersTimeout extends Error {}

/** The worker's answer, or why there is none: the connection failed, or the answer did not come in time. */
function answerOf(outgoing: ClientRequest, timeoutMs: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    // The wait counts from the end of the upload: a slow upload is not a slow worker.
    const startWaiting = () => {
      timer = setTimeout(() => outgoing.destroy(new HeadersTimeout(`no answer in ${timeoutMs} ms`)), timeoutMs);
    };
    outgoing.once("finish", startWaiting);
    outgoing.once("response", (response: IncomingMessage) => {
      // An answer given before the upload ended (a 429, a 503) must not start the wait when the rest
      // has been sent: the timer would hold the process open for its whole length after a stop.
      outgoing.off("finish", startWaiting);
      clearTimeout(timer);
      resolve(response);
    });
    // Stays after the answer: a write the worker no longer takes fails then, and changes nothing.
    outgoing.on("error", (err) => {
      outgoing.off("finish", startWaiting);
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Writes the upload to the worker as it arrives, as long as the worker's connection takes it. What
 * is left after that (the worker answered early, or could not be reached) is read and dropped for at
 * most DRAIN_LIMIT_MS, then cancelled, which closes the client's connection.
 */
async function send(upload: ReadableStreamDefaultReader<Uint8Array> | undefined, outgoing: ClientRequest): Promise<void> {
  if (!upload) return void outgoing.end();
  let timer: NodeJS.Timeout | undefined;
  const giveUp = () => (timer = setTimeout(() => void upload.cancel().catch(() => undefined), DRAIN_LIMIT_MS));
  outgoing.once("close", giveUp);
  try {
    for (let chunk = await upload.read(); !chunk.done; chunk = await upload.read()) {
      // An answer the worker sent just before closing the connection is read before the next write
      // can fail: Node discards what it had not read of a connection a write failed on.
      await new Promise((resolve) => setImmediate(resolve));
      if (!outgoing.destroyed && !outgoing.write(chunk.value)) await writable(outgoing);
    }
    if (!outgoing.destroyed) outgoing.end();
  } catch {
    // The client went away meanwhile: its signal has cancelled the worker's request.
  } finally {
    outgoing.off("close", giveUp);
    clearTimeout(timer);
  }
}

/**
 * Resolves once the worker's connection takes more, or is gone. The socket's own drain counts: once
 * the worker's whole answer is in (an early 429 or 503), Node's client stops passing it on to the
 * request, and the upload, the client's connection with it, would stall until the worker closed its
 * idle connection, about when the api's own keep-alive deadline resets the client's next request.
 */
function writable(outgoing: ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const socket = outgoing.socket;
    const done = () => {
      outgoing.off("drain", done);
      outgoing.off("close", done);
      outgoing.off("socket", done);
      socket?.off("drain", done);
      resolve();
    };
    outgoing.once("drain", done);
    outgoing.once("close", done);
    // Written before there was a socket: the next write, once there is one, waits on the socket.
    if (socket) socket.once("drain", done);
    else outgoing.once("socket", done);
  });
}

/** The worker's answer as it arrives, until its end or the break of the worker's connection (see forward). */
function bodyOf(response: IncomingMessage, client: AbortSignal, onCutOff?: CutOffHandler): ReadableStream<Uint8Array> {
  // Anything but plain text (compressed, say) could not take an event written after it.
  const eventStream = response.headers["content-type"]?.split(";")[0]?.trim().toLowerCase() === "text/event-stream" && !response.headers["content-encoding"];
  // The last two bytes passed on: a worker's events (Hono's writeSSE) each end with a blank line.
  let tail = "";
  return new ReadableStream<Uint8Array>({
    start(controller) {
      response.on("data", (chunk: Buffer) => {
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if (eventStream) tail = (tail + chunk.subarray(-2).toString("latin1")).slice(-2);
        if ((controller.desiredSize ?? 0) <= 0) response.pause();
      });
      response.once("end", () => controller.close());
      response.once("error", (err) => {
        // A client that left broke the worker's connection itself, and its answer is cancelled already.
        if (client.aborted) return;
        if (!onCutOff) return controller.error(err);
        const last = onCutOff(err, eventStream && (tail === "" || tail === "\n\n"));
        if (last === undefined) return;
        controller.enqueue(new TextEncoder().encode(`data: ${JSON.stringify(last)}\n\n`));
        controller.close();
      });
    },
    pull() {
      response.resume();
    },
    cancel() {
      response.destroy();
    },
  });
}

function endToEnd(source: Headers, overrides: Record<string, string> = {}): Headers {
  const dropped = new Set([...NOT_FORWARDED, ...(source.get("connection") ?? "").split(",").map((name) => name.trim().toLowerCase())]);
  const headers = new Headers();
  for (const [name, value] of source) if (!dropped.has(name)) headers.append(name, value);
  for (const [name, value] of Object.entries(overrides)) headers.set(name, value);
  return headers;
}
