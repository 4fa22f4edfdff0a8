import type { IncomingMessage, ServerResponse } from "node:http";
import { OpenAPIHono, z } from "@hono/zod-openapi";
import { DomainError, ERROR_CODES, type ErrorCode } from "../lib/errors.ts";
import { ERROR_STATUS } from "./error-status.ts";
import type { HttpDeps } from "./deps.ts";

/**
 * Bindings: Node's request and response on the Node server (absent when a test calls app.request()).
 * deps: what the handlers use of the core (functions/deps.ts). errorCode: set when the request
 * failed, for its log line; errorCause, what a dependency said when it made us answer 5xx. spooled: uploads to remove when the request ends.
 * bodyBytesRead: how much of the body the multipart reader took off the socket, for the clean-up.
 */
export type AppEnv = {
  Bindings: { incoming?: IncomingMessage; outgoing?: ServerResponse } | undefined;
  /** jobId: the job a request created or replayed, for its log line. */
  Variables: { deps: HttpDeps; requestId: string; errorCode?: ErrorCode; errorCause?: string; spooled: string[]; bodyBytesRead?: number; jobId?: string };
};

/** A router whose validation failures take the same path as every other error. */
export function router(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw invalidRequest(result.error);
    },
  });
}

/** A validation failure in the service's words: the first problem in the message, all in the details. */
export function invalidRequest(error: z.ZodError): DomainError {
  const issues = error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
  const first = issues[0];
  // OpenAI's `param` names the field; a path deeper than one field keeps its first part.
  const param = first?.path ? first.path.split(".")[0] : undefined;
  return new DomainError("invalid_request", first ? `Invalid request: ${first.path || "body"}: ${first.message}` : "Invalid request", {
    details: { issues, ...(param ? { param } : {}) },
  });
}

const ErrorSchema = z
  .object({
    error: z.object({
      code: z.enum(ERROR_CODES),
      message: z.string(),
      type: z.string().openapi({ description: "OpenAI's error type (invalid_request_error, requests, server_error, ...)" }),
      param: z.string().nullable().openapi({ description: "The request field at fault, when there is one" }),
      request_id: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  })
  .openapi("Error");

export type ErrorResponse = z.infer<typeof ErrorSchema>;

/**
 * The error responses a route may give, for the OpenAPI document, besides the 401 and 500 every
 * authenticated route may: a status stands for every code it has, a code for itself (where a status
 * has codes the route never gives, such as a 422 that is about the audio or about a reused key).
 */
export function errorResponses(...items: (number | ErrorCode)[]) {
  const content = { "application/json": { schema: ErrorSchema } };
  const byStatus = new Map<number, Set<ErrorCode>>();
  for (const item of [401, 500, ...items]) {
    const codes = typeof item === "number" ? ERROR_CODES.filter((code) => ERROR_STATUS[code] === item) : [item];
    const status = typeof item === "number" ? item : ERROR_STATUS[item];
    byStatus.set(status, new Set([...(byStatus.get(status) ?? []), ...codes]));
  }
  return Object.fromEntries(
    [...byStatus].map(([status, codes]) => [
      status,
      {
        description: codes.size > 0 ? `Error: ${[...codes].join(" or ")}` : "Error",
        headers: { "x-request-id": REQUEST_ID_HEADER, ...(status === 429 || status === 503 ? { "retry-after": RETRY_AFTER_HEADER } : {}) },
        content,
      },
    ]),
  );
}

/** Headers of every answer, for the document. */
export const REQUEST_ID_HEADER = { description: "The request's id, as in the error body and the logs.", schema: { type: "string" as const } };
const RETRY_AFTER_HEADER = { description: "Seconds to wait before sending the request again.", schema: { type: "integer" as const } };
