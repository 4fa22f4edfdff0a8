import { createRoute } from "@hono/zod-openapi";
import { AudioForm, audioResponses, readAudioForm, respondWithTranscript } from "./audio-request.ts";
import { errorResponses } from "./env.ts";
import { uploadRoute } from "./upload.ts";

export const route = createRoute({
  method: "post",
  operationId: "createTranslation",
  tags: ["audio"],
  path: "/v1/audio/translations",
  summary: "Translate audio into English text (OpenAI-compatible, multilingual models)",
  request: { body: { required: true, content: { "multipart/form-data": { schema: AudioForm } } } },
  responses: { ...audioResponses, ...errorResponses(400, "request_timeout", 413, 415, 429, 503) },
});

export default uploadRoute(route, async (c) => respondWithTranscript(c, await readAudioForm(c, AudioForm), "translate", undefined));
