import { createRoute, z } from "@hono/zod-openapi";
import { router } from "./env.ts";

const Readiness = z
  .object({
    ready: z.boolean(),
    models: z.array(z.object({ id: z.string(), dtype: z.string(), state: z.enum(["loading", "ready", "failed"]), error: z.string().optional() })),
    capacity: z.object({ slots: z.number(), inUse: z.number(), queued: z.number(), queueSize: z.number() }),
  })
  .openapi("Readiness");
export type ReadinessResponse = z.infer<typeof Readiness>;

export const route = createRoute({
  method: "get",
  path: "/readyz",
  summary: "Readiness: default model loaded and room to take work",
  responses: {
    200: { description: "Ready.", content: { "application/json": { schema: Readiness } } },
    503: { description: "Not ready: a model is still loading or failed, the queue is full, or the server is shutting down.", content: { "application/json": { schema: Readiness } } },
  },
});

export default router().openapi(route, (c) => {
  const { engine, admission, config, draining } = c.get("services");
  const models = engine.modelStates().map((m) => ({ id: m.model.id, dtype: m.model.dtype, state: m.state, error: m.error }));
  const stats = admission.stats;
  const capacity = { ...stats, queueSize: config.QUEUE_SIZE };
  const ready = !draining && models.length > 0 && models.every((m) => m.state === "ready") && stats.queued < config.QUEUE_SIZE;
  const body: ReadinessResponse = { ready, models, capacity };
  return ready ? c.json(body, 200) : c.json(body, 503);
});
