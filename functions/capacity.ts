import { createRoute, z } from "@hono/zod-openapi";
import { LeaseStoreUnavailable } from "../lib/admission/ports.ts";
import { ROLES } from "../lib/config.ts";
import { errorResponses, router } from "./env.ts";

const Capacity = z
  .object({
    instance: z.object({
      id: z.string(),
      role: z.enum(ROLES),
      memoryBytes: z.number(),
      memorySource: z.string(),
      cpus: z.number(),
      cpuSource: z.string(),
      slots: z.number(),
      threads: z.number().openapi({ description: "onnxruntime threads of every inference call: one inference thread runs every call on all of them" }),
      modelCopies: z.number().openapi({ description: "Copies of each loaded model: one, shared by every slot through batched decoding" }),
      limitedBy: z.string().openapi({ description: "memory, cpu, setting (WINDOW_SLOTS), or role: an api instance holds no slots" }),
      windows: z.object({ inUse: z.number(), queued: z.number() }),
      batch: z
        .object({
          rows: z.number().openapi({ description: "Windows decoding now: rows of the one shared decoding batch" }),
          largest: z.number().openapi({ description: "The largest batch one decoder call has run since start" }),
        })
        .nullable()
        .openapi({ description: "The engine's shared batch; null on an api instance, or when the inference thread did not answer within a second" }),
      audioSeconds: z.number().openapi({ description: "Audio seconds transcribed since start, counted as each window finishes: its rate is the live real-time factor" }),
      transcriptions: z.object({
        limit: z.number(),
        active: z.number(),
        queued: z.number(),
        waitingForLease: z.number().openapi({ description: "Of the active ones, those waiting for a cluster lease: the cluster is at CLUSTER_MAX_TRANSCRIPTIONS" }),
      }),
    }),
    cluster: z
      .object({
        store: z.enum(["embedded", "upstash"]),
        reachable: z.boolean().openapi({
          description: "Whether the lease store answered; while it does not, held and free are null and instances empty (this instance's own figures are still given)",
        }),
        cap: z.number().nullable().openapi({ description: "CLUSTER_MAX_TRANSCRIPTIONS; null when unset" }),
        held: z.number().nullable().openapi({ description: "Transcriptions running, one lease each" }),
        free: z.number().nullable(),
        instances: z.array(
          z.object({
            instance: z.string(),
            held: z.number(),
            jobs: z.array(z.string()).openapi({ description: "Jobs and requests transcribing there, one lease each" }),
            fetching: z.array(z.string()).openapi({ description: "Jobs fetching their media URL there before they take a lease (not counted in held)" }),
          }),
        ),
      })
      .openapi({ description: "Transcriptions running at once across the cluster, each holding a lease, against the cluster-wide cap" }),
  })
  .openapi("Capacity");
export type CapacityResponse = z.infer<typeof Capacity>;

export const route = createRoute({
  method: "get",
  operationId: "getCapacity",
  tags: ["service"],
  path: "/v1/capacity",
  summary: "This instance's slot plan and use, and the transcriptions running across the cluster",
  responses: { 200: { description: "Capacity.", content: { "application/json": { schema: Capacity } } }, ...errorResponses() },
});

/** The inference thread answers between its calls; one stuck in a long call must not hold up this answer. */
export default router().openapi(route, async (c) => {
  const { transcriber, config, leases, instanceId, machine } = c.var.deps;
  // An outage is when an operator looks here: this instance's own figures are answered all the same.
  const cluster = await leases.snapshot().then(
    (snapshot) => ({ reachable: true, ...snapshot }),
    (err: unknown) => {
      if (err instanceof LeaseStoreUnavailable) return { reachable: false, cap: null, held: null, free: null, instances: [] };
      throw err;
    },
  );
  const status = transcriber?.status();
  const local = status
    ? {
        slots: status.slots,
        threads: status.threads,
        modelCopies: 1,
        limitedBy: status.limitedBy,
        windows: status.windows,
        batch: await transcriber!.batch(),
        audioSeconds: status.audioSeconds,
        transcriptions: {
          limit: status.transcriptions.limit,
          active: status.transcriptions.active,
          queued: status.transcriptions.queued,
          waitingForLease: status.transcriptions.waitingForLease,
        },
      }
    : {
        slots: 0,
        threads: 0,
        modelCopies: 0,
        limitedBy: "role",
        windows: { inUse: 0, queued: 0 },
        batch: null,
        audioSeconds: 0,
        transcriptions: { limit: 0, active: 0, queued: 0, waitingForLease: 0 },
      };
  const body: CapacityResponse = {
    instance: { id: instanceId, role: config.ROLE, ...machine, ...local },
    cluster: { store: leases.kind, ...cluster },
  };
  return c.json(body, 200);
});
