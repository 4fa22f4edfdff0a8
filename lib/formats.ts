/**
 * Renders a Transcript the way OpenAI's /v1/audio/transcriptions does for each response_format,
 * so OpenAI clients and subtitle tools read our output unchanged.
 *
 * json and verbose_json carry `text` verbatim (they are data). text, srt and vtt are for people
 * and players: their text is trimmed, and cue text is sanitised so that no segment can break the
 * cue structure (a blank line would end the cue, "-->" would read as a timing line, and in VTT
 * "<" and "&" start markup).
 */
import type { ResponseFormat, Segment, Transcript } from "./transcript.ts";

export interface RenderedTranscript {
  contentType: string;
  body: string;
}

const JSON_TYPE = "application/json";
// OpenAI serves srt as text/plain too; there is no registered subtitle type players agree on.
const TEXT_TYPE = "text/plain; charset=utf-8";
const VTT_TYPE = "text/vtt; charset=utf-8";

/** A segment as OpenAI's verbose_json spells it. */
interface VerboseSegment {
  id: number;
  seek: number;
  start: number;
  end: number;
  text: string;
  tokens: number[];
  temperature: number;
  avg_logprob: number;
  compression_ratio: number;
  no_speech_prob: number;
}

/** The JSON response formats as objects, for a caller that serialises them itself. */
export function transcriptJson(t: Transcript, format: "json" | "verbose_json", options?: VerboseOptions) {
  if (format === "json") return { text: t.text, ...(t.logprobs ? { logprobs: t.logprobs } : {}), usage: usage(t) };
  return verboseTranscript(t, options);
}

/** segments: false leaves them out, as OpenAI does when only word timestamps are asked for. */
export interface VerboseOptions {
  segments?: boolean;
}

/** verbose_json as an object: also what a job's view and callback carry as its result. */
export function verboseTranscript(t: Transcript, { segments = true }: VerboseOptions = {}) {
  return {
    task: t.task,
    language: t.language,
    duration: t.duration,
    text: t.text,
    ...(t.words ? { words: t.words } : {}),
    ...(segments ? { segments: t.segments.map(verboseSegment) } : {}),
    ...(t.logprobs ? { logprobs: t.logprobs } : {}),
    usage: usage(t),
  };
}

export function renderTranscript(t: Transcript, format: ResponseFormat, options?: VerboseOptions): RenderedTranscript {
  switch (format) {
    case "json":
    case "verbose_json":
      return { contentType: JSON_TYPE, body: JSON.stringify(transcriptJson(t, format, options)) };
    case "text":
      return { contentType: TEXT_TYPE, body: `${t.text.trim()}\n` };
    case "srt":
      return {
        contentType: TEXT_TYPE,
        body: cues(t.segments, sanitiseCueText)
          .map((cue, index) => `${index + 1}\n${timestamp(cue.start, ",")} --> ${timestamp(cue.end, ",")}\n${cue.text}\n\n`)
          .join(""),
      };
    case "vtt":
      return {
        contentType: VTT_TYPE,
        body: `WEBVTT\n\n${cues(t.segments, (text) => escapeVtt(sanitiseCueText(text)))
          .map((cue) => `${timestamp(cue.start, ".")} --> ${timestamp(cue.end, ".")}\n${cue.text}\n\n`)
          .join("")}`,
      };
  }
}

/** OpenAI's usage for audio billed by duration. */
function usage(t: Transcript): { type: "duration"; seconds: number } {
  return { type: "duration", seconds: Math.ceil(t.duration) };
}

/** Whisper's statistics are per window (the decode that produced the segment), as transcribe.py reports them. */
function verboseSegment(segment: Segment): VerboseSegment {
  return {
    id: segment.id,
    seek: segment.seek ?? Math.floor(Math.max(0, segment.start) * 100),
    start: segment.start,
    end: segment.end,
    text: segment.text,
    tokens: segment.tokens,
    temperature: segment.temperature ?? 0,
    avg_logprob: segment.avgLogprob ?? 0,
    compression_ratio: segment.compressionRatio ?? 0,
    no_speech_prob: segment.noSpeechProb ?? 0,
  };
}

interface Cue {
  start: number;
  end: number;
  text: string;
}

/** Segments with nothing left to show after sanitising are dropped: an empty cue ends early in SRT. */
function cues(segments: Segment[], clean: (text: string) => string): Cue[] {
  return segments.map((segment) => ({ start: segment.start, end: segment.end, text: clean(segment.text) })).filter((cue) => cue.text !== "");
}

function sanitiseCueText(text: string): string {
  return (
    text
      .split(/\r\n|\r|\n/)
      // A regex, not replaceAll("-->"): that would turn "--->" into "-->".
      .map((line) => line.replace(/-{2,}>/g, "->").trim())
      .filter((line) => line !== "")
      .join("\n")
  );
}

function escapeVtt(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (VTT); hours widen past 99, milliseconds never reach 1000. */
function timestamp(seconds: number, separator: "," | "."): string {
  const totalMs = Number.isFinite(seconds) ? Math.max(0, Math.round(seconds * 1000)) : 0;
  const ms = totalMs % 1000;
  const totalSeconds = (totalMs - ms) / 1000;
  const s = totalSeconds % 60;
  const m = Math.floor(totalSeconds / 60) % 60;
  const h = Math.floor(totalSeconds / 3600);
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${separator}${pad(ms, 3)}`;
}

function pad(value: number, width: number): string {
  return String(value).padStart(width, "0");
}
