import { createRoute, z } from "@hono/zod-openapi";
import { AudioForm, audioResponses, checkLanguage, readAudioForm, respondWithTranscript } from "./audio-request.ts";
import { chunkingFields, formSpeechDetection } from "./chunking.ts";
import { errorResponses } from "./env.ts";
import { uploadRoute } from "./upload.ts";

const Granularities = z.union([z.enum(["segment", "word"]), z.array(z.enum(["segment", "word"]))]).optional();

const TranscriptionForm = AudioForm.extend({
  language: z.string().optional().openapi({ description: "ISO-639-1 code; detected when omitted (multilingual models)." }),
  "timestamp_granularities[]": Granularities.openapi({
    description: "segment, word (verbose_json only; word needs a model exported with cross-attention outputs, the hub's *_timestamped exports, and is a 400 otherwise).",
  }),
  timestamp_granularities: Granularities.openapi({ description: "Same as timestamp_granularities[]." }),
  ...chunkingFields,
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

export default uploadRoute(route, async (c) => {
  const form = await readAudioForm(c, TranscriptionForm);
  const granularities = [form["timestamp_granularities[]"] ?? [], form.timestamp_granularities ?? []].flat();
  return respondWithTranscript(c, form, "transcribe", checkLanguage(form.language), { wordTimestamps: granularities.includes("word"), speechDetection: formSpeechDetection(form) });
});
