import { createRoute, z } from "@hono/zod-openapi";
import { LeaseStoreUnavailable } from "../lib/admission/ports.ts";
import { ROLES } from "../lib/config.ts";
import { router } from "./env.ts";

const Readiness = z
  .object({
    ready: z.boolean(),
    role: z.enum(ROLES),
    models: z.array(z.object({ id: z.string(), dtype: z.string(), state: z.enum(["loading", "ready", "failed"]), error: z.string().optional() })),
    capacity: z.object({
      slots: z.number().openapi({ description: "The slot plan's slots: windows in inference at once" }),
      inUse: z.number().openapi({ description: "Slots in use" }),
      queued: z.number().openapi({ description: "Requests waiting for room to start" }),
      queueSize: z.number(),
    }),
  })
  .openapi("Readiness");
export type ReadinessResponse = z.infer<typeof Readiness>;

export const route = createRoute({
  method: "get",
  operationId: "getReadiness",
  tags: ["service"],
  // Public: no API key (probes; QStash signs its deliveries instead).
  security: [],
  path: "/readyz",
  summary: "Readiness: default model loaded and room to take work (role api: the shared stores answer)",
  responses: {
    200: { description: "Ready.", content: { "application/json": { schema: Readiness } } },
    503: {
      description: "Not ready: a model is still loading or failed, the queue is full, the shared stores are unreachable (role api), or the server is shutting down.",
      content: { "application/json": { schema: Readiness } },
    },
  },
});

export default router().openapi(route, async (c) => {
  const { transcriber, leases, config, draining } = c.var.deps;
  const role = config.ROLE;
  let body: ReadinessResponse;
  if (transcriber) {
    const { models, slots: planned, windows, transcriptions } = transcriber.status();
    const ready = !draining && models.length > 0 && models.every((m) => m.state === "ready") && transcriptions.queued < transcriptions.queueSize;
    body = { ready, role, models, capacity: { slots: planned, inUse: windows.inUse, queued: transcriptions.queued, queueSize: transcriptions.queueSize } };
  } else {
    // An api instance has no model to wait for and no queue of its own: it can work once the
    // stores it shares with the workers answer (jobs, uploads and leases live in the same Redis).
    const storesReachable = await leases.snapshot().then(
      () => true,
      (err: unknown) => {
        if (err instanceof LeaseStoreUnavailable) return false;
        throw err;
      },
    );
    body = { ready: !draining && storesReachable, role, models: [], capacity: { slots: 0, inUse: 0, queued: 0, queueSize: 0 } };
  }
  return body.ready ? c.json(body, 200) : c.json(body, 503);
});
