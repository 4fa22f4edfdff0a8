import { createRoute, z } from "@hono/zod-openapi";
import type { SpeechDetection } from "../lib/audio/speech-regions.ts";
import { DomainError } from "../lib/errors.ts";
import { AudioForm, audioResponses, checkLanguage, readAudioForm, respondWithTranscript } from "./audio-request.ts";
import { errorResponses, invalidRequest } from "./env.ts";
import { uploadRoute } from "./upload.ts";

const Granularities = z.union([z.enum(["segment", "word"]), z.array(z.enum(["segment", "word"]))]).optional();

const milliseconds = z.coerce.number().int().min(0).max(10_000).optional();
/** OpenAI's server_vad chunking settings, each mapped onto Silero's regions (lib/audio/speech-regions.ts). */
const ServerVad = z.strictObject({
  type: z.literal("server_vad"),
  threshold: z.coerce.number().min(0).max(1).optional(),
  prefix_padding_ms: milliseconds,
  silence_duration_ms: milliseconds,
});
const SERVER_VAD_FIELDS = ["type", "threshold", "prefix_padding_ms", "silence_duration_ms"] as const;

const TranscriptionForm = AudioForm.extend({
  language: z.string().optional().openapi({ description: "ISO-639-1 code; detected when omitted (multilingual models)." }),
  "timestamp_granularities[]": Granularities.openapi({
    description: "segment, word (verbose_json only; word needs a model exported with cross-attention outputs, the hub's *_timestamped exports, and is a 400 otherwise).",
  }),
  timestamp_granularities: Granularities.openapi({ description: "Same as timestamp_granularities[]." }),
  chunking_strategy: z
    .string()
    .optional()
    .openapi({
      description:
        'How the audio is cut before Whisper: "auto" (the default: Silero speech regions, windows of up to 30 s), or a server_vad object as JSON, ' +
        '{"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 400, "silence_duration_ms": 2000}: the speech probability that starts speech, the audio kept ' +
        "before and after speech (at most half the silence), and the silence that ends it; a setting left out keeps the value shown. Needs VAD=silero.",
    }),
  ...Object.fromEntries(
    SERVER_VAD_FIELDS.map((f) => [
      `chunking_strategy[${f}]`,
      z
        .string()
        .optional()
        .openapi({ description: `chunking_strategy's ${f}, as the SDKs send an object.` }),
    ]),
  ),
});

export const route = createRoute({
  method: "post",
  operationId: "createTranscription",
  tags: ["audio"],
  path: "/v1/audio/transcriptions",
  summary: "Transcribe audio (OpenAI-compatible)",
  request: { body: { required: true, content: { "multipart/form-data": { schema: TranscriptionForm } } } },
  responses: { ...audioResponses, ...errorResponses(400, 413, 415, "unprocessable_audio", 429, 503) },
});

/**
 * chunking_strategy as the SDKs send an object (chunking_strategy[type]=server_vad, ...), or as one
 * field: "auto" or the object as JSON.
 */
function speechDetection(form: Record<string, unknown>): SpeechDetection | undefined {
  const fields = SERVER_VAD_FIELDS.filter((f) => form[`chunking_strategy[${f}]`] !== undefined);
  let value: unknown = form.chunking_strategy;
  if (fields.length > 0) {
    if (value !== undefined)
      throw new DomainError("invalid_request", "Invalid request: chunking_strategy: send it once, as one field or as its parts", { details: { param: "chunking_strategy" } });
    value = Object.fromEntries(fields.map((f) => [f, form[`chunking_strategy[${f}]`]]));
  } else if (value === undefined || value === "auto") {
    return undefined;
  } else if (typeof value === "string" && value.trimStart().startsWith("{")) {
    try {
      value = JSON.parse(value);
    } catch {
      throw new DomainError("invalid_request", "Invalid request: chunking_strategy: not valid JSON", { details: { param: "chunking_strategy" } });
    }
  } else {
    throw new DomainError("invalid_request", 'Invalid request: chunking_strategy: expected "auto" or a server_vad object', { details: { param: "chunking_strategy" } });
  }
  const parsed = z.object({ chunking_strategy: ServerVad }).safeParse({ chunking_strategy: value });
  if (!parsed.success) throw invalidRequest(parsed.error);
  const { threshold, prefix_padding_ms, silence_duration_ms } = parsed.data.chunking_strategy;
  return { threshold, padMs: prefix_padding_ms, minSilenceMs: silence_duration_ms };
}

export default uploadRoute(route, async (c) => {
  const form = await readAudioForm(c, TranscriptionForm);
  const granularities = [form["timestamp_granularities[]"] ?? [], form.timestamp_granularities ?? []].flat();
  return respondWithTranscript(c, form, "transcribe", checkLanguage(form.language), { wordTimestamps: granularities.includes("word"), speechDetection: speechDetection(form) });
});
