import { z } from "@hono/zod-openapi";
import type { SpeechDetection } from "../lib/audio/speech-regions.ts";
import { DomainError } from "../lib/errors.ts";
import { invalidRequest } from "./env.ts";

const milliseconds = z.coerce.number().int().min(0).max(10_000).optional();
/** OpenAI's server_vad chunking settings, each mapped onto Silero's regions (lib/audio/speech-regions.ts). */
const ServerVad = z.strictObject({
  type: z.literal("server_vad"),
  threshold: z.coerce.number().min(0).max(1).optional(),
  prefix_padding_ms: milliseconds,
  silence_duration_ms: milliseconds,
});
const SERVER_VAD_FIELDS = ["type", "threshold", "prefix_padding_ms", "silence_duration_ms"] as const;

const DESCRIPTION =
  'How the audio is cut before Whisper: "auto" (the default: Silero speech regions, windows of up to 30 s), or server_vad settings, ' +
  '{"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 400, "silence_duration_ms": 2000}: the speech probability that starts speech, the audio kept ' +
  "before and after speech (more than half the silence is used as half), and the silence that ends it; a setting left out keeps the value shown. Needs VAD=silero.";

/** chunking_strategy in a JSON body. */
export const ChunkingJson = z
  .union([z.literal("auto"), ServerVad], { error: 'expected "auto" or {"type": "server_vad", ...}' })
  .optional()
  .openapi({ description: DESCRIPTION });

/** chunking_strategy in a multipart form: one field ("auto" or the object as JSON), or the object's fields as the SDKs send them. */
export const chunkingFields = {
  chunking_strategy: z
    .string()
    .optional()
    .openapi({ description: `${DESCRIPTION} In a form: "auto", or the object as JSON.` }),
  ...Object.fromEntries(
    SERVER_VAD_FIELDS.map((f) => [
      `chunking_strategy[${f}]`,
      z
        .string()
        .optional()
        .openapi({ description: `chunking_strategy's ${f}, as the SDKs send an object.` }),
    ]),
  ),
};

const refuse = (message: string) => new DomainError("invalid_request", `Invalid request: chunking_strategy: ${message}`, { details: { param: "chunking_strategy" } });

/** The speech detection a JSON body's chunking_strategy asks for; undefined for "auto". */
export function speechDetection(value: z.infer<typeof ChunkingJson>): SpeechDetection | undefined {
  if (value === undefined || value === "auto") return undefined;
  return { threshold: value.threshold, padMs: value.prefix_padding_ms, minSilenceMs: value.silence_duration_ms };
}

/** The speech detection a multipart form's chunking_strategy fields ask for; undefined for "auto". */
export function formSpeechDetection(form: Record<string, unknown>): SpeechDetection | undefined {
  const fields = SERVER_VAD_FIELDS.filter((f) => form[`chunking_strategy[${f}]`] !== undefined);
  let value: unknown = form.chunking_strategy;
  if (fields.length > 0) {
    if (value !== undefined) throw refuse("send it once, as one field or as its parts");
    value = Object.fromEntries(fields.map((f) => [f, form[`chunking_strategy[${f}]`]]));
  } else if (typeof value === "string" && value.trimStart().startsWith("{")) {
    try {
      value = JSON.parse(value);
    } catch {
      throw refuse("not valid JSON");
    }
  }
  const parsed = z.object({ chunking_strategy: ChunkingJson }).safeParse({ chunking_strategy: value });
  if (!parsed.success) throw invalidRequest(parsed.error);
  return speechDetection(parsed.data.chunking_strategy);
}
