import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";

/** The response headers our clients read, beyond those a browser shows any page. */
const EXPOSED_HEADERS = ["retry-after", "x-request-id", "idempotent-replayed", "location"];

/** CORS for CORS_ORIGINS (normalised by the config; ["*"] for any page). */
export function corsFor(origins: string[]): MiddlewareHandler {
  return cors({ origin: origins.includes("*") ? "*" : origins, exposeHeaders: EXPOSED_HEADERS, maxAge: 600 });
}

/**
 * The same headers for answers written outside the app (Node's parser refusing a request, the
 * listener before the app is built), so a page sees the 408 of its slow upload rather than an
 * opaque network error.
 */
export function corsHeaders(origin: string | undefined, origins: string[]): Record<string, string> {
  if (!origin) return {};
  if (origins.includes("*")) return { "access-control-allow-origin": "*", "access-control-expose-headers": EXPOSED_HEADERS.join(",") };
  if (!origins.includes(origin)) return {};
  return { "access-control-allow-origin": origin, "access-control-expose-headers": EXPOSED_HEADERS.join(","), vary: "Origin" };
}
