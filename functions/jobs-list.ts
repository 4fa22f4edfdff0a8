import { createRoute, z } from "@hono/zod-openapi";
import { requestOrigin } from "./middleware.ts";
import { JOB_STATUSES } from "../lib/jobs/ports.ts";
import { toJobView } from "../lib/jobs/view.ts";
import { errorResponses, router } from "./env.ts";
import { JobViewSchema } from "./job-schemas.ts";

const JobList = z.object({ object: z.literal("list"), data: z.array(JobViewSchema), next_cursor: z.string().nullable() }).openapi("JobList");
export type JobListResponse = z.infer<typeof JobList>;

export const route = createRoute({
  method: "get",
  operationId: "listJobs",
  tags: ["jobs"],
  path: "/v1/jobs",
  summary: "Jobs, newest first, optionally by status",
  request: {
    query: z.object({
      status: z.enum(JOB_STATUSES).optional(),
      limit: z.coerce.number().int().min(1).max(100).default(20),
      cursor: z.string().optional(),
    }),
  },
  responses: {
    200: { description: "A page of jobs (results omitted; fetch a job for its result).", content: { "application/json": { schema: JobList } } },
    ...errorResponses(400),
  },
});

export default router().openapi(route, async (c) => {
  const deps = c.var.deps;
  const page = await deps.jobs.list(c.req.valid("query"));
  const base = deps.baseUrl(requestOrigin(c));
  return c.json({ object: "list" as const, data: page.jobs.map((j) => toJobView(j, base, { withResult: false })), next_cursor: page.nextCursor }, 200);
});
