/**
 * Renders a Transcript the way OpenAI's /v1/audio/transcriptions does for each response_format,
 * so OpenAI clients and subtitle tools read our output unchanged.
 *
 * json and verbose_json carry `text` verbatim (they are data). text, srt and vtt are for people
 * and players: their text is trimmed, and cue text is sanitised so that no segment can break the
 * cue structure (a blank line would end the cue, "-->" would read as a timing line, and in VTT
 * "<" and "&" start markup).
 */
import { deflateSync } from "node:zlib";
import type { ResponseFormat, Segment, Transcript } from "./transcript.ts";

export interface RenderedTranscript {
  contentType: string;
  body: string;
}

const JSON_TYPE = "application/json";
// OpenAI serves srt as text/plain too; there is no registered subtitle type players agree on.
const TEXT_TYPE = "text/plain; charset=utf-8";
const VTT_TYPE = "text/vtt; charset=utf-8";

/** The segment fields OpenAI's verbose_json has and our Segment does not. */
interface VerboseSegment extends Segment {
  seek: number;
  temperature: number;
  avg_logprob: number;
  compression_ratio: number;
  no_speech_prob: number;
}

export function renderTranscript(t: Transcript, format: ResponseFormat): RenderedTranscript {
  switch (format) {
    case "json":
      return { contentType: JSON_TYPE, body: JSON.stringify({ text: t.text }) };
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
    case "verbose_json":
      return {
        contentType: JSON_TYPE,
        body: JSON.stringify({
          task: t.task,
          language: t.language,
          duration: t.duration,
          text: t.text,
          segments: t.segments.map(verboseSegment),
        }),
      };
  }
}

/**
 * Whisper's per-segment decoding statistics are not in our Segment, so:
 * - seek: the window offset (in 10 ms frames) is unknown; the segment's own start frame is used,
 *   which is where a window containing it can start at the latest.
 * - temperature 0: the pipeline decodes greedily.
 * - avg_logprob 0 and no_speech_prob 0: neutral values, so no client-side hallucination filter
 *   (typically avg_logprob < -1 or no_speech_prob > 0.6) drops a segment on our say-so.
 * - compression_ratio: computed as Whisper does (UTF-8 length over zlib-compressed length), but of
 *   the segment's text rather than the whole window's.
 */
function verboseSegment(segment: Segment): VerboseSegment {
  return {
    id: segment.id,
    seek: Math.floor(Math.max(0, segment.start) * 100),
    start: segment.start,
    end: segment.end,
    text: segment.text,
    tokens: segment.tokens,
    temperature: 0,
    avg_logprob: 0,
    compression_ratio: compressionRatio(segment.text),
    no_speech_prob: 0,
  };
}

function compressionRatio(text: string): number {
  const bytes = Buffer.from(text, "utf8");
  return bytes.length === 0 ? 0 : bytes.length / deflateSync(bytes).length;
}

interface Cue {
  start: number;
  end: number;
  text: string;
}

/** Segments with nothing left to show after sanitising are dropped: an empty cue ends early in SRT. */
function cues(segments: Segment[], clean: (text: string) => string): Cue[] {
  return segments
    .map((segment) => ({ start: segment.start, end: segment.end, text: clean(segment.text) }))
    .filter((cue) => cue.text !== "");
}

function sanitiseCueText(text: string): string {
  return text
    .split(/\r\n|\r|\n/)
    // A regex, not replaceAll("-->"): that would turn "--->" into "-->".
    .map((line) => line.replace(/-{2,}>/g, "->").trim())
    .filter((line) => line !== "")
    .join("\n");
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
