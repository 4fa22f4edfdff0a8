import { createRoute } from "@hono/zod-openapi";
import { requestOrigin } from "./middleware.ts";
import { DomainError } from "../lib/errors.ts";
import { toJobView } from "../lib/jobs/view.ts";
import { errorResponses, router } from "./env.ts";
import { JobIdParam, JobViewSchema } from "./job-schemas.ts";

export const route = createRoute({
  method: "delete",
  operationId: "cancelJob",
  tags: ["jobs"],
  path: "/v1/jobs/{id}",
  summary: "Cancel a queued or running job; its place and its windows' slots are freed at once",
  request: { params: JobIdParam },
  responses: { 200: { description: "The job after cancellation.", content: { "application/json": { schema: JobViewSchema } } }, ...errorResponses(400, 404, 409) },
});

export default router().openapi(route, async (c) => {
  const deps = c.var.deps;
  const job = await deps.jobService.cancel(c.req.valid("param").id);
  if (!job) throw new DomainError("not_found", "No such job (it may have expired).");
  return c.json(toJobView(job, deps.baseUrl(requestOrigin(c))), 200);
});
