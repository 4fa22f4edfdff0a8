import { createRoute, z } from "@hono/zod-openapi";
import { requestOrigin } from "./middleware.ts";
import { toJobView } from "../lib/jobs/view.ts";
import { checkLanguage, logprobsAsked, wordTimestampsAsked } from "./audio-request.ts";
import { formSpeechDetection, speechDetection } from "./chunking.ts";
import { errorResponses, REQUEST_ID_HEADER } from "./env.ts";
import { JobForm, JobJsonBody, JobViewSchema } from "./job-schemas.ts";
import { isJson, readForm, readJson, uploadRoute } from "./upload.ts";

export const route = createRoute({
  method: "post",
  operationId: "createJob",
  tags: ["jobs"],
  path: "/v1/jobs",
  summary: "Submit an asynchronous transcription job (upload or URL), optionally with a signed callback",
  request: {
    headers: z.object({
      "idempotency-key": z.string().max(255).optional().openapi({
        description:
          "1 to 255 ASCII characters other than spaces and control characters. A retry with the same key and the same request gets the same job (header idempotent-replayed: true); the same key with another file or other parameters is a 422 idempotency_key_reused.",
        example: "upload-42",
      }),
    }),
    body: { content: { "multipart/form-data": { schema: JobForm }, "application/json": { schema: JobJsonBody } } },
  },
  responses: {
    202: {
      description: "Accepted; poll links.self or wait for the callback.",
      headers: {
        location: { description: "The job's URL (links.self).", schema: { type: "string" } },
        "idempotent-replayed": { description: "true when an Idempotency-Key replayed an earlier submission's job.", schema: { type: "string", enum: ["true"] } },
        "x-request-id": REQUEST_ID_HEADER,
      },
      content: { "application/json": { schema: JobViewSchema } },
    },
    ...errorResponses(400, 403, "request_timeout", 413, 415, "idempotency_key_reused", 429, 503),
  },
});

export default uploadRoute(route, async (c) => {
  const deps = c.var.deps;
  const submitted = await deps.jobService.submit({
    idempotencyKey: c.req.header("idempotency-key"),
    origin: requestOrigin(c),
    readBody: async ({ hashUpload }) => {
      const body = isJson(c) ? await readJson(c, JobJsonBody) : await readForm(c, JobForm, { hashFile: hashUpload });
      const request = {
        model: body.model,
        language: checkLanguage(body.language),
        task: body.task,
        prompt: body.prompt,
        temperature: body.temperature,
        speechDetection: "url" in body ? speechDetection(body.chunking_strategy) : formSpeechDetection(body),
        // Left out when not asked, so that a retried submission digests as it did before they existed.
        includeLogprobs: logprobsAsked(body) || undefined,
        wordTimestamps: wordTimestampsAsked(body) || undefined,
        responseFormat: body.response_format,
        callbackUrl: body.callback_url,
        callbackIncludeResult: body.callback_include_result,
        metadata: body.metadata,
      };
      return "url" in body
        ? { request, source: { kind: "url" as const, url: body.url } }
        : { request, source: { kind: "upload" as const, path: body.file.path, filename: body.file.name || "upload", bytes: body.file.size, sha256: body.file.sha256 } };
    },
  });
  const view = toJobView(submitted.job, deps.baseUrl(requestOrigin(c)));
  c.set("jobId", view.id);
  c.header("location", view.links.self);
  if (!submitted.created) c.header("idempotent-replayed", "true");
  return c.json(view, 202);
});
