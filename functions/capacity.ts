import { createRoute, z } from "@hono/zod-openapi";
import { AppError } from "../lib/errors.ts";
import { SlotStoreUnavailable } from "../lib/admission/ports.ts";
import { errorResponses, router } from "./env.ts";

const Capacity = z
  .object({
    instance: z.object({
      id: z.string(),
      memoryBytes: z.number(),
      memorySource: z.string(),
      cpus: z.number(),
      cpuSource: z.string(),
      slots: z.number(),
      threadsPerJob: z.number(),
      limitedBy: z.string(),
      windows: z.object({ inUse: z.number(), queued: z.number() }),
      transcriptions: z.object({ limit: z.number(), active: z.number(), queued: z.number() }),
    }),
    cluster: z.object({
      store: z.enum(["embedded", "upstash"]),
      cap: z.number().nullable(),
      held: z.number(),
      free: z.number().nullable(),
      instances: z.array(z.object({ instance: z.string(), held: z.number(), jobs: z.array(z.string()) })),
    }),
  })
  .openapi("Capacity");
export type CapacityResponse = z.infer<typeof Capacity>;

export const route = createRoute({
  method: "get",
  path: "/v1/capacity",
  summary: "This instance's slot plan and use, and the cluster's slots",
  responses: { 200: { description: "Capacity.", content: { "application/json": { schema: Capacity } } }, ...errorResponses(503) },
});

export default router().openapi(route, async (c) => {
  const { plan, admission, compute, slots, instanceId, machine } = c.get("services");
  const cluster = await slots.snapshot().catch((err: unknown) => {
    if (err instanceof SlotStoreUnavailable) throw new AppError("unavailable", "The cluster slot store is unreachable.", { cause: err, retryAfterSeconds: 5 });
    throw err;
  });
  const body: CapacityResponse = {
    instance: {
      id: instanceId,
      ...machine,
      slots: plan.slots,
      threadsPerJob: plan.threadsPerJob,
      limitedBy: plan.limitedBy,
      windows: { inUse: compute.stats.inUse, queued: compute.stats.queued },
      transcriptions: { limit: admission.stats.slots, active: admission.stats.inUse, queued: admission.stats.queued },
    },
    cluster: { store: slots.kind, ...cluster },
  };
  return c.json(body, 200);
});
