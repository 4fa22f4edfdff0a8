/**
 * From speech probabilities (one per 512-sample chunk, Silero's rate) to speech regions, and from
 * regions to Whisper windows. Pure: no model, no I/O, so the rules are unit-tested on their own.
 */

export const CHUNK_SAMPLES = 512;
/** Chunks below the end-of-speech threshold in a row that make a pause in speech (about 100 ms). */
const PAUSE_CHUNKS = 3;

/** What reaches Whisper: Silero's speech regions, windows above -60 dBFS, or every window. */
export const VAD_MODES = ["silero", "energy", "off"] as const;
export type VadMode = (typeof VAD_MODES)[number];

export interface RegionOptions {
  sampleRate: number;
  /** Longest region, padding included: a window's length, so a region always fits one window. */
  maxSamples: number;
  /** Speech starts at this probability... */
  threshold?: number;
  /** ...and ends only below this one (hysteresis, as Silero's get_speech_timestamps). */
  negThreshold?: number;
  /**
   * A region needs this much of its audio above `threshold`: less is clicks, breaths, or the attack
   * of a note (music spikes to 0.9 for one chunk at a chord's onset and keeps a region open).
   */
  minSpeechMs?: number;
  /** Pauses shorter than this stay inside a region: Whisper reads the rhythm of speech better with them. */
  minSilenceMs?: number;
  /** Kept on each side of a region, so the first and last phonemes are not clipped. */
  padMs?: number;
}

/**
 * What one request may tune of Silero's regions (OpenAI's chunking_strategy server_vad); what it
 * leaves out keeps the defaults.
 */
export type SpeechDetection = Pick<RegionOptions, "threshold" | "minSilenceMs" | "padMs">;

/** Samples [start, end) of the file. */
export interface Region {
  start: number;
  end: number;
}

/**
 * Silero's get_speech_timestamps as a streaming state machine, with faster-whisper's settings for
 * Whisper (2 s of silence ends a region, 400 ms of padding), except that the shortest speech counts
 * the chunks heard as speech rather than the region's span. A region longer than `maxSamples` is
 * split in the second half of that length, as WhisperX's binarize does: in its last pause there, or
 * without one at its least speech-like chunk, so a split falls in a breath rather than in a word.
 */
export class RegionDetector {
  readonly #threshold: number;
  readonly #negThreshold: number;
  readonly #minSpeech: number;
  readonly #minSilence: number;
  readonly #pad: number;
  readonly #max: number;
  #chunk = 0;
  #lastEnd = 0;
  #start: number | null = null;
  /** Where the current run of silence inside a region began. */
  #silenceFrom: number | null = null;
  /** Probabilities of the open region's chunks from chunk `#probsFrom` on, for choosing a split. */
  #probs: number[] = [];
  /** Chunks of the open region at or above the threshold. */
  #speechChunks = 0;
  #probsFrom = 0;

  constructor(options: RegionOptions) {
    const ms = (v: number) => Math.round((v * options.sampleRate) / 1000);
    this.#threshold = options.threshold ?? 0.5;
    this.#negThreshold = options.negThreshold ?? Math.max(this.#threshold - 0.15, 0.01);
    this.#minSpeech = ms(options.minSpeechMs ?? 250);
    this.#minSilence = ms(options.minSilenceMs ?? 2000);
    // A region closes minSilence into its silence and ends a padding past it: padding beyond half
    // the silence would reach into audio not yet heard, and into the next region's padding.
    this.#pad = Math.min(ms(options.padMs ?? 400), Math.floor(this.#minSilence / 2));
    this.#max = options.maxSamples;
  }

  /** Regions closed by the next chunks' probabilities. */
  push(probs: ArrayLike<number>): Region[] {
    const out: Region[] = [];
    for (let i = 0; i < probs.length; i++) {
      const p = probs[i]!;
      const at = this.#chunk++ * CHUNK_SAMPLES;
      if (this.#start === null) {
        if (p >= this.#threshold) {
          this.#start = Math.max(this.#lastEnd, at - this.#pad);
          this.#probs = [];
          this.#speechChunks = 0;
          this.#probsFrom = at / CHUNK_SAMPLES;
          this.#silenceFrom = null;
        } else continue;
      }
      this.#probs.push(p);
      if (p >= this.#threshold) {
        this.#silenceFrom = null;
        this.#speechChunks++;
      } else if (p < this.#negThreshold && this.#silenceFrom === null) this.#silenceFrom = at;
      if (this.#silenceFrom !== null && at + CHUNK_SAMPLES - this.#silenceFrom >= this.#minSilence) {
        this.#close(this.#silenceFrom, this.#silenceFrom + this.#pad, out);
        continue;
      }
      if (at + CHUNK_SAMPLES + this.#pad - this.#start > this.#max) this.#split(out);
    }
    return out;
  }

  /** The region still open when the audio ends, cut at the last sample. */
  finish(totalSamples: number): Region[] {
    const out: Region[] = [];
    if (this.#start !== null) {
      const speechEnd = Math.min(this.#silenceFrom ?? totalSamples, totalSamples);
      this.#close(speechEnd, Math.min(speechEnd + this.#pad, totalSamples), out);
    }
    return out;
  }

  /**
   * The fewest samples the next region will have, from what has been heard of the open one: 0 while
   * it may still come to nothing (too little speech yet); otherwise its speech so far, or half a
   * window if it may still be split.
   */
  nextRegionAtLeast(): number {
    if (this.#start === null || this.#speechChunks * CHUNK_SAMPLES < this.#minSpeech) return 0;
    const heard = (this.#silenceFrom ?? this.#chunk * CHUNK_SAMPLES) - this.#start;
    return Math.max(0, Math.min(heard, Math.floor(this.#max / 2) - CHUNK_SAMPLES));
  }

  #close(speechEnd: number, paddedEnd: number, out: Region[]): void {
    const start = this.#start!;
    const speech = this.#speechChunks * CHUNK_SAMPLES;
    if (speech >= this.#minSpeech && speechEnd > start && paddedEnd > start) {
      out.push({ start, end: paddedEnd });
      this.#lastEnd = paddedEnd;
    }
    this.#start = null;
    this.#silenceFrom = null;
    this.#probs = [];
    this.#speechChunks = 0;
  }

  #split(out: Region[]): void {
    const start = this.#start!;
    const first = this.#probsFrom;
    const from = Math.max(1, Math.ceil((start + this.#max / 2) / CHUNK_SAMPLES) - first);
    const to = Math.min(this.#probs.length, Math.floor((start + this.#max) / CHUNK_SAMPLES) - first);
    let best = Math.min(from, this.#probs.length - 1);
    // Ties go to the later chunk: the longer first part, fewer windows in all.
    for (let c = best; c < to; c++) if (this.#probs[c]! <= this.#probs[best]!) best = c;
    // A pause (a run of chunks below the end-of-speech threshold) is as good a place as the quietest
    // chunk, and the latest one fills the window: a continuous talk cut at the quietest chunk of each
    // second half came out as windows of 23 s on average, a third more encoder runs than needed.
    let run = 0;
    for (let c = to - 1; c >= from - 1; c--) {
      if (c >= from && this.#probs[c]! < this.#negThreshold) run++;
      else if (run >= PAUSE_CHUNKS) {
        best = c + 1 + Math.floor(run / 2);
        break;
      } else run = 0;
    }
    const cut = (first + best) * CHUNK_SAMPLES;
    out.push({ start, end: cut });
    this.#lastEnd = cut;
    this.#start = cut;
    this.#probs = this.#probs.slice(best);
    this.#speechChunks = this.#probs.reduce((n, p) => n + (p >= this.#threshold ? 1 : 0), 0);
    this.#probsFrom = first + best;
    if (this.#silenceFrom !== null && this.#silenceFrom < cut) this.#silenceFrom = cut;
  }
}

/** Part of a window: `samples` are the file's samples from `start` on. */
export interface Piece {
  start: number;
  samples: Float32Array;
}

/**
 * How many of the leading pieces make the next window: as many whole pieces as fit in
 * `windowSamples` (WhisperX's merge_chunks), so a window ends where a region ends, in a pause, and
 * a region shorter than a window is never cut. At least one.
 */
export function piecesForWindow(pieces: readonly Piece[], windowSamples: number): number {
  let total = 0;
  let n = 0;
  while (n < pieces.length && total + pieces[n]!.samples.length <= windowSamples) total += pieces[n++]!.samples.length;
  return Math.max(1, n);
}

/**
 * A sample offset within the window made of `pieces` (their samples end to end) as a sample of the
 * file. An offset on the seam of two pieces is the end of the first for an `end` and the start of
 * the second for a `start`, so a segment never spans the non-speech removed between them.
 */
export function fileSample(pieces: readonly Piece[], offset: number, edge: "start" | "end"): number {
  let at = 0;
  for (const piece of pieces) {
    const length = piece.samples.length;
    if (offset < at + length || (edge === "end" && offset === at + length)) return piece.start + Math.max(0, offset - at);
    at += length;
  }
  const last = pieces.at(-1);
  return last ? last.start + last.samples.length : 0;
}

/** The pieces from `offset` of the window on, for decoding again from there. */
export function piecesFrom(pieces: readonly Piece[], offset: number): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  for (const piece of pieces) {
    const length = piece.samples.length;
    if (at + length > offset) {
      const skip = Math.max(0, offset - at);
      out.push({ start: piece.start + skip, samples: piece.samples.subarray(skip) });
    }
    at += length;
  }
  return out;
}

export function concatPieces(pieces: readonly Piece[]): Float32Array {
  if (pieces.length === 1) return pieces[0]!.samples;
  const out = new Float32Array(pieces.reduce((n, p) => n + p.samples.length, 0));
  pieces.reduce((at, p) => (out.set(p.samples, at), at + p.samples.length), 0);
  return out;
}
