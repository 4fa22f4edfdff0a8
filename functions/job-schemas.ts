import { z } from "@hono/zod-openapi";
import { RESPONSE_FORMATS } from "../lib/transcript.ts";
import { FileField } from "./upload.ts";

const common = {
  model: z.string().default("whisper-1"),
  language: z.string().optional(),
  task: z.enum(["transcribe", "translate"]).default("transcribe"),
  response_format: z.enum(RESPONSE_FORMATS).default("json"),
  callback_url: z.url({ protocol: /^https?$/, message: "callback_url must be an http(s) URL" }).optional(),
};

export const JobJsonBody = z
  .object({
    url: z.url({ protocol: /^https?$/, message: "url must be an http(s) URL" }).openapi({ description: "Media URL to fetch (SSRF-protected)." }),
    ...common,
    callback_include_result: z.boolean().default(false),
    metadata: z.record(z.string(), z.unknown()).optional().openapi({ description: "Echoed back on the job and in callbacks." }),
  })
  .openapi("JobFromUrl");

export const JobForm = z
  .object({
    file: FileField,
    ...common,
    callback_include_result: z.enum(["true", "false"]).default("false").transform((v) => v === "true"),
    metadata: z
      .string()
      .optional()
      .transform((s, ctx) => {
        if (s === undefined) return undefined;
        try {
          const parsed: unknown = JSON.parse(s);
          if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
        } catch {
          // Reported below.
        }
        ctx.addIssue({ code: "custom", message: "metadata must be a JSON object" });
        return z.NEVER;
      }),
  })
  .openapi("JobFromUpload");

const Segment = z.object({ id: z.number(), start: z.number(), end: z.number(), text: z.string(), tokens: z.array(z.number()) });

export const JobViewSchema = z
  .object({
    id: z.string(),
    object: z.literal("transcription.job"),
    status: z.enum(["queued", "running", "succeeded", "failed", "canceled"]),
    model: z.string(),
    task: z.enum(["transcribe", "translate"]),
    language: z.string().nullable(),
    response_format: z.string(),
    created_at: z.string(),
    started_at: z.string().nullable(),
    finished_at: z.string().nullable(),
    expires_at: z.string().nullable(),
    progress: z.object({ done_seconds: z.number(), total_seconds: z.number().nullable() }),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    metadata: z.record(z.string(), z.unknown()).nullable(),
    callback: z
      .object({
        url: z.string(),
        state: z.string(),
        webhook_id: z.string().nullable(),
        attempts: z.array(z.object({ at: z.string(), status: z.number().nullable(), latency_ms: z.number(), error: z.string().optional() })),
      })
      .nullable(),
    links: z.object({ self: z.string(), result: z.string() }),
    result: z.object({ task: z.string(), language: z.string(), duration: z.number(), text: z.string(), segments: z.array(Segment) }).nullable(),
  })
  .openapi("Job");

export const JobIdParam = z.object({ id: z.string().regex(/^job_[A-Za-z0-9]+$/).openapi({ param: { name: "id", in: "path" }, example: "job_3f2a..." }) });
