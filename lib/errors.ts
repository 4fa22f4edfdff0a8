/**
 * The one error type that crosses the HTTP boundary. Every failure a client can see is an
 * AppError with a stable code; the status comes from one table, so handlers never pick numbers.
 */
export const ERROR_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media: 415,
  unprocessable_audio: 422,
  rate_limited: 429,
  internal: 500,
  upstream_failed: 502,
  unavailable: 503,
  timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface AppErrorOptions {
  cause?: unknown;
  /** Seconds a client should wait before retrying; sent as Retry-After. */
  retryAfterSeconds?: number;
  details?: Record<string, unknown>;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly retryAfterSeconds?: number;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "AppError";
    this.code = code;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.details = options.details;
  }

  get status(): (typeof ERROR_STATUS)[ErrorCode] {
    return ERROR_STATUS[this.code];
  }
}

/** OpenAI's error `type` for each code, so the official SDKs' `err.type` reads as it does against OpenAI. */
const OPENAI_TYPE: Record<ErrorCode, string> = {
  invalid_request: "invalid_request_error",
  unauthorized: "authentication_error",
  forbidden: "permission_error",
  not_found: "invalid_request_error",
  conflict: "invalid_request_error",
  payload_too_large: "invalid_request_error",
  unsupported_media: "invalid_request_error",
  unprocessable_audio: "invalid_request_error",
  rate_limited: "rate_limit_error",
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

export function errorBody(err: AppError, requestId: string): ErrorBody {
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

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}
