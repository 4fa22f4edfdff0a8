import type { WindowChunk } from "./protocol.ts";

export const TIME_PRECISION = 0.02;

/**
 * Cuts a window's generated tokens into timestamped segments the way the transformers.js ASR
 * pipeline does (its _decode_asr for one window): a timestamp opens a segment, the next different
 * one closes it, a repeat of the opening time is ignored, and text left after the last closing
 * timestamp is an open segment (end null). Segments without text are dropped.
 */
export function assembleSegments(generated: readonly number[], timestampBegin: number, eos: number, decode: (tokens: number[]) => string): WindowChunk[] {
  const chunks: WindowChunk[] = [];
  let start: number | null = null;
  let tokens: number[] = [];
  const push = (end: number | null) => {
    const text = decode(tokens);
    if (text.trim().length > 0) chunks.push({ start: start ?? 0, end, text, tokens });
    tokens = [];
    start = null;
  };
  for (const token of generated) {
    if (token >= timestampBegin) {
      const time = Math.round((token - timestampBegin) * TIME_PRECISION * 100) / 100;
      if (start === null) start = time;
      else if (time !== start) push(time);
    } else if (token < eos) {
      tokens.push(token);
    }
  }
  if (tokens.length > 0) push(null);
  return chunks;
}
