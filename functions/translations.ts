import { createRoute } from "@hono/zod-openapi";
import { AudioForm, audioResponses, respondWithTranscript } from "./audio-request.ts";
import { errorResponses, router } from "./env.ts";

export const route = createRoute({
  method: "post",
  operationId: "createTranslation",
  tags: ["audio"],
  path: "/v1/audio/translations",
  summary: "Translate audio into English text (OpenAI-compatible, multilingual models)",
  request: { body: { required: true, content: { "multipart/form-data": { schema: AudioForm } } } },
  responses: { ...audioResponses, ...errorResponses(400, 413, 415, 422, 429, 503) },
});

export default router().openapi(route, async (c) => respondWithTranscript(c, c.req.valid("form"), "translate", undefined) as never);
