import { rm } from "node:fs/promises";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "@hono/zod-openapi";
import { decimalOrAsIs } from "../lib/decimal.ts";
import { isWhisperLanguage } from "../lib/engine/languages.ts";
import { DomainError, errorBody, isDomainError } from "../lib/errors.ts";
import { renderTranscript, type VerboseOptions } from "../lib/formats.ts";
import { transcriberOf } from "./deps.ts";
import { recordError } from "./middleware.ts";
import type { TranscribeRequest } from "../lib/transcription-service.ts";
import { RESPONSE_FORMATS, type ResponseFormat } from "../lib/transcript.ts";
import type { AppEnv } from "./env.ts";
import { FileField, ModelField, PromptField, readForm } from "./upload.ts";

/** A multipart field that may come once or repeated, with or without `[]` (the SDKs send `name[]`). */
const repeated = <T extends string>(item: z.ZodEnum<{ [K in T]: K }>) =>
  z.union([item, z.array(item)], { error: `each value must be one of ${item.options.join(", ")} (repeat the field for several)` }).optional();

const INCLUDE_DESCRIPTION = "logprobs: each text token's log-probability (json and verbose_json).";
/** include[] and include, as a form or a JSON body sends them. */
export const includeFields = {
  "include[]": repeated(z.enum(["logprobs"])).openapi({ description: INCLUDE_DESCRIPTION }),
  include: repeated(z.enum(["logprobs"])).openapi({ description: "Same as include[]." }),
};

/** timestamp_granularities[] and timestamp_granularities, as a form or a JSON body sends them. */
export const granularityFields = {
  "timestamp_granularities[]": repeated(z.enum(["segment", "word"])).openapi({
    description: "segment, word (verbose_json only; word needs a model exported with cross-attention outputs, the hub's *_timestamped exports, and is a 400 otherwise).",
  }),
  timestamp_granularities: repeated(z.enum(["segment", "word"])).openapi({ description: "Same as timestamp_granularities[]." }),
};

type Repeated<T> = T | T[] | undefined;

/** Whether include[] (either spelling) asks for token log-probabilities. */
export function logprobsAsked(fields: { "include[]"?: Repeated<"logprobs">; include?: Repeated<"logprobs"> }): boolean {
  return [fields["include[]"] ?? [], fields.include ?? []].flat().includes("logprobs");
}

type GranularityFields = { "timestamp_granularities[]"?: Repeated<"segment" | "word">; timestamp_granularities?: Repeated<"segment" | "word"> };

function granularities(fields: GranularityFields): ("segment" | "word")[] {
  return [fields["timestamp_granularities[]"] ?? [], fields.timestamp_granularities ?? []].flat();
}

/** Whether timestamp_granularities[] (either spelling) asks for word timestamps. */
export function wordTimestampsAsked(fields: GranularityFields): boolean {
  return granularities(fields).includes("word");
}

/**
 * The granularities as OpenAI's endpoint takes them: words only in verbose_json (any other format is
 * a 400, as OpenAI answers), and segments left out of verbose_json when only words are asked for.
 */
export function timestampGranularities(fields: GranularityFields & { response_format: ResponseFormat }): { wordTimestamps: boolean; segments: boolean } {
  const asked = granularities(fields);
  const wordTimestamps = asked.includes("word");
  if (wordTimestamps && fields.response_format !== "verbose_json") {
    throw new DomainError("invalid_request", `timestamp_granularities[]=word needs response_format=verbose_json (got ${fields.response_format}).`, {
      details: { param: "timestamp_granularities[]" },
    });
  }
  return { wordTimestamps, segments: !wordTimestamps || asked.includes("segment") };
}

/** A number from 0 to 1 in a JSON body or, written in decimal, a form field; a blank field is no temperature. */
export const TemperatureField = z.preprocess((v) => (v === "" ? undefined : decimalOrAsIs(v)), z.number().min(0).max(1).optional());

/** The multipart fields OpenAI's audio endpoints take; unknown fields are ignored as OpenAI does. */
export const AudioForm = z.object({
  file: FileField,
  model: ModelField,
  prompt: PromptField.optional().openapi({
    description:
      "Conditions decoding (Whisper's initial prompt): spellings, names, style. Its last 223 tokens are used, on every window: it may be up to 256 KiB, such as the previous chunk's whole transcript (OpenAI's recipe for long files), of which only the last 8192 characters are read. Whisper's special tokens (<|endoftext|>, <|de|>, ...) are refused.",
  }),
  response_format: z.enum(RESPONSE_FORMATS).default("json"),
  temperature: TemperatureField.openapi({
    description: "The first decoding temperature (default 0, greedy); a window whose decode fails Whisper's checks is decoded again 0.2 hotter, up to 1.",
  }),
  stream: z
    .enum(["true", "false"])
    .optional()
    .openapi({ description: "true: text/event-stream of transcript.text.delta events (one per window, in order), then transcript.text.done." }),
  ...includeFields,
});

const Usage = z.object({ type: z.literal("duration"), seconds: z.number() });
export const Word = z.object({ word: z.string(), start: z.number(), end: z.number() });
export const Logprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number()) });
export const TranscriptionJson = z.object({ text: z.string(), logprobs: z.array(Logprob).optional(), usage: Usage }).openapi("Transcription");
export const VerboseTranscription = z
  .object({
    task: z.string(),
    language: z.string(),
    duration: z.number(),
    text: z.string(),
    words: z.array(Word).optional().openapi({ description: "With timestamp_granularities[]=word: each word and its times, from cross-attention alignment." }),
    segments: z
      .array(
        z.object({
          id: z.number(),
          seek: z.number().openapi({ description: "The segment's window offset, in 10 ms frames" }),
          start: z.number(),
          end: z.number(),
          text: z.string(),
          tokens: z.array(z.number()),
          temperature: z.number(),
          avg_logprob: z.number(),
          compression_ratio: z.number(),
          no_speech_prob: z.number(),
        }),
      )
      .optional()
      .openapi({ description: "Left out when timestamp_granularities[] asks for words only, as OpenAI does." }),
    logprobs: z.array(Logprob).optional(),
    usage: Usage,
  })
  .openapi("VerboseTranscription");

export type TranscriptBody = z.infer<typeof TranscriptionJson> | z.infer<typeof VerboseTranscription>;

/** A finished transcript in each response_format's content type: json and verbose_json, text and srt, vtt. */
export const transcriptContent = {
  "application/json": { schema: z.union([TranscriptionJson, VerboseTranscription]) },
  "text/plain": { schema: z.string() },
  "text/vtt": { schema: z.string() },
};

export const audioResponses = {
  200: {
    description: "The transcript in the requested response_format, or with stream=true a text/event-stream.",
    content: { ...transcriptContent, "text/event-stream": { schema: z.string() } },
  },
};

export function checkLanguage(language: string | undefined): string | undefined {
  if (language === undefined || language === "") return undefined;
  const code = language.toLowerCase();
  if (!isWhisperLanguage(code)) {
    throw new DomainError("invalid_request", `Unknown language "${language}": use an ISO-639-1 code such as "en" or "de".`, { details: { param: "language" } });
  }
  return code;
}

/** OpenAI answers a file it cannot read with 400; the jobs API keeps 415 and 422, which say more. */
function asOpenAiError(err: unknown): unknown {
  if (isDomainError(err) && (err.code === "unsupported_media" || err.code === "unprocessable_audio")) {
    return new DomainError("invalid_request", err.message, { cause: err, details: { ...err.details, param: "file", reason: err.code } });
  }
  return err;
}

/** Refuses with 429 before the upload is read when the admission line is full, then reads it. */
export async function readAudioForm<S extends typeof AudioForm>(c: Context<AppEnv>, schema: S): Promise<z.infer<S>> {
  transcriberOf(c.var.deps).transcription.assertRoom();
  return readForm(c, schema);
}

export async function respondWithTranscript(
  c: Context<AppEnv>,
  form: z.infer<typeof AudioForm>,
  task: "transcribe" | "translate",
  language: string | undefined,
  { wordTimestamps = false, segments, speechDetection }: Pick<TranscribeRequest, "wordTimestamps" | "speechDetection"> & VerboseOptions = {},
): Promise<Response> {
  const deps = c.var.deps;
  const requestId = c.get("requestId");
  const { transcription } = transcriberOf(deps);
  const includeLogprobs = logprobsAsked(form);
  const request = {
    id: requestId,
    model: form.model,
    language,
    task,
    prompt: form.prompt,
    temperature: form.temperature,
    includeLogprobs,
    wordTimestamps,
    speechDetection,
    signal: c.req.raw.signal,
  };
  if (form.stream === "true") {
    // A stream carries the text as it comes, as OpenAI's does: a format it would drop is refused, not ignored.
    if (form.response_format !== "json" && form.response_format !== "text") {
      throw new DomainError(
        "invalid_request",
        `stream=true streams the transcript's text (transcript.text.delta events), not response_format=${form.response_format}: use json or text, or leave stream out.`,
        { details: { param: "response_format" } },
      );
    }
    return streamTranscript(c, form, request);
  }
  const transcript = await transcription.transcribeFile(form.file.path, request).catch((err: unknown) => {
    throw asOpenAiError(err);
  });
  const rendered = renderTranscript(transcript, form.response_format, { segments });
  return c.body(rendered.body, 200, { "content-type": rendered.contentType });
}

/**
 * OpenAI's streamed transcription: a transcript.text.delta event as each window's text is joined (in
 * order), then transcript.text.done with the whole text. The stream starts once the
 * transcription is under way (admitted, its audio decoding): a request refused before that, for an
 * unknown model, audio that is not audio, or a full queue (429 with Retry-After), gets the status and
 * the error body a request without stream gets. After it a failure can no longer change the status,
 * so it arrives as an error event in the usual error shape, which the SDKs raise from their stream
 * iterators.
 */
async function streamTranscript(c: Context<AppEnv>, form: z.infer<typeof AudioForm>, request: Omit<TranscribeRequest, "onSegments" | "onStart">): Promise<Response> {
  const { transcription } = transcriberOf(c.var.deps);
  const events: unknown[] = [];
  let textSent = false;
  // The done event's text is trimmed at both ends: whitespace after a delta waits for text after it.
  let heldSpace = "";
  // Events wait here until the stream exists; from then on each is written as it comes.
  let flush: () => void = () => undefined;
  let started!: () => void;
  const start = new Promise<void>((resolve) => (started = resolve));
  const transcript = transcription.transcribeFile(form.file.path, {
    ...request,
    onStart: started,
    onSegments: (segments, logprobs) => {
      // The deltas join into the done event's text, which has no leading or trailing space.
      const delta = heldSpace + segments.map((s) => s.text).join("");
      const text = textSent ? delta : delta.trimStart();
      const shown = text.trimEnd();
      heldSpace = text.slice(shown.length);
      textSent ||= shown !== "";
      events.push({ type: "transcript.text.delta", delta: shown, ...(logprobs ? { logprobs } : {}) });
      flush();
    },
  });
  try {
    await Promise.race([start, transcript]);
  } catch (err) {
    throw asOpenAiError(err);
  }
  // The stream outlives the handler, and the request's own clean-up runs when the handler returns:
  // the stream takes the spooled upload over and removes it when it ends.
  const spooled = c.get("spooled");
  const at = spooled.indexOf(form.file.path);
  if (at >= 0) spooled.splice(at, 1);
  return streamSSE(c, async (sse) => {
    let writes = Promise.resolve();
    flush = () => {
      writes = writes.then(async () => {
        for (let event = events.shift(); event !== undefined; event = events.shift()) await sse.writeSSE({ data: JSON.stringify(event) });
      });
    };
    flush();
    try {
      // No usage: OpenAI's SDKs type this event's as token usage only, and the duration usage of json
      // and verbose_json read as such gave token counts that are not there.
      const { text, logprobs } = await transcript;
      events.push({ type: "transcript.text.done", text, ...(logprobs ? { logprobs } : {}) });
    } catch (err) {
      // A client that went away is no failure of ours, and nobody is left to tell.
      if (!c.req.raw.signal.aborted) {
        // The stream's 200 has gone out: the code reaches the request's line, written when the stream ends.
        events.push({ type: "error", ...errorBody(recordError(asOpenAiError(err), c), c.get("requestId")) });
      }
    } finally {
      await rm(form.file.path, { force: true });
    }
    flush();
    await writes;
  });
}
