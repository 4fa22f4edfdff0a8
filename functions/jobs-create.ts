import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { createRoute } from "@hono/zod-openapi";
import { AppError } from "../lib/errors.ts";
import type { JobInput, JobRecord } from "../lib/jobs/ports.ts";
import { toJobView } from "../lib/jobs/view.ts";
import { assertOutboundAllowed } from "../lib/net/safe-fetch.ts";
import { checkLanguage } from "./audio-request.ts";
import { errorResponses, router } from "./env.ts";
import { JobForm, JobJsonBody, JobViewSchema } from "./job-schemas.ts";
import { saveUpload } from "./upload.ts";

export const route = createRoute({
  method: "post",
  operationId: "createJob",
  tags: ["jobs"],
  path: "/v1/jobs",
  summary: "Submit an asynchronous transcription job (upload or URL), optionally with a signed callback",
  request: {
    // Not "required": with two content types, each validator then runs only for its own type.
    body: { content: { "multipart/form-data": { schema: JobForm }, "application/json": { schema: JobJsonBody } } },
  },
  responses: {
    202: { description: "Accepted; poll links.self or wait for the callback.", content: { "application/json": { schema: JobViewSchema } } },
    ...errorResponses(400, 403, 413, 429),
  },
});

export default router().openapi(route, async (c) => {
  const services = c.get("services");
  const { catalog, runner, policy } = services;
  const contentType = c.req.header("content-type") ?? "";
  const body = contentType.includes("application/json") ? c.req.valid("json") : contentType.includes("multipart/form-data") ? c.req.valid("form") : null;
  if (!body) throw new AppError("unsupported_media", "Send the job as multipart/form-data (with a file) or as application/json (with a url).");

  // Recorded as resolved, so the job shows the model that runs it, not the "whisper-1" alias.
  const model = catalog.resolve(body.model).name;
  const language = checkLanguage(body.language);
  if (body.callback_url) {
    if (!services.webhookSecrets.length) {
      throw new AppError("invalid_request", "callback_url needs the server to have WEBHOOK_SECRET configured to sign callbacks.", { details: { param: "callback_url" } });
    }
    await assertOutboundAllowed(body.callback_url, policy);
  }
  const idempotencyKey = c.req.header("idempotency-key");
  if (idempotencyKey !== undefined && !/^[\x21-\x7e]{1,255}$/.test(idempotencyKey)) {
    throw new AppError("invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters.");
  }

  const id = `job_${randomUUID().replaceAll("-", "")}`;
  let input: JobInput;
  if ("url" in body) {
    await assertOutboundAllowed(body.url, policy);
    input = { kind: "url", url: body.url };
  } else {
    const spooled = join(services.tempDir, `${id}.upload`);
    await saveUpload(services, body.file, spooled);
    try {
      input = await services.blobs.save(id, spooled, { filename: body.file.name || "upload", bytes: body.file.size });
    } finally {
      await rm(spooled, { force: true });
    }
  }

  const record: JobRecord = {
    id,
    status: "queued",
    request: {
      model,
      language,
      task: body.task,
      responseFormat: body.response_format,
      callbackUrl: body.callback_url,
      callbackIncludeResult: body.callback_include_result,
      metadata: body.metadata,
      // Without PUBLIC_URL the callback's links use the address the client reached us at.
      ...(services.config.PUBLIC_URL ? {} : { origin: new URL(c.req.url).origin }),
    },
    input,
    idempotencyKey,
    createdAt: new Date().toISOString(),
    runs: 0,
    progress: { doneSeconds: 0, totalSeconds: null },
  };
  let submitted;
  try {
    submitted = await runner.submit(record);
  } catch (err) {
    if (input.kind !== "url") await services.blobs.remove(input);
    throw err;
  }
  if (!submitted.created && input.kind !== "url") await services.blobs.remove(input);
  const view = toJobView(submitted.job, services.baseUrl(c.req.url));
  c.header("location", view.links.self);
  if (!submitted.created) c.header("idempotent-replayed", "true");
  return c.json(view, 202);
});
