import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorCode } from "../lib/errors.ts";

/** The one place an error code becomes an HTTP status. */
export const ERROR_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media: 415,
  unprocessable_audio: 422,
  // The IETF Idempotency-Key draft's status for a key reused with another payload.
  idempotency_key_reused: 422,
  headers_too_large: 431,
  rate_limited: 429,
  internal: 500,
  upstream_failed: 502,
  unavailable: 503,
  timeout: 504,
} as const satisfies Record<ErrorCode, ContentfulStatusCode>;
