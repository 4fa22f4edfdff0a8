import { randomUUID } from "node:crypto";
import { fileSample, piecesFrom, type Piece, type SpeechDetection, type VadMode } from "../audio/speech-regions.ts";
import { windowSource, type AudioWindow } from "../audio/windows.ts";
import type { Limiter, Permit } from "../admission/limiter.ts";
import type { Segment, TokenLogprob, Transcript, Word } from "../transcript.ts";
import type { Engine } from "./engine.ts";
import { languageName } from "./languages.ts";
import type { FallbackThresholds, ModelSpec, WindowOptions, WindowOutput } from "./protocol.ts";

export const SAMPLE_RATE = 16_000;
export const WINDOW_SAMPLES = 30 * SAMPLE_RATE;
/** Whisper's seek unit: a 10 ms mel frame. */
const SAMPLES_PER_FRAME = SAMPLE_RATE / 100;
const FALLBACK_TEMPERATURES = [0, 0.2, 0.4, 0.6, 0.8, 1];

export interface TranscribeParams {
  engine: Pick<Engine, "transcribeWindow"> & Partial<Pick<Engine, "speechProbabilities">>;
  /** Granted per window: jobs queue again between windows, so a short clip never waits for a whole long file. */
  compute: Limiter;
  model: ModelSpec;
  pcm: AsyncIterable<Float32Array>;
  /** What reaches Whisper (see windows.ts); default silero. */
  vad?: VadMode;
  /** Silero's region settings for this file. */
  speechDetection?: SpeechDetection;
  language?: string;
  /**
   * Whether the language must be identified (a multilingual model given none): by the first voiced
   * window, and the windows after it wait for it. Default: when no language is given.
   */
  identifyLanguage?: boolean;
  task: "transcribe" | "translate";
  /** Conditions every window's decoding (windows decode in parallel, so none is conditioned on the text before it). */
  prompt?: string;
  /** The first temperature; a window that fails Whisper's checks is decoded again 0.2 hotter, up to 1. */
  temperature?: number;
  thresholds?: FallbackThresholds;
  /** Decodes sampled per temperature above 0, the best kept (Whisper's best_of); default 1. */
  bestOf?: number;
  /** Beams searched at temperature 0 (Whisper's beam_size); default 1, greedy. */
  beamSize?: number;
  /** Collects each text token's log-probability into the transcript. */
  includeLogprobs?: boolean;
  /** Times each word (the model must output cross-attentions: ModelInfo.wordTimestamps). */
  wordTimestamps?: boolean;
  /** Hears each window's segments, in order, as soon as the windows before it are joined (with their text tokens' log-probabilities under includeLogprobs). */
  onSegments?: (segments: Segment[], logprobs?: TokenLogprob[]) => void;
  /**
   * Windows of this file in inference at once, decoded together in the engine's batches: each still
   * takes its own slot, in line with every other job's windows. Default 1.
   */
  parallelWindows?: number;
  /**
   * Shared by every file at once: each window of a file in flight beyond its first takes one, so
   * that many files at once hold a window each and not parallelWindows each (each window's samples,
   * and speech found ahead for it, are memory the plan counts once). Without it, no such bound.
   */
  extraWindows?: Limiter;
  signal?: AbortSignal;
  onProgress?: (doneSeconds: number) => void;
  /** Told the inference time of each window, for metrics. */
  onWindow?: (seconds: number) => void;
  /** Told, at the end, the seconds spent detecting speech. */
  onVad?: (seconds: number) => void;
}

interface Window {
  samples: Float32Array;
  /** Where its samples are in the file. */
  pieces: Piece[];
  /** More audio followed it: the window ends at a cut, not at the end of the stream. */
  cut: boolean;
  /** Stops its wait for a slot when its result is no longer wanted. */
  abort: AbortController;
  /** Its place among the extra windows (see extraWindows), given back when it settles. */
  extra: Permit | null;
  /** null for a silent window, which is not decoded. */
  output: Promise<WindowOutput | null>;
}

/**
 * Whisper over a decoded stream in windows of up to 30 s, holding only the windows in flight.
 *
 * A window that more audio follows ends at a pause (between speech regions, or at quietCut without
 * Silero), so the next window can start there before this one is decoded: a long file's windows
 * decode at once in one batch, and their segments are joined in order, on the file's timeline. When the model still leaves
 * the last segment of a cut window open (speech runs on past the cut), the windows after it started
 * at a false seam: their results are dropped and decoding resumes where the open segment began, as
 * Whisper's own sequential decoding does, so no words are cut at a seam. The transcript is the same
 * whatever the number of windows in flight.
 *
 * A language to identify is identified once, by the first voiced window, which reports it as soon
 * as its encoder and first decoder step have run; the windows after it wait only for that.
 */
export async function transcribePcm(params: TranscribeParams): Promise<Transcript> {
  const parallel = Math.max(1, params.parallelWindows ?? 1);
  const { extraWindows } = params;
  const inFlight: Window[] = [];
  /** Windows this file could have in flight now. */
  const windowsNow = () => {
    if (!extraWindows) return parallel;
    const { permits, inUse } = extraWindows.stats;
    return Math.min(parallel, 1 + inFlight.filter((w) => w.extra).length + permits - inUse);
  };
  const source = windowSource(params.vad ?? "silero", params.pcm, {
    sampleRate: SAMPLE_RATE,
    windowSamples: WINDOW_SAMPLES,
    vad: params.engine.speechProbabilities,
    detection: params.speechDetection,
    readAheadSamples: () => windowsNow() * WINDOW_SAMPLES,
  });
  /** Room for another window of the file now, with the extra window's permit it takes; null when there is none. */
  const room = (): { extra: Permit | null } | null => {
    if (inFlight.length >= parallel) return null;
    if (inFlight.length === 0 || !extraWindows) return { extra: null };
    const extra = extraWindows.tryAcquire();
    return extra && { extra };
  };
  const segments: Segment[] = [];
  let language = params.language ?? null;
  let mustIdentify = params.identifyLanguage ?? params.language === undefined;
  let identified: Promise<void> = Promise.resolve();

  const stream = randomUUID();
  const first = params.temperature ?? 0;
  const temperatures = [first, ...FALLBACK_TEMPERATURES.filter((t) => t > first + 1e-9)];
  const windowOptions = (): WindowOptions => ({
    language: language ?? undefined,
    task: params.task,
    prompt: params.prompt,
    temperatures,
    thresholds: params.thresholds,
    bestOf: params.bestOf,
    beamSize: params.beamSize,
    wordTimestamps: params.wordTimestamps,
  });
  const logprobs: TokenLogprob[] = [];
  const words: Word[] = [];
  const run = (samples: Float32Array, signal: AbortSignal, followed: boolean, onLanguage?: (code: string) => void) =>
    params.compute.run(async () => {
      const started = performance.now();
      const result = await params.engine.transcribeWindow(params.model, samples, windowOptions(), { stream, signal, onLanguage, followed });
      params.onWindow?.((performance.now() - started) / 1000);
      return result;
    }, signal);
  const decode = async (samples: Float32Array, signal: AbortSignal, followed: boolean): Promise<WindowOutput | null> => {
    if (!mustIdentify) {
      await identified;
      return run(samples, signal, followed);
    }
    mustIdentify = false;
    let heard!: () => void;
    let failed!: (err: unknown) => void;
    identified = new Promise<void>((resolve, reject) => {
      heard = resolve;
      failed = reject;
    });
    // The first window's own failure is reported by settle(); this only stops the windows waiting.
    identified.catch(() => undefined);
    // Settled by the window's end too: a model that names no language (English-only) reports none.
    const output = run(samples, signal, followed, (code) => {
      language = code;
      heard();
    });
    output.then(heard, failed);
    return output;
  };
  const start = (window: AudioWindow, extra: Permit | null) => {
    const abort = new AbortController();
    const signal = params.signal ? AbortSignal.any([params.signal, abort.signal]) : abort.signal;
    // More audio follows: the next window comes as soon as it is found and has a slot, and this one
    // may wait a little to decode with it.
    // With one window in flight the next is read only once this one is decoded: told that another
    // follows, the decoder held each window 300 ms for a window that could not come.
    // So also for a file that has no window beyond this one and can take none (see extraWindows).
    const output = window.silent ? Promise.resolve(null) : decode(window.samples, signal, window.cut && (extra !== null || windowsNow() > 1));
    // Marked handled here; settle() still sees the failure when it takes this window.
    output.catch(() => undefined);
    inFlight.push({ samples: window.samples, pieces: window.pieces, cut: window.cut, abort, extra, output });
  };
  const dropInFlight = () => {
    const dropped = inFlight.splice(0);
    for (const w of dropped) {
      w.abort.abort(new Error("window no longer wanted"));
      w.extra?.release();
    }
    return dropped;
  };
  /** Takes the oldest window's segments; rewinds the stream if it left its last segment open. */
  const settle = async () => {
    const window = inFlight.shift()!;
    const output = await window.output.finally(() => window.extra?.release());
    const length = window.samples.length;
    const chunks = [...(output?.chunks ?? [])];
    let done = fileSample(window.pieces, length, "end");
    if (output) {
      language ??= output.language;
      const last = chunks.at(-1);
      if (last && last.end === null && window.cut && last.start > 1) {
        chunks.pop();
        const resumeAt = Math.round(last.start * SAMPLE_RATE);
        source.unread([...piecesFrom(window.pieces, resumeAt), ...dropInFlight().flatMap((w) => w.pieces)]);
        done = fileSample(window.pieces, resumeAt, "start");
      }
    }
    const logprobsBefore = logprobs.length;
    const seconds = (offset: number, edge: "start" | "end") => round(fileSample(window.pieces, Math.min(Math.round(offset * SAMPLE_RATE), length), edge) / SAMPLE_RATE);
    for (const chunk of chunks) {
      segments.push({
        id: segments.length,
        start: seconds(chunk.start, "start"),
        end: seconds(chunk.end ?? length / SAMPLE_RATE, "end"),
        text: chunk.text,
        tokens: chunk.tokens,
        seek: Math.round(fileSample(window.pieces, 0, "start") / SAMPLES_PER_FRAME),
        temperature: output!.temperature,
        avgLogprob: output!.avgLogprob,
        compressionRatio: output!.compressionRatio,
        noSpeechProb: output!.noSpeechProb,
      });
      if (params.includeLogprobs) for (const t of chunk.textTokens) logprobs.push({ token: t.text, logprob: t.logprob, bytes: [...Buffer.from(t.text, "utf8")] });
      for (const w of chunk.words ?? []) words.push({ word: w.word.trim(), start: seconds(w.start, "start"), end: seconds(w.end, "end") });
    }
    if (chunks.length > 0) params.onSegments?.(segments.slice(-chunks.length), params.includeLogprobs ? logprobs.slice(logprobsBefore) : undefined);
    params.onProgress?.(done / SAMPLE_RATE);
  };

  try {
    for (;;) {
      params.signal?.throwIfAborted();
      const taken = room();
      if (taken) {
        const window = await source.next().catch((err: unknown) => {
          taken.extra?.release();
          throw err;
        });
        if (window) {
          start(window, taken.extra);
          continue;
        }
        taken.extra?.release();
      }
      if (inFlight.length === 0) break;
      await settle();
    }
  } catch (err) {
    await Promise.allSettled(dropInFlight().map((w) => w.output));
    throw err;
  } finally {
    await source.close();
    params.onVad?.(source.vadSeconds);
  }
  return {
    task: params.task,
    // OpenAI reports a translation's output language, which is always English, not the one spoken.
    language: params.task === "translate" ? "english" : languageName(language),
    duration: round(source.position / SAMPLE_RATE),
    text: segments
      .map((s) => s.text)
      .join("")
      .trim(),
    segments,
    ...(params.includeLogprobs ? { logprobs } : {}),
    ...(params.wordTimestamps ? { words } : {}),
  };
}

function round(seconds: number): number {
  return Math.round(seconds * 100) / 100;
}
