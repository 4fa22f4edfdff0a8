/**
 * Where Whisper's windows come from: a decoded stream cut into windows of at most 30 s, by one of
 * three voice detections (`VAD`).
 */
import { quietCut } from "./quiet-cut.ts";
import { SampleQueue } from "./sample-queue.ts";
import { BLOCK_SAMPLES, SileroStream, type SileroRunner } from "./silero-vad.ts";
import { CHUNK_SAMPLES, concatPieces, piecesForWindow, RegionDetector, type Piece, type SpeechDetection, type VadMode } from "./speech-regions.ts";

/** Below -60 dBFS peak a window is silence: Whisper would only hallucinate on it, so it is skipped. */
const SILENCE_PEAK = 1e-3;

/**
 * Silence the energy gate leaves before a window's first sound. Whisper's first timestamp is at most
 * 1.0 s into its window (max_initial_timestamp): a window holding more silence than that before the
 * sound would have its first segment start too early.
 */
const SILENCE_KEPT_SECONDS = 0.5;

export interface AudioWindow {
  samples: Float32Array;
  /** Where the window's samples are in the file, in order; more than one when non-speech was removed between them. */
  pieces: Piece[];
  /** More audio followed it: the window ends at a cut, not at the end of the stream. */
  cut: boolean;
  /** Not worth decoding: no speech in it. */
  silent: boolean;
}

export interface WindowSource {
  /** The next window, or null at the end of the stream. Calls must not overlap. */
  next(): Promise<AudioWindow | null>;
  /** Puts pieces already taken back in front, oldest first, to be windowed again. */
  unread(pieces: Piece[]): void;
  /** Samples of the file read so far (all of it at the end). */
  readonly position: number;
  /** Seconds spent detecting speech. */
  readonly vadSeconds: number;
  close(): Promise<void>;
}

export interface WindowSourceOptions {
  sampleRate: number;
  windowSamples: number;
  /** Runs Silero where the caller wants it (the service: on its own thread, AudioThread); default here. */
  vad?: SileroRunner;
  /** Silero's region settings for this stream; the other modes have none. */
  detection?: SpeechDetection;
  /**
   * Samples of speech to keep found ahead of the windows taken: the windows the caller decodes at
   * once, asked again at each read (it may change as other files come and go). Default one window.
   */
  readAheadSamples?: number | (() => number);
}

export function windowSource(mode: VadMode, pcm: AsyncIterable<Float32Array>, opts: WindowSourceOptions): WindowSource {
  return mode === "silero" ? new SileroWindows(pcm, opts) : new ContiguousWindows(pcm, opts, mode === "energy");
}

/**
 * Windows end to end over the whole stream, each ending at a pause in its last seconds where there
 * is one (quietCut); with the energy gate, windows below -60 dBFS are marked silent, and a window
 * starts shortly before its first sound.
 */
class ContiguousWindows implements WindowSource {
  readonly #queue: SampleQueue;
  readonly vadSeconds = 0;

  constructor(
    pcm: AsyncIterable<Float32Array>,
    private readonly opts: { sampleRate: number; windowSamples: number },
    private readonly gate: boolean,
  ) {
    this.#queue = new SampleQueue(pcm);
  }

  get position(): number {
    return this.#queue.position;
  }

  async next(): Promise<AudioWindow | null> {
    // One sample past a full window says whether more audio follows it.
    let ahead = await this.#queue.fill(this.opts.windowSamples + 1);
    if (ahead.length === 0) return null;
    if (this.gate) {
      const sound = firstSound(ahead);
      const skip = sound - Math.round(SILENCE_KEPT_SECONDS * this.opts.sampleRate);
      if (sound < ahead.length && skip > 0) {
        this.#queue.consume(skip);
        ahead = await this.#queue.fill(this.opts.windowSamples + 1);
      }
    }
    const cut = ahead.length > this.opts.windowSamples;
    const length = cut ? quietCut(ahead.subarray(0, this.opts.windowSamples), this.opts.sampleRate) : ahead.length;
    const samples = ahead.slice(0, length);
    const start = this.#queue.position;
    this.#queue.consume(length);
    return { samples, pieces: [{ start, samples }], cut, silent: this.gate && isSilent(samples) };
  }

  unread(pieces: Piece[]): void {
    // Silence the gate skipped before a window goes back as zeros (it was below -60 dBFS), so the
    // stream's positions stay the file's when the windows are read again.
    const parts: Float32Array[] = [];
    let end = pieces[0]?.start ?? this.#queue.position;
    for (const piece of [...pieces, { start: this.#queue.position, samples: new Float32Array(0) }]) {
      if (piece.start > end) parts.push(new Float32Array(piece.start - end));
      parts.push(piece.samples);
      end = piece.start + piece.samples.length;
    }
    this.#queue.unread(parts);
  }

  close(): Promise<void> {
    return this.#queue.close();
  }
}

/**
 * Speech regions found by Silero VAD, merged into windows of whole regions with the non-speech
 * between them removed (see piecesForWindow). Reads the stream a block at a time and keeps
 * `readAheadSamples` of speech found ahead of the windows taken, so the windows decoded at once
 * start together (in one cohort of the batch decoder) and the next ones are found while they decode.
 */
class SileroWindows implements WindowSource {
  readonly #queue: SampleQueue;
  readonly #vad: SileroStream;
  readonly #detector: RegionDetector;
  /** Samples of the file from `#keptFrom` to the end of the last block: where open regions may start. */
  #kept = new Float32Array(0);
  #keptFrom = 0;
  #pieces: Piece[] = [];
  #ended = false;
  #reading: Promise<void> | null = null;
  #blocks = 0;

  constructor(
    pcm: AsyncIterable<Float32Array>,
    private readonly opts: WindowSourceOptions,
  ) {
    this.#queue = new SampleQueue(pcm);
    this.#vad = new SileroStream(opts.vad);
    this.#detector = new RegionDetector({ ...opts.detection, sampleRate: opts.sampleRate, maxSamples: opts.windowSamples });
  }

  get position(): number {
    return this.#queue.position;
  }

  get vadSeconds(): number {
    return this.#vad.seconds;
  }

  async next(): Promise<AudioWindow | null> {
    // A window is settled once the pieces after it are known not to fit in it: those found, or the
    // region still open, which has already been heard to be too long to join them.
    while (!this.#ended && this.#buffered() + this.#detector.nextRegionAtLeast() <= this.opts.windowSamples) await this.#read();
    if (this.#pieces.length === 0) return null;
    const pieces = this.#pieces.splice(0, piecesForWindow(this.#pieces, this.opts.windowSamples));
    this.#readAhead();
    return { samples: concatPieces(pieces), pieces, cut: this.#pieces.length > 0 || !this.#ended, silent: false };
  }

  unread(pieces: Piece[]): void {
    this.#pieces.unshift(...pieces.filter((p) => p.samples.length > 0));
  }

  async close(): Promise<void> {
    await this.#reading?.catch(() => undefined);
    this.#pieces = [];
    this.#kept = new Float32Array(0);
    await this.#queue.close();
  }

  /** Reads the next block, or waits for the one being read. A failed read stays failed, so the next call reports it. */
  #read(): Promise<void> {
    if (!this.#reading) {
      const reading = this.#readBlock();
      this.#reading = reading;
      reading.then(
        () => {
          if (this.#reading === reading) this.#reading = null;
        },
        () => undefined,
      );
    }
    return this.#reading;
  }

  /** Reads blocks in the background while less than the read-ahead is found; a failure waits for next(). */
  #readAhead(): void {
    if (this.#ended || this.#reading || this.#buffered() >= this.#aheadSamples()) return;
    this.#read().then(
      () => this.#readAhead(),
      () => undefined,
    );
  }

  #aheadSamples(): number {
    const { readAheadSamples = 0 } = this.opts;
    return Math.max(this.opts.windowSamples, typeof readAheadSamples === "number" ? readAheadSamples : readAheadSamples());
  }

  #buffered(): number {
    return this.#pieces.reduce((n, p) => n + p.samples.length, 0);
  }

  async #readBlock(): Promise<void> {
    // The first block is one window and a little more: nothing is decoding yet, so its VAD time is a
    // wait. The next ones double up to BLOCK_SAMPLES, each found while the windows before it are
    // encoded, so the windows decoded at once still start together, in one cohort.
    const first = Math.ceil((1.1 * this.opts.windowSamples) / CHUNK_SAMPLES) * CHUNK_SAMPLES;
    // No larger than the read-ahead: a file with a window in flight holds no 131 s block.
    const size = Math.min(BLOCK_SAMPLES, first * 2 ** this.#blocks++, Math.max(first, this.#aheadSamples()));
    const block = await this.#queue.fill(size);
    this.#queue.consume(block.length);
    const probs = await this.#vad.probabilities(block);
    const regions = this.#detector.push(probs);
    if (block.length < size) {
      this.#ended = true;
      regions.push(...this.#detector.finish(this.#queue.position));
    }
    const kept = new Float32Array(this.#kept.length + block.length);
    kept.set(this.#kept);
    kept.set(block, this.#kept.length);
    for (const r of regions) this.#pieces.push({ start: r.start, samples: kept.slice(r.start - this.#keptFrom, r.end - this.#keptFrom) });
    // A region not yet closed starts at most a window before the block's end (regions are split at
    // a window's length), or up to its padding before its first speech.
    const keepFrom = Math.max(this.#keptFrom, this.#queue.position - this.opts.windowSamples);
    this.#kept = kept.slice(keepFrom - this.#keptFrom);
    this.#keptFrom = keepFrom;
  }
}

/** Where the first sample above the silence peak is; the length when there is none. */
function firstSound(samples: Float32Array): number {
  for (let i = 0; i < samples.length; i++) if (samples[i]! > SILENCE_PEAK || samples[i]! < -SILENCE_PEAK) return i;
  return samples.length;
}

function isSilent(samples: Float32Array): boolean {
  return firstSound(samples) === samples.length;
}
