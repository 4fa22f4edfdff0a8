import { createRoute, z } from "@hono/zod-openapi";
import { parseRunMessage, QSTASH_RUN_PATH } from "../lib/cluster/qstash.ts";
import { errorResponses, router } from "./env.ts";
import { signedDelivery } from "./qstash-inbox.ts";

const Outcome = z.object({ outcome: z.enum(["ran", "deferred", "skipped"]) }).openapi("RunOutcome");

export const route = createRoute({
  method: "post",
  operationId: "qstashRun",
  tags: ["internal"],
  // Public: no API key (probes; QStash signs its deliveries instead).
  security: [],
  path: QSTASH_RUN_PATH,
  summary: "QStash delivers a job here (cluster mode); signed with Upstash-Signature",
  hide: true,
  responses: {
    200: { description: "Handled: ran, deferred for lack of room, or nothing to do.", content: { "application/json": { schema: Outcome } } },
    ...errorResponses(404, 503),
  },
});

/**
 * Answers only when the job has run (or was deferred), so a crash mid-job is a failed delivery that
 * QStash retries on another instance. The signature is checked on the raw body before anything else;
 * an api instance then answers 503 without running anything.
 */
export default router().openapi(route, async (c) => {
  const { qstash, raw } = await signedDelivery(c, QSTASH_RUN_PATH);
  const message = parseRunMessage(raw);
  return c.json({ outcome: await qstash.runner.handleDelivery(message.jobId, message.attempt) }, 200);
});
