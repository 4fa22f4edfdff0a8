import { createRoute, z } from "@hono/zod-openapi";
import { AppError } from "../lib/errors.ts";
import { AudioForm, audioResponses, checkLanguage, readAudioForm, respondWithTranscript } from "./audio-request.ts";
import { errorResponses } from "./env.ts";
import { uploadRoute } from "./upload.ts";

const Granularities = z.union([z.enum(["segment", "word"]), z.array(z.enum(["segment", "word"]))]).optional();

const TranscriptionForm = AudioForm.extend({
  language: z.string().optional().openapi({ description: "ISO-639-1 code; detected when omitted (multilingual models)." }),
  "timestamp_granularities[]": Granularities.openapi({ description: "segment (word needs a model exported with cross-attentions; not served yet)." }),
  timestamp_granularities: Granularities.openapi({ description: "Same as timestamp_granularities[]." }),
});

export const route = createRoute({
  method: "post",
  operationId: "createTranscription",
  tags: ["audio"],
  path: "/v1/audio/transcriptions",
  summary: "Transcribe audio (OpenAI-compatible)",
  request: { body: { required: true, content: { "multipart/form-data": { schema: TranscriptionForm } } } },
  responses: { ...audioResponses, ...errorResponses(400, 413, 415, 422, 429, 503) },
});

export default uploadRoute(route, async (c) => {
  const form = await readAudioForm(c, TranscriptionForm);
  const granularities = [form["timestamp_granularities[]"] ?? [], form.timestamp_granularities ?? []].flat();
  if (granularities.includes("word")) {
    throw new AppError(
      "invalid_request",
      "Word-level timestamps need cross-attention alignment, which this server does not compute yet; ask for segment timestamps. " +
        "(They will need a model exported with cross-attention outputs, such as the hub's *_timestamped ONNX exports.)",
      { details: { param: "timestamp_granularities[]" } },
    );
  }
  return respondWithTranscript(c, form, "transcribe", checkLanguage(form.language));
});
