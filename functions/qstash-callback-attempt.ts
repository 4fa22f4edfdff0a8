import { createRoute, z } from "@hono/zod-openapi";
import { handleCallbackAttempt, qstashUrl, QSTASH_CALLBACK_ATTEMPT_PATH, verifyQStash } from "../lib/cluster/qstash.ts";
import { DomainError } from "../lib/errors.ts";
import { errorResponses, router } from "./env.ts";

export const route = createRoute({
  method: "post",
  operationId: "qstashCallbackAttempt",
  tags: ["internal"],
  // Public: no API key (probes; QStash signs its deliveries instead).
  security: [],
  path: QSTASH_CALLBACK_ATTEMPT_PATH,
  summary: "QStash reports a callback receiver's answer (cluster mode); signed with Upstash-Signature",
  hide: true,
  responses: { 200: { description: "Recorded on the job.", content: { "application/json": { schema: z.object({ recorded: z.boolean() }) } } }, ...errorResponses(404) },
});

export default router().openapi(route, async (c) => {
  const { qstash } = c.var.deps;
  if (!qstash) throw new DomainError("not_found", "No such endpoint.");
  const raw = await c.req.text();
  await verifyQStash(qstash.receiver, raw, c.req.header("upstash-signature"), qstashUrl(qstash.deliveryUrl, QSTASH_CALLBACK_ATTEMPT_PATH), c.var.deps.log);
  // Always 2xx for a verified report, or QStash would keep re-sending it.
  const job = await handleCallbackAttempt(qstash.jobs, JSON.parse(raw) as unknown);
  return c.json({ recorded: job !== null }, 200);
});
