import { createRoute, z } from "@hono/zod-openapi";
import { jsonOf, parseRunFailure, QSTASH_RUN_FAILED_PATH } from "../lib/cluster/qstash.ts";
import { errorResponses, router } from "./env.ts";
import { signedDelivery } from "./qstash-inbox.ts";

export const route = createRoute({
  method: "post",
  operationId: "qstashRunFailed",
  tags: ["internal"],
  // Public: no API key (probes; QStash signs its deliveries instead).
  security: [],
  path: QSTASH_RUN_FAILED_PATH,
  summary: "QStash reports a job it could not deliver (cluster mode); signed with Upstash-Signature",
  hide: true,
  responses: {
    200: {
      description: "The job was sent again, failed (it had waited JOB_MAX_WAIT), or needed nothing (finished).",
      content: { "application/json": { schema: z.object({ outcome: z.enum(["redelivered", "failed", "skipped"]) }) } },
    },
    ...errorResponses(404, 503),
  },
});

export default router().openapi(route, async (c) => {
  const { qstash, raw } = await signedDelivery(c, QSTASH_RUN_FAILED_PATH, (q) => q.publicUrl);
  const message = parseRunFailure(jsonOf(raw));
  const outcome = await qstash.runner.redeliver(message.jobId, message.attempt);
  if (outcome !== "skipped") c.var.deps.log.warn({ jobId: message.jobId, outcome }, "QStash could not deliver a job to any instance");
  return c.json({ outcome }, 200);
});
