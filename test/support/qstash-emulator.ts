/**
 * Test support only: an in-process stand-in for QStash v2, good enough for the
 * real `@upstash/qstash` Client (`new Client({ baseUrl: emulator.url, token })`)
 * to publish to it and for the real `Receiver` to verify what it delivers.
 *
 * Implemented:
 * - `POST /v2/publish/<destination-url>` (destination taken verbatim from the
 *   request target, query string included, as the SDK concatenates it) honouring
 *   Upstash-Method, Upstash-Delay (`10s`, `3m`, `2h`, `1d`, combinations),
 *   Upstash-Not-Before (unix seconds, wins over Upstash-Delay), Upstash-Retries
 *   (default 3), Upstash-Timeout (per attempt; no limit when absent),
 *   Upstash-Deduplication-Id, Upstash-Content-Based-Deduplication (destination +
 *   body + Content-Type + forwarded headers), Upstash-Callback,
 *   Upstash-Failure-Callback and Upstash-Forward-* (prefix stripped).
 *   Answers `201 {"messageId","url"}`, or `202 {"messageId","url","deduplicated":true}`
 *   with the original id for a duplicate within 10 minutes.
 * - `GET /v2/messages/<id>` while the message is waiting for its (next) attempt,
 *   `DELETE /v2/messages/<id>` to cancel it (`{"cancelled":1}`); 404 otherwise.
 * - Delivery: the body goes to the destination with Content-Type and forwarded
 *   headers, `Upstash-Message-Id`, `Upstash-Retried` (0 on the first attempt) and
 *   `Upstash-Signature`, an HS256 JWT signed with the current signing key with
 *   QStash's claims (iss "Upstash", sub = destination URL, iat/nbf = now,
 *   exp = now + 5 min, unique jti, body = base64url(sha256(body))).
 * - Retries: non-2xx or network error -> retried up to Upstash-Retries times after
 *   `retryBackoffMs * 2^retried` (default 200 ms), or after the response's
 *   Upstash-Retry-After / Retry-After seconds when given. Real QStash backs off
 *   for seconds to hours (min(86400, e^(2.5n)) s), far too slow for tests.
 * - Callbacks: as documented by QStash, Upstash-Callback is called after every
 *   attempt that got an HTTP response, failed ones included (a non-2xx report with
 *   `retried == maxRetries` is the final failure), and Upstash-Failure-Callback once retries are exhausted, each as a new signed
 *   message (same retry count) whose JSON body has status, header, body (base64),
 *   retried, maxRetries, sourceMessageId, url, method, sourceHeader, sourceBody
 *   (base64), notBefore, createdAt. A last attempt that never got a response is
 *   reported with status 0.
 *
 * Not implemented: URL groups/topics, queues, schedules, batch, DLQ (so no dlqId),
 * Upstash-Retry-Delay expressions, flow control, callback-specific
 * `Upstash-Callback-*` settings, non-retryable (489) responses, signing-key
 * rotation (the next key is accepted only so the options mirror the Receiver's).
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export interface QStashEmulatorOptions {
  currentSigningKey: string;
  nextSigningKey: string;
  token: string;
  /** Base of the exponential retry backoff; 200 ms unless given. */
  retryBackoffMs?: number;
}

export interface EmulatedAttempt {
  /** The `Upstash-Retried` value sent: 0 for the first attempt. */
  retried: number;
  /** Epoch ms when the request was sent. */
  startedAt: number;
  /** HTTP status, or null when no response arrived (network error, timeout). */
  status: number | null;
  error?: string;
}

export type EmulatedMessageState = "pending" | "delivered" | "failed" | "cancelled";

export interface EmulatedMessage {
  id: string;
  /** "callback" / "failure-callback" messages are the ones the emulator publishes itself. */
  kind: "publish" | "callback" | "failure-callback";
  /** For callbacks: the message whose outcome they report. */
  sourceMessageId?: string;
  destination: string;
  method: string;
  /** Headers delivered to the destination besides the Upstash-* ones (lower-case names). */
  headers: Record<string, string>;
  /** The body as UTF-8 text. */
  body: string;
  maxRetries: number;
  createdAt: number;
  notBefore: number;
  deduplicationId?: string;
  callback?: string;
  failureCallback?: string;
  attempts: EmulatedAttempt[];
  state: EmulatedMessageState;
}

export interface QStashEmulator {
  /** `http://127.0.0.1:<port>`, the value for `new Client({ baseUrl })`. */
  url: string;
  token: string;
  stop(): Promise<void>;
  /** Snapshot of every message, in publish order, callbacks included. */
  messages(): EmulatedMessage[];
  /**
   * Resolves once the message is delivered, failed or cancelled and the
   * callback messages it caused have settled too.
   */
  settled(messageId: string): Promise<EmulatedMessage>;
}

interface Tracked {
  message: EmulatedMessage;
  rawBody: Buffer;
  timeoutMs?: number;
  abort: AbortController;
  done?: Promise<void>;
}

interface DeliveryResponse {
  status: number;
  headers: Headers;
  body: Buffer;
}

class BadRequest extends Error {}

const DEFAULT_RETRIES = 3;
const DEFAULT_RETRY_BACKOFF_MS = 200;
const SIGNATURE_LIFETIME_S = 5 * 60;
// QStash does not document its window precisely; this outlasts any test.
const DEDUP_WINDOW_MS = 10 * 60_000;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export async function startQStashEmulator(options: QStashEmulatorOptions): Promise<QStashEmulator> {
  const { currentSigningKey, token } = options;
  const retryBackoffMs = options.retryBackoffMs ?? DEFAULT_RETRY_BACKOFF_MS;
  const tracked = new Map<string, Tracked>();
  const dedup = new Map<string, { messageId: string; expiresAt: number }>();
  const everything = new AbortController();

  const enqueue = (fields: Omit<EmulatedMessage, "id" | "attempts" | "state" | "body" | "createdAt">, rawBody: Buffer, timeoutMs?: number): Tracked => {
    const message: EmulatedMessage = {
      ...fields,
      id: `msg_${randomBytes(12).toString("hex")}`,
      body: rawBody.toString("utf8"),
      createdAt: Date.now(),
      attempts: [],
      state: "pending",
    };
    const abort = new AbortController();
    const entry: Tracked = { message, rawBody, timeoutMs, abort };
    tracked.set(message.id, entry);
    entry.done = deliver(entry);
    return entry;
  };

  const attempt = async (entry: Tracked, retried: number): Promise<DeliveryResponse> => {
    const { message, rawBody } = entry;
    const signals = [entry.abort.signal, everything.signal];
    if (entry.timeoutMs !== undefined) signals.push(AbortSignal.timeout(entry.timeoutMs));
    const hasBody = message.method !== "GET" && message.method !== "HEAD";
    const response = await fetch(message.destination, {
      method: message.method,
      headers: {
        ...message.headers,
        "user-agent": "Upstash-QStash",
        "upstash-message-id": message.id,
        "upstash-retried": String(retried),
        "upstash-signature": signJwt(currentSigningKey, message.destination, hasBody ? rawBody : Buffer.alloc(0)),
      },
      body: hasBody ? new Uint8Array(rawBody) : undefined,
      redirect: "manual",
      signal: AbortSignal.any(signals),
    });
    return {
      status: response.status,
      headers: response.headers,
      body: Buffer.from(await response.arrayBuffer()),
    };
  };

  const reportTo = (kind: "callback" | "failure-callback", url: string, source: Tracked, retried: number, response: DeliveryResponse | undefined): Tracked => {
    const { message } = source;
    const report = {
      status: response?.status ?? 0,
      header: response ? headersToRecord(response.headers) : {},
      body: (response?.body ?? Buffer.alloc(0)).toString("base64"),
      retried,
      maxRetries: message.maxRetries,
      sourceMessageId: message.id,
      url: message.destination,
      method: message.method,
      sourceHeader: Object.fromEntries(Object.entries(message.headers).map(([name, value]) => [canonicalHeaderName(name), [value]])),
      sourceBody: source.rawBody.toString("base64"),
      notBefore: String(message.notBefore),
      createdAt: String(message.createdAt),
    };
    return enqueue(
      {
        kind,
        sourceMessageId: message.id,
        destination: url,
        method: "POST",
        headers: { "content-type": "application/json" },
        maxRetries: message.maxRetries,
        notBefore: Date.now(),
      },
      Buffer.from(JSON.stringify(report)),
    );
  };

  async function deliver(entry: Tracked): Promise<void> {
    const { message } = entry;
    const signal = AbortSignal.any([entry.abort.signal, everything.signal]);
    const reports: Tracked[] = [];
    await sleepUntil(message.notBefore, signal);
    for (let retried = 0; !signal.aborted; retried++) {
      const record: EmulatedAttempt = { retried, startedAt: Date.now(), status: null };
      message.attempts.push(record);
      let response: DeliveryResponse | undefined;
      try {
        response = await attempt(entry, retried);
        record.status = response.status;
      } catch (error) {
        record.error = String(error);
      }
      if (signal.aborted) break;
      if (response && message.callback) {
        reports.push(reportTo("callback", message.callback, entry, retried, response));
      }
      if (response && response.status >= 200 && response.status < 300) {
        message.state = "delivered";
        break;
      }
      if (retried >= message.maxRetries) {
        message.state = "failed";
        if (message.failureCallback) {
          reports.push(reportTo("failure-callback", message.failureCallback, entry, retried, response));
        }
        break;
      }
      const delay = retryAfterMs(response?.headers) ?? retryBackoffMs * 2 ** retried;
      await sleepUntil(Date.now() + delay, signal);
    }
    // Still pending here means the loop was aborted by stop().
    if (message.state === "pending") message.state = "cancelled";
    await Promise.all(reports.map((report) => report.done));
  }

  const publish = async (req: IncomingMessage, destination: string): Promise<[number, unknown]> => {
    if (!/^https?:\/\//i.test(destination)) {
      throw new BadRequest(`destination must be an http(s) URL (URL groups are not emulated): ${destination}`);
    }
    const rawBody = await readBody(req);
    const headers = forwardedHeaders(req.headers);
    const delayMs = parseDuration(header(req.headers, "upstash-delay")) ?? 0;
    const notBeforeS = header(req.headers, "upstash-not-before");
    const notBefore = notBeforeS === undefined ? Date.now() + delayMs : parseInteger(notBeforeS, "Upstash-Not-Before") * 1000;
    const retries = header(req.headers, "upstash-retries");
    const deduplicationId =
      header(req.headers, "upstash-deduplication-id") ??
      (header(req.headers, "upstash-content-based-deduplication") === "true" ? contentHash(destination, rawBody, headers) : undefined);

    const now = Date.now();
    const previous = deduplicationId === undefined ? undefined : dedup.get(deduplicationId);
    if (previous && previous.expiresAt > now) {
      return [202, { messageId: previous.messageId, url: destination, deduplicated: true }];
    }
    const entry = enqueue(
      {
        kind: "publish",
        destination,
        method: header(req.headers, "upstash-method")?.toUpperCase() ?? "POST",
        headers,
        maxRetries: retries === undefined ? DEFAULT_RETRIES : parseInteger(retries, "Upstash-Retries"),
        notBefore,
        deduplicationId,
        callback: callbackUrl(req.headers, "upstash-callback"),
        failureCallback: callbackUrl(req.headers, "upstash-failure-callback"),
      },
      rawBody,
      parseDuration(header(req.headers, "upstash-timeout")),
    );
    if (deduplicationId !== undefined) {
      dedup.set(deduplicationId, { messageId: entry.message.id, expiresAt: now + DEDUP_WINDOW_MS });
    }
    return [201, { messageId: entry.message.id, url: destination }];
  };

  const route = async (req: IncomingMessage): Promise<[number, unknown]> => {
    if (req.headers.authorization !== `Bearer ${token}`) return [401, { error: "Unauthorized" }];
    const target = req.url ?? "/";
    const publishPrefix = "/v2/publish/";
    if (req.method === "POST" && target.startsWith(publishPrefix)) {
      return publish(req, target.slice(publishPrefix.length));
    }
    const messageId = /^\/v2\/messages\/([^/?]+)$/.exec(target)?.[1];
    const entry = messageId === undefined ? undefined : tracked.get(decodeURIComponent(messageId));
    if (messageId !== undefined && (req.method === "GET" || req.method === "DELETE")) {
      // Like QStash, only messages not yet delivered or failed can be looked up or cancelled.
      if (entry?.message.state !== "pending") {
        return [404, { error: "message not found" }];
      }
      if (req.method === "DELETE") {
        entry.message.state = "cancelled";
        entry.abort.abort();
        return [200, { cancelled: 1 }];
      }
      return [200, describe(entry.message)];
    }
    return [404, { error: `${req.method} ${target} is not emulated` }];
  };

  const server = createServer((req, res) => {
    route(req).then(
      ([status, body]) => reply(res, status, body),
      (error: unknown) => (error instanceof BadRequest ? reply(res, 400, { error: error.message }) : reply(res, 500, { error: String(error) })),
    );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    token,
    messages: () => [...tracked.values()].map(({ message }) => structuredClone(message)),
    async settled(messageId) {
      const entry = tracked.get(messageId);
      if (!entry) throw new Error(`unknown message ${messageId}`);
      await entry.done;
      return structuredClone(entry.message);
    },
    async stop() {
      const closed = once(server, "close");
      server.close();
      server.closeAllConnections();
      everything.abort();
      await Promise.all([closed, ...[...tracked.values()].map((entry) => entry.done)]);
    },
  };
}

/** QStash's `Upstash-Signature`: an HS256 JWT over the destination URL and a hash of the body. */
function signJwt(signingKey: string, url: string, body: Buffer): string {
  const now = Math.floor(Date.now() / 1000);
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const header = encode({ alg: "HS256", typ: "JWT" });
  const payload = encode({
    iss: "Upstash",
    sub: url,
    exp: now + SIGNATURE_LIFETIME_S,
    nbf: now,
    iat: now,
    jti: `jwt_${randomBytes(12).toString("hex")}`,
    // QStash pads the body hash ("...=") even though it is base64url; the
    // Receiver strips padding before comparing, so either form verifies.
    body: createHash("sha256").update(body).digest("base64").replace(/\+/g, "-").replace(/\//g, "_"),
  });
  const signature = createHmac("sha256", signingKey).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

function describe(message: EmulatedMessage) {
  return {
    messageId: message.id,
    url: message.destination,
    method: message.method,
    header: Object.fromEntries(Object.entries(message.headers).map(([name, value]) => [canonicalHeaderName(name), [value]])),
    body: message.body,
    maxRetries: message.maxRetries,
    notBefore: message.notBefore,
    createdAt: message.createdAt,
    callback: message.callback,
    failureCallback: message.failureCallback,
  };
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/** Content-Type plus every Upstash-Forward-* header, with the prefix stripped. */
function forwardedHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const forwarded: Record<string, string> = {};
  const prefix = "upstash-forward-";
  for (const name of Object.keys(headers)) {
    const value = header(headers, name);
    if (value === undefined) continue;
    if (name === "content-type") forwarded[name] = value;
    else if (name.startsWith(prefix)) forwarded[name.slice(prefix.length)] = value;
  }
  return forwarded;
}

function callbackUrl(headers: IncomingHttpHeaders, name: string): string | undefined {
  const url = header(headers, name);
  if (url !== undefined && !/^https?:\/\//i.test(url)) throw new BadRequest(`${name} must be an http(s) URL`);
  return url;
}

function contentHash(destination: string, body: Buffer, headers: Record<string, string>): string {
  const hash = createHash("sha256").update(destination).update("\0").update(body);
  for (const [name, value] of Object.entries(headers).sort(([a], [b]) => a.localeCompare(b))) {
    hash.update(`\0${name}:${value}`);
  }
  return hash.digest("hex");
}

function parseDuration(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parts = [...value.trim().matchAll(/(\d+)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((part) => part[0]).join("") !== value.trim()) {
    throw new BadRequest(`invalid duration ${JSON.stringify(value)}`);
  }
  return parts.reduce((total, [, amount, unit]) => total + Number(amount) * (UNIT_MS[unit ?? ""] ?? 0), 0);
}

function parseInteger(value: string, name: string): number {
  if (!/^\d+$/.test(value.trim())) throw new BadRequest(`invalid ${name}: ${JSON.stringify(value)}`);
  return Number(value);
}

/**
 * Timers can fire a little before Date.now() reaches the due time; looping
 * makes "never before notBefore / Retry-After" hold exactly. Returns early,
 * without throwing, when aborted.
 */
async function sleepUntil(dueAt: number, signal: AbortSignal): Promise<void> {
  while (!signal.aborted && Date.now() < dueAt) {
    await sleep(dueAt - Date.now(), undefined, { signal }).catch(() => undefined);
  }
}

function retryAfterMs(headers: Headers | undefined): number | undefined {
  const value = headers?.get("upstash-retry-after") ?? headers?.get("retry-after");
  return value != null && /^\d+$/.test(value.trim()) ? Number(value) * 1000 : undefined;
}

/** QStash (Go) reports headers as `Canonical-Name: [values]`. */
function headersToRecord(headers: Headers): Record<string, string[]> {
  const record: Record<string, string[]> = {};
  headers.forEach((value, name) => {
    (record[canonicalHeaderName(name)] ??= []).push(value);
  });
  return record;
}

function canonicalHeaderName(name: string): string {
  return name
    .split("-")
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1).toLowerCase())
    .join("-");
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}
