import { createRoute } from "@hono/zod-openapi";
import { requestOrigin } from "./middleware.ts";
import { DomainError } from "../lib/errors.ts";
import { toJobView } from "../lib/jobs/view.ts";
import { errorResponses, router } from "./env.ts";
import { JobIdParam, JobViewSchema } from "./job-schemas.ts";

export const route = createRoute({
  method: "get",
  operationId: "getJob",
  tags: ["jobs"],
  path: "/v1/jobs/{id}",
  summary: "A job's status, progress, timings, callback attempts and, once done, its result",
  request: { params: JobIdParam },
  responses: { 200: { description: "The job.", content: { "application/json": { schema: JobViewSchema } } }, ...errorResponses(400, 404) },
});

export default router().openapi(route, async (c) => {
  const deps = c.var.deps;
  const job = await deps.jobs.get(c.req.valid("param").id);
  if (!job) throw new DomainError("not_found", "No such job (it may have expired).");
  return c.json(toJobView(job, deps.baseUrl(requestOrigin(c))), 200);
});
