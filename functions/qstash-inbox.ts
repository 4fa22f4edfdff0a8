import { createRoute, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { jsonOf, qstashUrl, verifyQStash } from "../lib/cluster/qstash.ts";
import type { JobRecord } from "../lib/jobs/ports.ts";
import { DomainError } from "../lib/errors.ts";
import type { QStashDeps } from "./deps.ts";
import { type AppEnv, errorResponses, router } from "./env.ts";

type QStashPath = Parameters<typeof qstashUrl>[1];

/**
 * A QStash delivery's raw body, after its signature is checked against the URL QStash signed
 * (`base`: the delivery URL, or PUBLIC_URL for reports sent there). Outside cluster mode the
 * /internal/qstash/ routes are unknown paths.
 */
export async function signedDelivery(
  c: Context<AppEnv>,
  path: QStashPath,
  base: (qstash: QStashDeps) => string = (q) => q.deliveryUrl,
): Promise<{ qstash: QStashDeps; raw: string }> {
  const { qstash } = c.var.deps;
  if (!qstash) throw new DomainError("not_found", "No such endpoint.");
  const signature = c.req.header("upstash-signature");
  const raw = await c.req.text();
  await verifyQStash(qstash.receiver, raw, signature, qstashUrl(base(qstash), path), c.var.deps.log);
  return { qstash, raw };
}

/**
 * Refuses a delivery whose token QStash's keys did not sign before its body is read: the
 * /internal/qstash/ routes take no API key, and anyone could otherwise have a body read up to the
 * upload limit (the body limit reads one sent without a length as it counts it) before the 401.
 */
export const signedTokenOnly: MiddlewareHandler<AppEnv> = async (c, next) => {
  const { qstash, log } = c.var.deps;
  const signature = c.req.header("upstash-signature");
  if (qstash && !qstash.receiver.signedByUs(signature)) {
    if (qstash.receiver.claimsUpstash(signature)) {
      log.warn(
        { path: c.req.path },
        "a delivery QStash says it signed is not signed with QSTASH_CURRENT_SIGNING_KEY or QSTASH_NEXT_SIGNING_KEY: check them against the QStash console; jobs stay queued until they match",
      );
    }
    throw new DomainError("unauthorized", "invalid QStash signature");
  }
  await next();
};

/** A route taking QStash's reports on callbacks it delivers, recording each on its job with `record`. */
export function callbackReportRoute(
  { path, operationId, summary }: { path: QStashPath; operationId: string; summary: string },
  record: (qstash: QStashDeps, report: unknown) => Promise<JobRecord | null>,
) {
  const route = createRoute({
    method: "post",
    operationId,
    tags: ["internal"],
    // Public: no API key (probes; QStash signs its deliveries instead).
    security: [],
    path,
    summary,
    hide: true,
    responses: { 200: { description: "Recorded on the job.", content: { "application/json": { schema: z.object({ recorded: z.boolean() }) } } }, ...errorResponses(404) },
  });
  return router().openapi(route, async (c) => {
    const { qstash, raw } = await signedDelivery(c, path);
    // Always 2xx for a verified report, or QStash would keep re-sending it.
    const job = await record(qstash, jsonOf(raw));
    return c.json({ recorded: job !== null }, 200);
  });
}
