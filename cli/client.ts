/**
 * A small fetch-based client for slotscribe's HTTP API, and the plumbing the API commands share
 * (connection flags, error reporting, output).
 */
import { randomUUID } from "node:crypto";
import { openAsBlob } from "node:fs";
import { writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type ParseArgsConfig, parseArgs } from "node:util";
import { isFinal, type JobStatus } from "../lib/jobs/ports.ts";
import type { JobView } from "../lib/jobs/view.ts";
import { RESPONSE_FORMATS, type ResponseFormat } from "../lib/transcript.ts";
import { parseRetryAfter } from "../lib/webhooks/retry-schedule.ts";

const DEFAULT_SERVER = "http://127.0.0.1:8080";

export interface JobList {
  object: "list";
  data: JobView[];
  next_cursor: string | null;
}

/**
 * Every failure to get an answer from the API. `status` is the HTTP status, or 0 when no response
 * arrived at all (as browsers' fetch reports it); `code` is then "network_error" or "timeout".
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | null;
  readonly retryAfterSeconds?: number;
  /** The request certainly never reached a server: nothing listens there, or the name does not resolve. */
  readonly unreached: boolean;

  constructor(status: number, code: string, message: string, requestId: string | null, options: { cause?: unknown; retryAfterSeconds?: number; unreached?: boolean } = {}) {
    super(message, { cause: options.cause });
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.unreached = options.unreached ?? false;
  }
}

export type AudioSource = { file: string } | { url: string };

export interface TranscribeOptions {
  model?: string;
  language?: string;
  format?: ResponseFormat;
  /** Whisper's initial prompt: spellings, names, style. */
  prompt?: string;
  /** The first decoding temperature. */
  temperature?: number;
  /** Each word's times (timestamp_granularities word), shown by verbose_json. */
  words?: boolean;
}

/** The options as multipart fields, on both endpoints. */
function formFields(options: TranscribeOptions): Record<string, string | undefined> {
  return {
    model: options.model,
    language: options.language,
    response_format: options.format,
    prompt: options.prompt,
    temperature: options.temperature === undefined ? undefined : String(options.temperature),
    "timestamp_granularities[]": options.words ? "word" : undefined,
  };
}

/** The options in a JSON job body: the temperature a number, the granularities a list. */
function jsonFields(options: TranscribeOptions): Record<string, unknown> {
  return {
    model: options.model,
    language: options.language,
    response_format: options.format,
    prompt: options.prompt,
    temperature: options.temperature,
    timestamp_granularities: options.words ? ["word"] : undefined,
  };
}

export interface JobOptions extends TranscribeOptions {
  callbackUrl?: string;
  callbackIncludeResult?: boolean;
  metadata?: Record<string, unknown>;
}

export interface ClientOptions {
  /** Base URL; SLOTSCRIBE_URL, else DEFAULT_SERVER, when omitted. */
  server?: string;
  /** Bearer key; SLOTSCRIBE_API_KEY when omitted. */
  apiKey?: string;
  /** Retries after a 429 or a 503 with Retry-After (see asksForRetry), or after a dropped connection on a request that is safe to repeat. */
  maxRetries?: number;
  /** Where retry notes go; stderr by default. */
  notify?: (line: string) => void;
}

// A server asking for a longer pause is better answered by telling the user than by hanging.
const MAX_RETRY_WAIT_SECONDS = 60;
const FIRST_POLL_MS = 500;
const MAX_POLL_MS = 3000;

// Failures where the request certainly never reached the server: retrying a submission cannot
// create a duplicate, but nor is the server likely to appear in the next few seconds.
const UNREACHED_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);
const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_CONNECT_TIMEOUT", "ETIMEDOUT"]);

interface RequestInit {
  /** A factory, so each attempt gets a fresh body stream. */
  body?: () => BodyInit;
  headers?: Record<string, string>;
  /** Whether a request that may have reached the server can be sent again without harm. */
  repeatable: boolean;
}

export class SlotscribeClient {
  readonly server: string;
  readonly #apiKey: string | undefined;
  readonly #maxRetries: number;
  readonly #notify: (line: string) => void;

  constructor(options: ClientOptions = {}) {
    const server = options.server ?? (process.env.SLOTSCRIBE_URL || DEFAULT_SERVER);
    const url = URL.canParse(server) ? new URL(server) : undefined;
    // fetch refuses a URL with credentials, quoting it whole: the password would be printed. The
    // API paths are appended, so they would land in a query or fragment, and reach the status page.
    if ((url?.protocol !== "http:" && url?.protocol !== "https:") || url.username || url.password || url.search || url.hash) {
      throw new TypeError(`Invalid server URL "${withoutCredentials(server)}": expected http(s)://host[:port][/path], without user:password or ?query`);
    }
    // The OpenAI SDK's baseURL form (…/v1) names the same server.
    this.server = server.replace(/\/+$/, "").replace(/\/v1$/, "");
    // fetch trims the same whitespace from a header value (a key file read whole ends in a line
    // break), and would refuse what remains with a message quoting the header, and so the key.
    const apiKey = (options.apiKey ?? process.env.SLOTSCRIBE_API_KEY)?.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
    if (apiKey && /[\0\r\n]|[^\0-\xff]/.test(apiKey)) {
      throw new TypeError("the API key (--api-key or SLOTSCRIBE_API_KEY) cannot be sent: it holds a line break, a NUL or a character beyond Latin-1 (its value is not shown)");
    }
    this.#apiKey = apiKey || undefined;
    this.#maxRetries = options.maxRetries ?? 3;
    this.#notify = options.notify ?? ((line) => process.stderr.write(`${line}\n`));
  }

  /** The OpenAI-compatible synchronous endpoint: uploads the file and returns the rendered transcript. */
  async transcribe(file: string, options: TranscribeOptions = {}): Promise<string> {
    const blob = await openAsBlob(file);
    const response = await this.#request("POST", "/v1/audio/transcriptions", {
      body: () => {
        const form = new FormData();
        form.set("file", blob, basename(file));
        setFields(form, formFields(options));
        return form;
      },
      // Not idempotent: a repeat after a dropped connection could transcribe the file twice.
      repeatable: false,
    });
    return response.text();
  }

  /**
   * Submits a job: a file as multipart, a URL as JSON. The idempotency key makes a resubmission
   * after a dropped connection return the job the first attempt created instead of a second one.
   */
  async submitJob(source: AudioSource, options: JobOptions = {}, idempotencyKey: string = randomUUID()): Promise<JobView> {
    let body: () => BodyInit;
    const headers: Record<string, string> = { "idempotency-key": idempotencyKey };
    if ("file" in source) {
      const blob = await openAsBlob(source.file);
      body = () => {
        const form = new FormData();
        form.set("file", blob, basename(source.file));
        setFields(form, {
          ...formFields(options),
          callback_url: options.callbackUrl,
          callback_include_result: options.callbackIncludeResult === undefined ? undefined : String(options.callbackIncludeResult),
          metadata: options.metadata === undefined ? undefined : JSON.stringify(options.metadata),
        });
        return form;
      };
    } else {
      const json = JSON.stringify({
        url: source.url,
        ...jsonFields(options),
        callback_url: options.callbackUrl,
        callback_include_result: options.callbackIncludeResult,
        metadata: options.metadata,
      });
      body = () => json;
      headers["content-type"] = "application/json";
    }
    return this.#json(await this.#request("POST", "/v1/jobs", { body, headers, repeatable: true }));
  }

  async getJob(id: string): Promise<JobView> {
    return this.#json(await this.#request("GET", jobPath(id), { repeatable: true }));
  }

  async listJobs(filter: { status?: JobStatus; limit?: number; cursor?: string } = {}): Promise<JobList> {
    const query = new URLSearchParams();
    if (filter.status) query.set("status", filter.status);
    if (filter.limit !== undefined) query.set("limit", String(filter.limit));
    if (filter.cursor) query.set("cursor", filter.cursor);
    const search = String(query);
    return this.#json(await this.#request("GET", `/v1/jobs${search ? `?${search}` : ""}`, { repeatable: true }));
  }

  async cancelJob(id: string): Promise<JobView> {
    return this.#json(await this.#request("DELETE", jobPath(id), { repeatable: true }));
  }

  /** The finished job's transcript, in `format` or else the format it was submitted with. */
  async jobResult(id: string, format?: ResponseFormat): Promise<string> {
    const search = format ? `?format=${format}` : "";
    return (await this.#request("GET", `${jobPath(id)}/result${search}`, { repeatable: true })).text();
  }

  /** Polls until the job is succeeded, failed or canceled, backing off up to a few seconds between polls. */
  async waitForJob(id: string, onUpdate?: (job: JobView) => void): Promise<JobView> {
    let delay = FIRST_POLL_MS;
    for (;;) {
      const job = await this.getJob(id);
      onUpdate?.(job);
      if (isFinal(job)) return job;
      await sleep(delay);
      delay = Math.min(delay * 1.5, MAX_POLL_MS);
    }
  }

  async #request(method: string, path: string, init: RequestInit): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.#apiKey) headers.authorization = `Bearer ${this.#apiKey}`;
    for (let attempt = 0; ; attempt++) {
      const retryNote = `retry ${attempt + 1} of ${this.#maxRetries}`;
      let response: Response;
      try {
        response = await fetch(`${this.server}${path}`, { method, headers, body: init.body?.() });
      } catch (err) {
        const { error, reached } = networkFailure(err, this.server);
        if (!init.repeatable || !reached || attempt >= this.#maxRetries) throw error;
        const seconds = 2 ** attempt;
        this.#notify(`slotscribe: ${error.message}; retrying in ${seconds} s (${retryNote})`);
        await sleep(seconds * 1000);
        continue;
      }
      if (response.ok) return response;
      const error = await errorFrom(response, this.#apiKey);
      if (!asksForRetry(error, init.repeatable) || attempt >= this.#maxRetries) throw error;
      const seconds = error.retryAfterSeconds ?? 2 ** attempt;
      if (seconds > MAX_RETRY_WAIT_SECONDS) throw error;
      const what = error.status === 429 ? "rate limited" : `${error.code}: ${error.message}`;
      this.#notify(`slotscribe: ${what}${error.requestId ? ` (request ${error.requestId})` : ""}; retrying in ${seconds} s (${retryNote})`);
      await sleep(seconds * 1000);
    }
  }

  async #json<T>(response: Response): Promise<T> {
    const text = await response.text();
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new ApiError(response.status, "bad_response", `Expected JSON from ${response.url}, got: ${snippet(text)}`, response.headers.get("x-request-id"), { cause: err });
    }
  }
}

/**
 * Whether an error answer asks for the request again. A 429 refuses before any work. The service's
 * own 503 with Retry-After (starting up, draining, a full disk) kept nothing of the request, so an
 * upload may go again too; one from something in front of it (a proxy without a backend) may have
 * been answered after the upload was taken, so only a request safe to repeat goes again then.
 */
export function asksForRetry(error: ApiError, repeatable: boolean): boolean {
  if (error.status === 429) return true;
  return error.status === 503 && error.retryAfterSeconds !== undefined && (repeatable || error.code === "unavailable");
}

function jobPath(id: string): string {
  return `/v1/jobs/${encodeURIComponent(id)}`;
}

function setFields(form: FormData, fields: Record<string, string | undefined>): void {
  for (const [name, value] of Object.entries(fields)) if (value !== undefined) form.set(name, value);
}

function snippet(text: string): string {
  const flat = text.trim().replace(/\s+/g, " ");
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat || "(empty body)";
}

/** The response as an ApiError; `secret` is masked wherever the body repeats it (a proxy's page echoing the request). */
async function errorFrom(response: Response, secret: string | undefined): Promise<ApiError> {
  const raw = await response.text().catch(() => "");
  const text = secret ? raw.replaceAll(secret, "***") : raw;
  const headerRequestId = response.headers.get("x-request-id");
  const retryAfterSeconds = parseRetryAfter(response.headers.get("retry-after"));
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // Handled below: not our error shape.
  }
  const error = (body as { error?: { code?: unknown; message?: unknown; request_id?: unknown; details?: { reason?: unknown } } } | undefined)?.error;
  if (typeof error?.code === "string" && typeof error.message === "string") {
    const requestId = typeof error.request_id === "string" ? error.request_id : headerRequestId;
    // The OpenAI routes answer unreadable audio as OpenAI does (400 invalid_request) and keep our finer code as the reason.
    const code = typeof error.details?.reason === "string" ? error.details.reason : error.code;
    return new ApiError(response.status, code, error.message, requestId, { retryAfterSeconds });
  }
  // Something in front of the service (a proxy, a load balancer) answered, or it is not slotscribe.
  const message = `${response.status} ${response.statusText}: ${snippet(text)}`;
  return new ApiError(response.status, `http_${response.status}`, message, headerRequestId, { retryAfterSeconds });
}

/** Everything up to the last "@" goes: a password may hold "/", "?" or "#", which a URL parser would stop at. */
function withoutCredentials(server: string): string {
  return server.replace(/^((?:[a-z][a-z\d+.-]*:)?\/\/)?.*@/is, "$1***@");
}

/** What a fetch rejection means; `reached` is false when the request certainly never left. */
function networkFailure(err: unknown, server: string): { error: ApiError; reached: boolean } {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err instanceof Error ? err : new Error(String(err));
  const code = (cause as NodeJS.ErrnoException).code;
  const detail = code && !cause.message.includes(code) ? `${cause.message} (${code})` : cause.message;
  if (code && TIMEOUT_CODES.has(code)) {
    return { error: new ApiError(0, "timeout", `${server} did not answer in time: ${detail}`, null, { cause: err }), reached: true };
  }
  // Without an errno or undici code, fetch itself refused the request (a bad port, say) before sending.
  const reached = code !== undefined && !UNREACHED_CODES.has(code);
  return {
    error: new ApiError(0, "network_error", `${reached ? "lost the connection to" : "cannot reach"} ${server}: ${detail}`, null, { cause: err, unreached: !reached }),
    reached,
  };
}

// ---- Shared by the API commands ----

/** parseArgs options every API command takes. */
const CONNECTION_OPTIONS = {
  server: { type: "string" },
  "api-key": { type: "string" },
} as const;

export const CONNECTION_USAGE = `The server is --server, else SLOTSCRIBE_URL, else ${DEFAULT_SERVER} (with or without /v1); the key is --api-key,
else SLOTSCRIBE_API_KEY.`;

/** A mistake in the command line: reported with the usage and exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export function connect(values: { server?: string; "api-key"?: string }): SlotscribeClient {
  try {
    return new SlotscribeClient({ server: values.server, apiKey: values["api-key"] });
  } catch (err) {
    throw err instanceof TypeError ? new UsageError(err.message) : err;
  }
}

export function parseFormat(value: string | undefined): ResponseFormat | undefined {
  if (value === undefined) return undefined;
  if (!(RESPONSE_FORMATS as readonly string[]).includes(value)) {
    throw new UsageError(`unknown format "${value}"; one of ${RESPONSE_FORMATS.join(", ")}`);
  }
  return value as ResponseFormat;
}

/** `slotscribe: <code>: <message> (request <id>)`, the one line an API failure prints. */
function describeApiError(err: ApiError): string {
  // The server's words are for any client; this one is set through its flags and environment.
  const hint = err.code === "unauthorized" ? "\nslotscribe: give the server's API key with --api-key or SLOTSCRIBE_API_KEY" : "";
  // Said when the pause asked for was too long to wait out, or the retries ran out: when to come back.
  const when = err.retryAfterSeconds === undefined ? "" : `; the server asks to try again in ${err.retryAfterSeconds} s`;
  return `slotscribe: ${err.code}: ${err.message}${err.requestId ? ` (request ${err.requestId})` : ""}${when}${hint}`;
}

/** Writes a transcript to `out` byte for byte, or to stdout ending in a newline. */
export async function emit(body: string, out: string | undefined): Promise<void> {
  if (out !== undefined) await writeFile(out, body);
  else process.stdout.write(body.endsWith("\n") ? body : `${body}\n`);
}

/** Every API command's options besides its own: the connection's, and --help. */
const COMMON_OPTIONS = { ...CONNECTION_OPTIONS, help: { type: "boolean", short: "h" } } as const;

type OptionsConfig = NonNullable<ParseArgsConfig["options"]>;
type CommandArgs<O extends OptionsConfig> = ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: O & typeof COMMON_OPTIONS }>>;

/**
 * Parses a command's arguments (its own options, the connection's and --help) and runs its body,
 * mapping failures to exit codes: 1 for the API or the file system, 2 for usage. --help prints the usage.
 */
export async function runApiCommand<const O extends OptionsConfig>(usage: string, argv: string[], options: O, body: (args: CommandArgs<O>) => Promise<number>): Promise<number> {
  try {
    const args = parseArgs({ args: argv, allowPositionals: true, options: { ...options, ...COMMON_OPTIONS } });
    // Asked for, so on stdout (for | less or | grep); after a mistake it goes to stderr, below.
    if ("help" in args.values && args.values.help === true) {
      console.log(usage);
      return 0;
    }
    return await body(args);
  } catch (err) {
    if (err instanceof UsageError || isParseArgsError(err)) {
      console.error(`slotscribe: ${(err as Error).message}\n\n${usage}`);
      return 2;
    }
    if (err instanceof ApiError) {
      console.error(describeApiError(err));
      return 1;
    }
    if (isSystemError(err)) {
      console.error(`slotscribe: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

export function isParseArgsError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_");
}

function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).syscall === "string";
}
