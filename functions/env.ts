import { OpenAPIHono, z } from "@hono/zod-openapi";
import { AppError, ERROR_CODES, type ErrorCode } from "../lib/errors.ts";
import { ERROR_STATUS } from "./error-status.ts";
import type { Services } from "../lib/services.ts";

/** errorCode: set when the request failed, for its log line. */
export type AppEnv = { Variables: { services: Services; requestId: string; errorCode?: ErrorCode } };

/** A router whose validation failures take the same path as every other error. */
export function router(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        const issues = result.error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
        const first = issues[0];
        // OpenAI's `param` names the field; a path deeper than one field keeps its first part.
        const param = first?.path ? first.path.split(".")[0] : undefined;
        throw new AppError("invalid_request", first ? `Invalid request: ${first.path || "body"}: ${first.message}` : "Invalid request", { details: { issues, ...(param ? { param } : {}) } });
      }
    },
  });
}

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.enum(ERROR_CODES),
      message: z.string(),
      type: z.string().openapi({ description: "OpenAI's error type (invalid_request_error, authentication_error, rate_limit_error, server_error, ...)" }),
      param: z.string().nullable().openapi({ description: "The request field at fault, when there is one" }),
      request_id: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  })
  .openapi("Error");

export type ErrorResponse = z.infer<typeof ErrorSchema>;

/** The error responses every authenticated route may give, for the OpenAPI document. */
export function errorResponses(...statuses: number[]) {
  const content = { "application/json": { schema: ErrorSchema } };
  return Object.fromEntries([401, 500, ...statuses].map((s) => [s, { description: describeStatus(s), content }]));
}

function describeStatus(status: number): string {
  const code = Object.entries(ERROR_STATUS).find(([, s]) => s === status)?.[0];
  return code ? `Error: ${code}` : "Error";
}
