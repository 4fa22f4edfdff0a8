import { z } from "@hono/zod-openapi";
import { CALLBACK_STATES, JOB_STATUSES } from "../lib/jobs/ports.ts";
import { RESPONSE_FORMATS } from "../lib/transcript.ts";
import { granularityFields, includeFields, TemperatureField, VerboseTranscription } from "./audio-request.ts";
import { ChunkingJson, chunkingFields } from "./chunking.ts";
import { FileField, ModelField, PromptField, urlField } from "./upload.ts";

/** Metadata is stored with the job and repeated in every callback: kept small and shallow. */
const METADATA_MAX_BYTES = 16 * 1024;
const METADATA_MAX_DEPTH = 16;

function tooDeep(value: unknown, levelsLeft: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (levelsLeft === 0) return true;
  return Object.values(value).some((v) => tooDeep(v, levelsLeft - 1));
}

/** Why `metadata` cannot be kept, or null. The depth is checked first: serializing a deep value overflows the stack. */
function metadataProblem(value: Record<string, unknown>): string | null {
  if (tooDeep(value, METADATA_MAX_DEPTH)) return `metadata may nest at most ${METADATA_MAX_DEPTH} levels deep`;
  if (Buffer.byteLength(JSON.stringify(value)) > METADATA_MAX_BYTES) return `metadata may be at most ${METADATA_MAX_BYTES} bytes as JSON`;
  return null;
}

const common = {
  model: ModelField,
  language: z.string().optional(),
  task: z.enum(["transcribe", "translate"]).default("transcribe"),
  response_format: z.enum(RESPONSE_FORMATS).default("json"),
  callback_url: urlField("callback_url").optional(),
  prompt: PromptField.optional().openapi({ description: "Conditions decoding, as on /v1/audio/transcriptions." }),
  temperature: TemperatureField.openapi({ description: "The first decoding temperature, as on /v1/audio/transcriptions." }),
  ...includeFields,
  ...granularityFields,
};

export const JobJsonBody = z
  .object({
    url: urlField("url").openapi({ description: "Media URL to fetch (SSRF-protected)." }),
    ...common,
    chunking_strategy: ChunkingJson,
    callback_include_result: z.boolean().default(false),
    metadata: z
      .record(z.string(), z.unknown())
      .optional()
      .superRefine((value, ctx) => {
        const problem = value === undefined ? null : metadataProblem(value);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      })
      .openapi({ description: `Echoed back on the job and in callbacks; at most ${METADATA_MAX_BYTES} bytes as JSON, ${METADATA_MAX_DEPTH} levels deep.` }),
  })
  .openapi("JobFromUrl");

export const JobForm = z
  .object({
    file: FileField,
    ...common,
    ...chunkingFields,
    callback_include_result: z
      .enum(["true", "false"])
      .default("false")
      .transform((v) => v === "true"),
    metadata: z
      .string()
      .optional()
      .transform((s, ctx) => {
        if (s === undefined) return undefined;
        if (Buffer.byteLength(s) > METADATA_MAX_BYTES) {
          ctx.addIssue({ code: "custom", message: `metadata may be at most ${METADATA_MAX_BYTES} bytes as JSON` });
          return z.NEVER;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(s);
        } catch {
          // Reported below.
        }
        if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
          ctx.addIssue({ code: "custom", message: "metadata must be a JSON object" });
          return z.NEVER;
        }
        const problem = metadataProblem(parsed as Record<string, unknown>);
        if (problem) {
          ctx.addIssue({ code: "custom", message: problem });
          return z.NEVER;
        }
        return parsed as Record<string, unknown>;
      }),
  })
  .openapi("JobFromUpload");

export const JobViewSchema = z
  .object({
    id: z.string(),
    object: z.literal("transcription.job"),
    status: z.enum(JOB_STATUSES),
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
        state: z.enum(CALLBACK_STATES).openapi({
          description: "pending until an attempt is answered 2xx (delivered), the retries run out (failed) or the receiver answers 410 Gone or cannot be called (gone).",
        }),
        webhook_id: z.string().nullable(),
        attempts: z.array(z.object({ at: z.string(), status: z.number().nullable(), latency_ms: z.number(), error: z.string().optional() })),
        next_attempt_at: z.string().nullable().openapi({ description: "When a pending delivery is tried next (null once settled, or where QStash schedules it)." }),
      })
      .nullable(),
    links: z.object({ self: z.string(), result: z.string() }),
    // A union, not .nullable(): on a registered schema that loses the null (or makes an allOf that refuses it).
    result: z
      .union([VerboseTranscription, z.null()])
      .openapi({ description: "Once succeeded: the transcript as verbose_json (GET .../result renders any format); null before and otherwise." }),
  })
  .openapi("Job");

export const JobIdParam = z.object({
  id: z
    .string()
    .regex(/^job_[A-Za-z0-9]+$/)
    .openapi({ param: { name: "id", in: "path" }, example: "job_3f2a..." }),
});
