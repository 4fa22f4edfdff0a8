/**
 * How an api instance (ROLE=api) serves the synchronous audio endpoints: it has no model, so each
 * request goes on to a worker at WORKER_URL as it arrives, and the worker's answer comes back as it
 * is produced. The api instance holds neither the whole upload nor the whole response.
 */
import { DomainError } from "../errors.ts";

/** Headers about one connection rather than the request (RFC 9110, 7.6.1), and the api's own Host. */
// Expect is hop-by-hop too: Node answered the client's 100-continue already, and fetch refuses to send one.
const NOT_FORWARDED = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "expect"]);

// A worker that is down now is usually back within seconds (a restart, a machine replaced).
const UNREACHABLE_RETRY_AFTER_SECONDS = 5;

/**
 * How long the rest of an upload no worker took is read (and dropped) before the 503 goes out. A
 * client that stalls or trickles past it has its connection closed rather than holding the api.
 */
const DRAIN_LIMIT_MS = 30_000;

export interface WorkerForwarderOptions {
  /** The workers' base URL, e.g. http://worker.process.<app>.internal:8080 on Fly. */
  workerUrl: string;
  /** The HTTP client; tests pass one to produce failures a real worker cannot produce quickly. */
  fetch?: typeof fetch;
}

export class WorkerForwarder {
  readonly #base: string;
  readonly #fetch: typeof fetch;

  constructor(options: WorkerForwarderOptions) {
    this.#base = options.workerUrl.replace(/\/+$/, "");
    this.#fetch = options.fetch ?? fetch;
  }

  /**
   * The worker's response to `request` (same method, path, query, headers and body), under this
   * request's id so both instances log it alike. A worker that cannot be reached, or that drops the
   * connection before answering, is a 503 with Retry-After: the request can simply be sent again.
   */
  async forward(request: Request, requestId: string): Promise<Response> {
    const { pathname, search } = new URL(request.url);
    const upload = request.body?.getReader();
    // Node's fetch refuses a streamed body without `duplex`, an option TypeScript's DOM types lack.
    const init: RequestInit & { duplex: "half" } = {
      method: request.method,
      headers: endToEnd(request.headers, { "x-request-id": requestId }),
      body: upload && uncancellable(upload),
      duplex: "half",
      // A client that leaves cancels the worker's work too.
      signal: request.signal,
    };
    let response: Response;
    try {
      response = await this.#fetch(`${this.#base}${pathname}${search}`, init);
    } catch (err) {
      if (request.signal.aborted) throw err;
      // fetch cancels a body it could not send, which here destroys the client's connection under
      // the answer: mid-upload the client saw EPIPE instead of the 503, and a connection it kept
      // for its next request was reset. The rest of the upload is read first.
      if (upload) await drain(upload);
      // Node's fetch waits at most 300 s for response headers, and a worker only answers once it has
      // transcribed: the work may still be going on, so this is a timeout, not an absent worker.
      if (causeCode(err) === "UND_ERR_HEADERS_TIMEOUT") {
        throw new DomainError("timeout", "The worker did not finish within the 300 s a forwarded request may take; submit long files as jobs (POST /v1/jobs).", { cause: err });
      }
      throw new DomainError("unavailable", "No transcription worker could be reached; retry shortly.", { cause: err, retryAfterSeconds: UNREACHABLE_RETRY_AFTER_SECONDS });
    }
    const headers = endToEnd(response.headers);
    // fetch has already decoded a compressed body, so its encoding and length no longer describe it.
    if (headers.has("content-encoding")) {
      headers.delete("content-encoding");
      headers.delete("content-length");
    }
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  }
}

/** The upload as fetch sends it, except that fetch's cancel leaves the client's stream to drain(). */
function uncancellable(upload: ReadableStreamDefaultReader<Uint8Array>): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await upload.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
  });
}

/** Reads what is left of the upload, for at most DRAIN_LIMIT_MS (then cancels it, which closes the connection). */
async function drain(upload: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  const timer = setTimeout(() => void upload.cancel().catch(() => undefined), DRAIN_LIMIT_MS);
  try {
    while (!(await upload.read()).done);
  } catch {
    // The client went away meanwhile: nothing is left to answer.
  } finally {
    clearTimeout(timer);
  }
}

function endToEnd(source: Headers, overrides: Record<string, string> = {}): Headers {
  const dropped = new Set([...NOT_FORWARDED, ...(source.get("connection") ?? "").split(",").map((name) => name.trim().toLowerCase())]);
  const headers = new Headers();
  for (const [name, value] of source) if (!dropped.has(name)) headers.append(name, value);
  for (const [name, value] of Object.entries(overrides)) headers.set(name, value);
  return headers;
}

function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  return typeof cause?.code === "string" ? cause.code : undefined;
}
