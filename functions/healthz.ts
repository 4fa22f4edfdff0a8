import { createRoute, z } from "@hono/zod-openapi";
import { router } from "./env.ts";

const Health = z.object({ status: z.literal("ok") }).openapi("Health");

export const route = createRoute({
  method: "get",
  operationId: "getHealth",
  tags: ["service"],
  // Public: no API key (probes; QStash signs its deliveries instead).
  security: [],
  path: "/healthz",
  summary: "Liveness: the process answers",
  responses: { 200: { description: "Alive.", content: { "application/json": { schema: Health } } } },
});

export default router().openapi(route, (c) => c.json({ status: "ok" as const }, 200));
