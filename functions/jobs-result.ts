import { createRoute, z } from "@hono/zod-openapi";
import { DomainError } from "../lib/errors.ts";
import { renderTranscript, transcriptJson } from "../lib/formats.ts";
import { RESPONSE_FORMATS } from "../lib/transcript.ts";
import { type TranscriptBody, transcriptContent } from "./audio-request.ts";
import { errorResponses, router } from "./env.ts";
import { JobIdParam } from "./job-schemas.ts";

export const route = createRoute({
  method: "get",
  operationId: "getJobResult",
  tags: ["jobs"],
  path: "/v1/jobs/{id}/result",
  summary: "A finished job's transcript in any response format",
  request: { params: JobIdParam, query: z.object({ format: z.enum(RESPONSE_FORMATS).optional() }) },
  responses: { 200: { description: "The transcript in the requested format.", content: transcriptContent }, ...errorResponses(400, 404, 409) },
});

export default router().openapi(route, async (c) => {
  const deps = c.var.deps;
  const job = await deps.jobs.get(c.req.valid("param").id);
  if (!job) throw new DomainError("not_found", "No such job (it may have expired).");
  if (job.status !== "succeeded" || !job.result) {
    throw new DomainError(
      "conflict",
      job.status === "failed" || job.status === "canceled"
        ? `The job ${job.status === "canceled" ? "was canceled" : "failed"}; it has no result.`
        : `The job is ${job.status}; its result is not ready yet.`,
      {
        details: { status: job.status },
      },
    );
  }
  const format = c.req.valid("query").format ?? job.request.responseFormat;
  // The JSON formats are checked against the schema the API document gives them.
  if (format === "json" || format === "verbose_json") return c.json(transcriptJson(job.result, format) satisfies TranscriptBody, 200);
  const rendered = renderTranscript(job.result, format);
  return c.body(rendered.body, 200, { "content-type": rendered.contentType });
});
