import type { Context } from "hono";
import { z } from "@hono/zod-openapi";
import { WHISPER_LANGUAGE_NAMES } from "../lib/engine/languages.ts";
import { AppError } from "../lib/errors.ts";
import { renderTranscript } from "../lib/formats.ts";
import { transcriberOf } from "../lib/services.ts";
import { RESPONSE_FORMATS } from "../lib/transcript.ts";
import type { AppEnv } from "./env.ts";
import { FileField, ModelField, readForm } from "./upload.ts";

/** The multipart fields OpenAI's audio endpoints take; unknown fields are ignored as OpenAI does. */
export const AudioForm = z.object({
  file: FileField,
  model: ModelField,
  prompt: z.string().optional().openapi({ description: "Accepted for compatibility; not used for conditioning yet." }),
  response_format: z.enum(RESPONSE_FORMATS).default("json"),
  temperature: z.coerce.number().min(0).max(1).optional().openapi({ description: "Accepted for compatibility; decoding is greedy." }),
});

export const TranscriptionJson = z.object({ text: z.string() }).openapi("Transcription");
export const VerboseTranscription = z
  .object({
    task: z.string(),
    language: z.string(),
    duration: z.number(),
    text: z.string(),
    segments: z.array(z.object({ id: z.number(), seek: z.number(), start: z.number(), end: z.number(), text: z.string(), tokens: z.array(z.number()) })),
  })
  .openapi("VerboseTranscription");

export const audioResponses = {
  200: {
    description: "The transcript in the requested response_format.",
    content: {
      "application/json": { schema: z.union([TranscriptionJson, VerboseTranscription]) },
      "text/plain": { schema: z.string() },
      "text/vtt": { schema: z.string() },
    },
  },
};

export function checkLanguage(language: string | undefined): string | undefined {
  if (language === undefined || language === "") return undefined;
  const code = language.toLowerCase();
  if (!WHISPER_LANGUAGE_NAMES[code]) {
    throw new AppError("invalid_request", `Unknown language "${language}": use an ISO-639-1 code such as "en" or "de".`, { details: { param: "language" } });
  }
  return code;
}

/** Refuses with 429 before the upload is read when the admission line is full, then reads it. */
export async function readAudioForm<S extends typeof AudioForm>(c: Context<AppEnv>, schema: S): Promise<z.infer<S>> {
  transcriberOf(c.get("services")).transcription.assertRoom();
  return readForm(c, schema);
}

export async function respondWithTranscript(
  c: Context<AppEnv>,
  form: z.infer<typeof AudioForm>,
  task: "transcribe" | "translate",
  language: string | undefined,
): Promise<Response> {
  const services = c.get("services");
  const requestId = c.get("requestId");
  const { transcription } = transcriberOf(services);
  const transcript = await transcription.transcribeFile(form.file.path, { id: requestId, model: form.model, language, task, signal: c.req.raw.signal });
  const rendered = renderTranscript(transcript, form.response_format);
  return c.body(rendered.body, 200, { "content-type": rendered.contentType });
}
