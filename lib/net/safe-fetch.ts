/**
 * Outbound HTTP for URLs that users control (media downloads, webhook callbacks), guarded
 * against SSRF: every hop is resolved, every resolved address is checked, and the socket is
 * pinned to the checked addresses so a second DNS answer (rebinding) never gets a say.
 */
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { pipeline } from "node:stream/promises";
import { DomainError } from "../errors.ts";
import { Deadline } from "./deadline.ts";
import { checkedAddresses, type OutboundPolicy, parseOutboundUrl, pinnedLookup, type ResolvedAddress } from "./outbound-policy.ts";

/** The connection failed or broke mid-response: a webhook sender should retry. */
export class OutboundNetworkError extends Error {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = "OutboundNetworkError";
  }
}

export interface SafeFetchInit {
  method?: string;
  headers?: HeadersInit;
  body?: string | Uint8Array;
  /** Cap on the response body; larger bodies fail with DomainError "payload_too_large". Default 1 MiB. */
  maxBytes?: number;
  /** Covers resolution, every redirect hop and reading the body. Default 30 s. */
  timeoutMs?: number;
  /** Redirects followed before failing with DomainError "upstream_failed". Default 5. */
  maxRedirects?: number;
  signal?: AbortSignal;
}

const DEFAULT_MAX_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NULL_BODY_STATUSES = new Set([204, 205, 304]);
const CREDENTIAL_HEADERS = ["authorization", "cookie", "proxy-authorization"];

/**
 * Like fetch, for untrusted URLs: only http(s), every hop's addresses checked against the
 * policy and pinned for the connection, redirects followed by hand. The returned Response's
 * body stream enforces maxBytes and the overall timeout as it is read.
 */
export async function safeFetch(url: string, init: SafeFetchInit, policy: OutboundPolicy): Promise<Response> {
  const maxBytes = init.maxBytes ?? DEFAULT_MAX_BYTES;
  const maxRedirects = init.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  let target = parseOutboundUrl(url);
  const deadline = new Deadline(init.timeoutMs ?? DEFAULT_TIMEOUT_MS, target.hostname, init.signal);
  let method = (init.method ?? "GET").toUpperCase();
  let body = init.body;
  const headers = new Headers(init.headers);

  try {
    for (let redirects = 0; ; redirects++) {
      const addresses = await checkedAddresses(target, policy, deadline);
      const res = await send(target, { method, headers, body }, addresses, deadline);
      const location = REDIRECT_STATUSES.has(res.statusCode ?? 0) ? res.headers.location : undefined;
      if (location === undefined) return toResponse(res, target, maxBytes, deadline);

      res.destroy();
      if (redirects >= maxRedirects) {
        const said = `${target.hostname} answered ${res.statusCode}, a redirect to ${location.slice(0, 512)}`;
        // Final: a job fetching this URL again meets the same chain (a callback's schedule retries regardless).
        throw new DomainError("upstream_failed", maxRedirects === 0 ? `${said}: redirects are not followed here` : `Too many redirects (more than ${maxRedirects}): ${said}`, {
          details: { status: res.statusCode },
          retryable: false,
        });
      }
      const nextTarget = parseOutboundUrl(redirectTarget(location, target));
      // Same rewrites as fetch: 303 (and 301/302 after POST) become a body-less GET,
      // and credentials never follow a redirect to another origin.
      const status = res.statusCode;
      if ((status === 303 && method !== "HEAD") || ((status === 301 || status === 302) && method === "POST")) {
        method = "GET";
        body = undefined;
        headers.delete("content-type");
        headers.delete("content-length");
      }
      if (nextTarget.origin !== target.origin) CREDENTIAL_HEADERS.forEach((name) => headers.delete(name));
      target = nextTarget;
    }
  } catch (err) {
    deadline.clear();
    throw err;
  }
}

function redirectTarget(location: string, from: URL): string {
  try {
    return new URL(location, from).href;
  } catch (cause) {
    throw new DomainError("upstream_failed", `${from.hostname} redirected to an invalid URL`, { cause });
  }
}

interface HopRequest {
  method: string;
  headers: Headers;
  body: string | Uint8Array | undefined;
}

function send(target: URL, request: HopRequest, addresses: readonly ResolvedAddress[], deadline: Deadline): Promise<IncomingMessage> {
  return new Promise((resolvePromise, reject) => {
    const transport = target.protocol === "https:" ? https : http;
    // agent: false keeps pooled sockets from being reused across different policy decisions.
    const req = transport.request(target, {
      method: request.method,
      headers: Object.fromEntries(request.headers),
      agent: false,
      lookup: pinnedLookup(addresses),
    });
    const stopWatching = deadline.onAbort((reason) => req.destroy(reason as Error));
    req.on("response", (res) => {
      stopWatching();
      resolvePromise(res);
    });
    req.on("error", (cause) => {
      stopWatching();
      reject(deadline.signal.aborted ? deadline.signal.reason : new OutboundNetworkError(`Request to ${target.hostname} failed: ${cause.message}`, { cause }));
    });
    req.end(request.body);
  });
}

function toResponse(res: IncomingMessage, target: URL, maxBytes: number, deadline: Deadline): Response {
  const status = res.statusCode ?? 0;
  if (status < 200 || status > 599) {
    res.destroy();
    throw new OutboundNetworkError(`${target.hostname} sent an invalid HTTP status ${status}`);
  }
  const declaredLength = Number(res.headers["content-length"]);
  if (declaredLength > maxBytes) {
    res.destroy();
    throw tooLarge(target, maxBytes);
  }
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  }
  const init = { status, statusText: res.statusMessage ?? "", headers };
  if (NULL_BODY_STATUSES.has(status)) {
    res.destroy();
    deadline.clear();
    return new Response(null, init);
  }
  return new Response(cappedBody(res, target, maxBytes, deadline), init);
}

function tooLarge(target: URL, maxBytes: number): DomainError {
  return new DomainError("payload_too_large", `Response from ${target.hostname} exceeds ${maxBytes} bytes`, {
    details: { max_bytes: maxBytes },
  });
}

/** Pull-based, so the socket is read only as fast as the consumer reads the Response. */
function cappedBody(res: IncomingMessage, target: URL, maxBytes: number, deadline: Deadline): ReadableStream<Uint8Array> {
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let received = 0;
  const stopWatching = deadline.onAbort((reason) => res.destroy(reason as Error));
  const finish = () => {
    stopWatching();
    deadline.clear();
  };

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let next: IteratorResult<Buffer>;
      try {
        next = await chunks.next();
      } catch (cause) {
        finish();
        throw deadline.signal.aborted ? deadline.signal.reason : new OutboundNetworkError(`Connection to ${target.hostname} broke while reading the response`, { cause });
      }
      if (next.done) {
        finish();
        controller.close();
        return;
      }
      received += next.value.length;
      if (received > maxBytes) {
        finish();
        res.destroy();
        throw tooLarge(target, maxBytes);
      }
      controller.enqueue(next.value);
    },
    cancel() {
      finish();
      res.destroy();
    },
  });
}

export interface DownloadOptions {
  maxBytes: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface DownloadResult {
  bytes: number;
  contentType: string | null;
}

/**
 * Streams a 2xx response body to `path` through safeFetch. Any failure (refusal, non-2xx,
 * size cap, timeout, broken connection) removes the partial file before rethrowing.
 */
export async function downloadToFile(url: string, path: string, options: DownloadOptions, policy: OutboundPolicy): Promise<DownloadResult> {
  const res = await safeFetch(url, options, policy).catch(asDownloadFailure);
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    // The media host's 4xx answers the same next time (but for a timeout or its rate limit); its 5xx may not.
    throw new DomainError("upstream_failed", `Download failed: ${new URL(url).hostname} responded with HTTP ${res.status}`, {
      details: { status: res.status },
      retryable: res.status >= 500 || res.status === 408 || res.status === 429,
    });
  }
  const file = createWriteStream(path);
  try {
    await pipeline(res.body, file);
  } catch (err) {
    // The stream opens its file asynchronously: removed before the open, the file would be created
    // after the removal and left behind (a host that broke off at once, seen once in CI).
    if (!file.closed) await new Promise<void>((closed) => file.once("close", () => closed()));
    await rm(path, { force: true });
    asDownloadFailure(err);
  }
  return { bytes: file.bytesWritten, contentType: res.headers.get("content-type") };
}

/** A media host that does not answer, or breaks off, is the upstream's failure, worth another try. */
function asDownloadFailure(err: unknown): never {
  if (err instanceof OutboundNetworkError) throw new DomainError("upstream_failed", `Download failed: ${err.message}`, { cause: err });
  throw err;
}
