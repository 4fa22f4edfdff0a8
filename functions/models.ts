import { createRoute, z } from "@hono/zod-openapi";
import { errorResponses, router } from "./env.ts";

export const Model = z.object({ id: z.string(), object: z.literal("model"), created: z.number(), owned_by: z.string() }).openapi("Model");

const ModelList = z
  .object({
    object: z.literal("list"),
    data: z.array(Model),
  })
  .openapi("ModelList");
export type ModelListResponse = z.infer<typeof ModelList>;

export const route = createRoute({
  method: "get",
  operationId: "listModels",
  tags: ["audio"],
  path: "/v1/models",
  summary: "Models this server can transcribe with (OpenAI-compatible)",
  responses: { 200: { description: "Model ids to pass as `model`.", content: { "application/json": { schema: ModelList } } }, ...errorResponses() },
});

export default router().openapi(route, async (c) => {
  const names = await c.var.deps.catalog.list();
  const body: ModelListResponse = { object: "list", data: names.map((id) => ({ id, object: "model", created: 0, owned_by: "slotscribe" })) };
  return c.json(body, 200);
});
