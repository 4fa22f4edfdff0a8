import { deflateSync } from "node:zlib";
import type { WindowChunk } from "./protocol.ts";

const TIME_PRECISION = 0.02;

/**
 * Cuts a window's generated tokens into timestamped segments the way the transformers.js ASR
 * pipeline does (its _decode_asr for one window): a timestamp opens a segment, the next different
 * one closes it, a repeat of the opening time is ignored, and text left after the last closing
 * timestamp is an open segment (end null), starting at that timestamp even if a special token
 * came between (the pipeline leaves its start null; the window's start would put it before the
 * segments it follows). Segments without text are dropped.
 */
export function assembleSegments(
  generated: readonly number[],
  logprobs: readonly number[],
  timestampBegin: number,
  eos: number,
  decode: (tokens: number[]) => string,
): WindowChunk[] {
  const chunks: WindowChunk[] = [];
  let start: number | null = null;
  /** The last timestamp's time: text without an opening timestamp (after a special token) follows it. */
  let lastTime = 0;
  let tokens: number[] = [];
  let text: { id: number; logprob: number }[] = [];
  const push = (end: number | null) => {
    const joined = decode(text.map((t) => t.id));
    if (joined.trim().length > 0) {
      chunks.push({ start: start ?? lastTime, end, text: joined, tokens, textTokens: text.map((t) => ({ ...t, text: decode([t.id]) })) });
    }
    tokens = [];
    text = [];
    start = null;
  };
  generated.forEach((token, i) => {
    if (token >= timestampBegin) {
      const time = Math.round((token - timestampBegin) * TIME_PRECISION * 100) / 100;
      tokens.push(token);
      if (start === null) start = time;
      else if (time !== start) push(time);
      lastTime = time;
    } else if (token < eos) {
      tokens.push(token);
      text.push({ id: token, logprob: logprobs[i]! });
    }
  });
  if (text.length > 0) push(null);
  return chunks;
}

/** Whisper's repetition check: UTF-8 bytes of the text over its zlib-compressed bytes. */
export function compressionRatio(text: string): number {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length === 0) return 0;
  return bytes.length / deflateSync(bytes).length;
}
