import { createRoute, z } from "@hono/zod-openapi";
import { DomainError } from "../lib/errors.ts";
import type { Context } from "hono";
import { type AppEnv, errorResponses, router } from "./env.ts";
import { Model } from "./models.ts";

export const route = createRoute({
  method: "get",
  operationId: "getModel",
  tags: ["audio"],
  path: "/v1/models/{model}",
  summary: "One model this server can transcribe with (OpenAI-compatible)",
  request: { params: z.object({ model: z.string().openapi({ description: "A model id from GET /v1/models; a slash in it may be sent URL-encoded or as it is." }) }) },
  responses: { 200: { description: "The model.", content: { "application/json": { schema: Model } } }, ...errorResponses(404) },
});

async function modelAnswer(c: Context<AppEnv>, model: string) {
  const names = await c.var.deps.catalog.list();
  if (!names.includes(model))
    throw new DomainError("not_found", `The model "${model}" does not exist here. GET /v1/models lists the available ones.`, { details: { param: "model" } });
  return c.json({ id: model, object: "model" as const, created: 0, owned_by: "slotscribe" }, 200);
}

export default router()
  .openapi(route, (c) => modelAnswer(c, c.req.valid("param").model))
  // Clients that build the path by concatenation send an id's slash as it is.
  .get("/v1/models/:model{.+}", (c) => modelAnswer(c, c.req.param("model")));
