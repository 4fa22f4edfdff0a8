import { createRoute, z } from "@hono/zod-openapi";
import { LeaseStoreUnavailable } from "../lib/admission/ports.ts";
import { ROLES } from "../lib/config.ts";
import { router } from "./env.ts";

const Readiness = z
  .object({
    ready: z.boolean(),
    notReady: z.array(z.string()).openapi({ description: "Why it is not ready, one reason each (empty when ready)", example: ["the cluster's Redis does not answer"] }),
    role: z.enum(ROLES),
    models: z.array(
      z.object({
        id: z.string(),
        dtype: z.string(),
        state: z.enum(["loading", "ready", "failed"]),
        preloaded: z.boolean().openapi({
          description: "PRELOAD_MODELS (else DEFAULT_MODEL): readiness waits for these. Another model a request asked for that failed to load fails that request, not readiness.",
        }),
        error: z.string().optional(),
      }),
    ),
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
  summary: "Readiness: the preloaded models loaded, room to take work, and (cluster mode) the shared stores answer",
  responses: {
    200: { description: "Ready.", content: { "application/json": { schema: Readiness } } },
    503: {
      description:
        "Not ready: a preloaded model is still loading or failed, every transcription is running and the queue is full, the shared stores are unreachable (cluster mode), or the server is shutting down.",
      content: { "application/json": { schema: Readiness } },
    },
  },
});

export default router().openapi(route, async (c) => {
  const { transcriber, leases, config, draining } = c.var.deps;
  const role = config.ROLE;
  // In cluster mode every transcription takes a lease, and jobs and uploads live, in the Redis the
  // instances share: while it does not answer, an instance can take no work.
  const storesReachable =
    leases.kind === "embedded" ||
    (await leases.snapshot().then(
      () => true,
      (err: unknown) => {
        if (err instanceof LeaseStoreUnavailable) return false;
        throw err;
      },
    ));
  const notReady = [...(draining ? ["shutting down"] : []), ...(storesReachable ? [] : ["the cluster's Redis does not answer"])];
  let body: Omit<ReadinessResponse, "ready" | "notReady">;
  if (transcriber) {
    const { models, slots: planned, windows, transcriptions } = transcriber.status();
    const preloaded = models.filter((m) => m.preloaded);
    if (preloaded.length === 0) notReady.push("no model to preload");
    for (const m of preloaded) if (m.state !== "ready") notReady.push(`model ${m.id} (${m.dtype}) ${m.state === "loading" ? "is loading" : "failed to load"}`);
    // Room means the next request would not be refused: a transcription free now, or a place in the
    // line (with QUEUE_SIZE=0 there is no line, and an idle instance is ready).
    if (transcriptions.active >= transcriptions.limit && transcriptions.queued >= transcriptions.queueSize)
      notReady.push("every transcription place is taken and the queue is full");
    // Public: a failed load's message without the server's paths (the log has them).
    const shown = models.map((m) => (m.error ? { ...m, error: m.error.replace(/(?<![\w.-])(?:[A-Za-z]:)?[\\/][^\s"']*[\\/]([^\s"'\\/]+)/g, "$1") } : m));
    body = { role, models: shown, capacity: { slots: planned, inUse: windows.inUse, queued: transcriptions.queued, queueSize: transcriptions.queueSize } };
  } else {
    // An api instance has no model to wait for and no queue of its own.
    body = { role, models: [], capacity: { slots: 0, inUse: 0, queued: 0, queueSize: 0 } };
  }
  const ready = notReady.length === 0;
  return c.json({ ready, notReady, ...body } satisfies ReadinessResponse, ready ? 200 : 503);
});
