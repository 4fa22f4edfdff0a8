import { createRoute, z } from "@hono/zod-openapi";
import { AudioForm, audioResponses, checkLanguage, granularityFields, readAudioForm, respondWithTranscript, timestampGranularities } from "./audio-request.ts";
import { chunkingFields, formSpeechDetection } from "./chunking.ts";
import { errorResponses } from "./env.ts";
import { uploadRoute } from "./upload.ts";

const TranscriptionForm = AudioForm.extend({
  language: z.string().optional().openapi({ description: "ISO-639-1 code; detected when omitted (multilingual models)." }),
  ...granularityFields,
  ...chunkingFields,
});

export const route = createRoute({
  method: "post",
  operationId: "createTranscription",
  tags: ["audio"],
  path: "/v1/audio/transcriptions",
  summary: "Transcribe audio (OpenAI-compatible)",
  request: { body: { required: true, content: { "multipart/form-data": { schema: TranscriptionForm } } } },
  responses: { ...audioResponses, ...errorResponses(400, "request_timeout", 413, 415, 429, 503) },
});

export default uploadRoute(route, async (c) => {
  const form = await readAudioForm(c, TranscriptionForm);
  return respondWithTranscript(c, form, "transcribe", checkLanguage(form.language), { ...timestampGranularities(form), speechDetection: formSpeechDetection(form) });
});
