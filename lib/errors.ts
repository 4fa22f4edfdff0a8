/**
 * Failures of the core, each with a stable code. The core says what went wrong and whether trying
 * again could help; the HTTP edge alone turns a code into a status (functions/error-status.ts).
 */
export const ERROR_CODES = [
  "invalid_request",
  "unauthorized",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "request_timeout",
  "conflict",
  "payload_too_large",
  "unsupported_media",
  "unprocessable_audio",
  "idempotency_key_reused",
  "headers_too_large",
  "rate_limited",
  "internal",
  "upstream_failed",
  "unavailable",
  "timeout",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** What was asked or sent is what is wrong, so the same operation fails the same way again. */
const FINAL_CODES: ReadonlySet<ErrorCode> = new Set([
  "invalid_request",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "payload_too_large",
  "unsupported_media",
  "unprocessable_audio",
  "idempotency_key_reused",
  "headers_too_large",
]);

export interface DomainErrorOptions {
  cause?: unknown;
  /** Seconds a caller should wait before retrying; sent as Retry-After. */
  retryAfterSeconds?: number;
  details?: Record<string, unknown>;
  /** Whether running the operation again could succeed; by default, unless the code says the input is at fault. */
  retryable?: boolean;
}

export class DomainError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterSeconds?: number;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: DomainErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "DomainError";
    this.code = code;
    this.retryable = options.retryable ?? !FINAL_CODES.has(code);
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.details = options.details;
  }
}

export function isDomainError(err: unknown): err is DomainError {
  return err instanceof DomainError;
}

/** The filesystem's answers when it has no room: the disk is full, or the user's quota is spent. */
const STORAGE_FULL_CODES: ReadonlySet<string> = new Set(["ENOSPC", "EDQUOT"]);

/**
 * The disk under DATA_DIR (spooled uploads, job inputs, downloaded media, the embedded job store)
 * has no room: nothing was kept, and the same request succeeds once there is room again, here or on
 * another instance. The operator has to act, the client only has to wait.
 */
export class StorageFull extends DomainError {
  constructor(cause: unknown) {
    super("unavailable", "This instance has no room to store the request's data right now; try again later.", { cause, retryAfterSeconds: 60 });
    this.name = "StorageFull";
  }
}

/** The core's error for `err`: itself if it is one, StorageFull for a full disk, else null (a bug). */
export function toDomainError(err: unknown): DomainError | null {
  if (isDomainError(err)) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === "string" && STORAGE_FULL_CODES.has(code) ? new StorageFull(err) : null;
}

/** A store the operation needs (Redis behind the slot, job or upload store) cannot be reached now. */
export class StoreUnavailable extends DomainError {
  constructor(message: string, cause?: unknown) {
    super("unavailable", message, { cause, retryAfterSeconds: 5 });
    this.name = "StoreUnavailable";
  }
}

/**
 * OpenAI's error `type` for each code, so the official SDKs' `err.type` reads as it does against OpenAI
 * (a wrong key is an invalid_request_error there, and a rate limit on requests "requests").
 */
const OPENAI_TYPE: Record<ErrorCode, string> = {
  invalid_request: "invalid_request_error",
  unauthorized: "invalid_request_error",
  forbidden: "permission_error",
  not_found: "invalid_request_error",
  method_not_allowed: "invalid_request_error",
  request_timeout: "invalid_request_error",
  conflict: "invalid_request_error",
  payload_too_large: "invalid_request_error",
  unsupported_media: "invalid_request_error",
  unprocessable_audio: "invalid_request_error",
  idempotency_key_reused: "invalid_request_error",
  headers_too_large: "invalid_request_error",
  rate_limited: "requests",
  internal: "server_error",
  upstream_failed: "server_error",
  unavailable: "server_error",
  timeout: "server_error",
};

/** The JSON body of every error response: ours (code, request_id, details) and OpenAI's (type, param). */
export interface ErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    type: string;
    param: string | null;
    request_id: string;
    details?: Record<string, unknown>;
  };
}

/** Messages may quote what a client sent; a huge field is not repeated whole. */
const MESSAGE_MAX_CHARS = 1024;

function cut(message: string): string {
  return message.length <= MESSAGE_MAX_CHARS ? message : `${message.slice(0, MESSAGE_MAX_CHARS)}... (${message.length - MESSAGE_MAX_CHARS} more characters)`;
}

export function errorBody(err: DomainError, requestId: string): ErrorBody {
  return {
    error: {
      code: err.code,
      // Internal messages may carry paths or upstream text: the client gets a generic one.
      message: err.code === "internal" ? "Internal server error" : cut(err.message),
      type: OPENAI_TYPE[err.code],
      param: typeof err.details?.param === "string" ? err.details.param : null,
      request_id: requestId,
      ...(err.details && err.code !== "internal" ? { details: err.details } : {}),
    },
  };
}
