import type { WindowChunk, WindowWord } from "./protocol.ts";

/** The encoder's positions per second: one per two 10 ms mel frames. */
export const POSITIONS_PER_SECOND = 50;
/** Audio samples per encoder position at 16 kHz. */
export const SAMPLES_PER_POSITION = 320;
const MEDIAN_WIDTH = 7;
/** Whisper's defaults: these join the word after or before them instead of getting times of their own. */
const PREPEND_PUNCTUATION = "\"'“¿([{-";
const APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、";
const PUNCTUATION = new Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");

export interface AttentionRows {
  /** Alignment heads. */
  heads: number;
  /** Encoder positions that hold audio (the rest of the window is padding). */
  frames: number;
  /** One entry per decoder position: the alignment heads' attention over `frames`, head-major. */
  rows: Float32Array[];
  /** Rows of the start sequence before the first prediction: they take part in normalisation only. */
  initialRows: number;
}

export interface TimedWord {
  /** As the tokenizer spells it, leading space included. */
  word: string;
  tokens: number[];
  /** Seconds from the window's start. */
  start: number;
  end: number;
}

/**
 * Whisper's word alignment (timing.py's find_alignment) over attention gathered while decoding: the
 * alignment heads' cross-attention rows of the text tokens and of the token after them, each
 * standardised per head and position across tokens, median-filtered along time, averaged over
 * heads, then a dynamic-time-warping path through the negated matrix gives each token the position
 * where the path reaches it. Row `initialRows + i` is the one that predicted generated[i].
 */
export function alignWords(generated: readonly number[], attention: AttentionRows, eos: number, decode: (tokens: number[]) => string, language: string | null = null): TimedWord[] {
  const text: number[] = [];
  const picked: number[] = [];
  let endRow = -1;
  generated.forEach((token, i) => {
    const row = attention.initialRows + i;
    if (row >= attention.rows.length) return;
    if (token < eos) {
      text.push(token);
      picked.push(row);
      endRow = -1;
    } else if (endRow === -1 && text.length > 0) {
      endRow = row;
    }
  });
  if (text.length === 0) return [];
  // A decode cut off by the length limit on a text token has no row for the end: its last word runs to the audio's end.
  const rows = [...Array.from({ length: attention.initialRows }, (_, i) => i), ...picked, ...(endRow !== -1 ? [endRow] : [])];
  const matrix = alignmentMatrix(
    rows.map((r) => attention.rows[r]!),
    attention.heads,
    attention.frames,
  ).slice(attention.initialRows);
  const { tokenIndex, timeIndex } = dtw(matrix, attention.frames);

  const jumpTimes: number[] = [];
  for (let k = 0; k < tokenIndex.length; k++) if (k === 0 || tokenIndex[k] !== tokenIndex[k - 1]) jumpTimes.push(timeIndex[k]! / POSITIONS_PER_SECOND);
  const words = splitWords(text, decode, language);
  const timings: TimedWord[] = [];
  let boundary = 0;
  for (const w of words) {
    const next = boundary + w.tokens.length;
    const end = next < jumpTimes.length ? jumpTimes[next]! : attention.frames / POSITIONS_PER_SECOND;
    timings.push({ word: w.word, tokens: w.tokens, start: jumpTimes[boundary]!, end });
    boundary = next;
  }
  return timings;
}

/**
 * [tokens][frames]: per head, each position's attention standardised across the tokens, then a
 * median filter along time, then the mean over heads. A position every token attends to equally
 * says nothing about any of them and stays 0.
 */
function alignmentMatrix(rows: Float32Array[], heads: number, frames: number): Float64Array[] {
  const n = rows.length;
  const out = Array.from({ length: n }, () => new Float64Array(frames));
  const column = new Float64Array(n);
  const standardised = Array.from({ length: n }, () => new Float64Array(frames));
  for (let h = 0; h < heads; h++) {
    for (let f = 0; f < frames; f++) {
      let mean = 0;
      for (let t = 0; t < n; t++) mean += column[t] = rows[t]![h * frames + f]!;
      mean /= n;
      let variance = 0;
      for (let t = 0; t < n; t++) variance += (column[t]! - mean) ** 2;
      const std = Math.sqrt(variance / n);
      for (let t = 0; t < n; t++) standardised[t]![f] = std > 0 ? (column[t]! - mean) / std : 0;
    }
    for (let t = 0; t < n; t++) {
      const filtered = medianFilter(standardised[t]!, MEDIAN_WIDTH);
      for (let f = 0; f < frames; f++) out[t]![f]! += filtered[f]! / heads;
    }
  }
  return out;
}

/** A running median with reflected edges, as Whisper's; a row no longer than the half width is left as it is. */
export function medianFilter(x: Float64Array, width: number): Float64Array {
  const half = Math.floor(width / 2);
  if (x.length <= half) return x.slice();
  const at = (i: number) => x[i < 0 ? -i : i >= x.length ? 2 * (x.length - 1) - i : i]!;
  const out = new Float64Array(x.length);
  const window = new Float64Array(width);
  for (let i = 0; i < x.length; i++) {
    for (let k = -half; k <= half; k++) window[k + half] = at(i + k);
    window.sort();
    out[i] = window[half]!;
  }
  return out;
}

/**
 * The cheapest monotonic path from the first token and position to the last through -matrix,
 * with Whisper's tie-breaking (a tie moves along time), as (token, position) pairs in order.
 */
export function dtw(matrix: Float64Array[], frames: number): { tokenIndex: number[]; timeIndex: number[] } {
  const n = matrix.length;
  const m = frames;
  const width = m + 1;
  const cost = new Float64Array((n + 1) * width).fill(Infinity);
  const trace = new Int8Array((n + 1) * width).fill(-1);
  cost[0] = 0;
  for (let j = 1; j <= m; j++) {
    for (let i = 1; i <= n; i++) {
      const c0 = cost[(i - 1) * width + j - 1]!;
      const c1 = cost[(i - 1) * width + j]!;
      const c2 = cost[i * width + j - 1]!;
      let c: number;
      let t: number;
      if (c0 < c1 && c0 < c2) [c, t] = [c0, 0];
      else if (c1 < c0 && c1 < c2) [c, t] = [c1, 1];
      else [c, t] = [c2, 2];
      cost[i * width + j] = -matrix[i - 1]![j - 1]! + c;
      trace[i * width + j] = t;
    }
  }
  const tokenIndex: number[] = [];
  const timeIndex: number[] = [];
  let i = n;
  let j = m;
  while (i > 0 || j > 0) {
    tokenIndex.push(i - 1);
    timeIndex.push(j - 1);
    const t = i === 0 ? 2 : j === 0 ? 1 : trace[i * width + j]!;
    if (t === 0) {
      i--;
      j--;
    } else if (t === 1) i--;
    else j--;
  }
  return { tokenIndex: tokenIndex.reverse(), timeIndex: timeIndex.reverse() };
}

/** Languages written without spaces between words, whose words Whisper times character by character. */
const UNSPACED_LANGUAGES = new Set(["zh", "ja", "th", "lo", "my", "yue"]);

/**
 * The tokenizer's words, as Whisper's split_to_word_tokens makes them. Tokens that only make a
 * character together (a multi-byte character split across tokens) are decoded together; in a
 * language written with spaces, a piece that starts with a space, or is punctuation, starts a word
 * (split_tokens_on_spaces); in one written without (Chinese, Japanese, Thai, Lao, Burmese,
 * Cantonese), every piece is a word (split_tokens_on_unicode).
 */
export function splitWords(tokens: readonly number[], decode: (tokens: number[]) => string, language: string | null = null): { word: string; tokens: number[] }[] {
  const pieces: { text: string; tokens: number[] }[] = [];
  let pending: number[] = [];
  for (const token of tokens) {
    pending.push(token);
    const text = decode(pending);
    if (!text.includes("\ufffd")) {
      pieces.push({ text, tokens: pending });
      pending = [];
    }
  }
  if (pending.length > 0) pieces.push({ text: decode(pending), tokens: pending });
  if (language !== null && UNSPACED_LANGUAGES.has(language)) return pieces.map((p) => ({ word: p.text, tokens: p.tokens }));
  const words: { word: string; tokens: number[] }[] = [];
  for (const piece of pieces) {
    const startsWord = piece.text.startsWith(" ") || PUNCTUATION.has(piece.text.trim()) || words.length === 0;
    if (startsWord) words.push({ word: piece.text, tokens: [...piece.tokens] });
    else {
      words.at(-1)!.word += piece.text;
      words.at(-1)!.tokens.push(...piece.tokens);
    }
  }
  return words;
}

/**
 * Whisper's merge_punctuations: opening marks join the word after them, closing marks the word
 * before, keeping that word's times; the mark's own entry is left empty (its tokens still count).
 */
function mergePunctuation(words: TimedWord[]): TimedWord[] {
  const out = words.map((w) => ({ ...w, tokens: [...w.tokens] }));
  for (let i = out.length - 2, j = out.length - 1; i >= 0; i--) {
    const previous = out[i]!;
    const following = out[j]!;
    if (previous.word.startsWith(" ") && previous.word.trim().length > 0 && PREPEND_PUNCTUATION.includes(previous.word.trim())) {
      following.word = previous.word + following.word;
      following.tokens = [...previous.tokens, ...following.tokens];
      previous.word = "";
      previous.tokens = [];
    } else j = i;
  }
  for (let i = 0, j = 1; j < out.length; j++) {
    const previous = out[i]!;
    const following = out[j]!;
    if (!previous.word.endsWith(" ") && following.word.length > 0 && APPEND_PUNCTUATION.includes(following.word)) {
      previous.word += following.word;
      previous.tokens.push(...following.tokens);
      following.word = "";
      following.tokens = [];
    } else i = j;
  }
  return out;
}

/**
 * Hands the window's aligned words to its segments in order, by how many text tokens each segment
 * holds, each word kept inside its segment's [start, end] (an open segment ends at the window's end).
 */
export function wordsBySegment(chunks: WindowChunk[], timings: TimedWord[], windowSeconds: number): WindowWord[][] {
  const merged = mergePunctuation(timings);
  let w = 0;
  return chunks.map((chunk) => {
    const end = chunk.end ?? windowSeconds;
    const words: WindowWord[] = [];
    let tokens = 0;
    while (w < merged.length && tokens < chunk.textTokens.length) {
      const timing = merged[w++]!;
      tokens += timing.tokens.length;
      if (timing.word.trim() === "") continue;
      const start = Math.min(Math.max(timing.start, chunk.start), end);
      words.push({ word: timing.word, start, end: Math.min(Math.max(timing.end, start), end) });
    }
    return words;
  });
}
