import { randomUUID } from "node:crypto";
import { quietCut } from "../audio/quiet-cut.ts";
import { SampleQueue } from "../audio/sample-queue.ts";
import type { Limiter } from "../admission/limiter.ts";
import type { Segment, TokenLogprob, Transcript } from "../transcript.ts";
import type { Engine } from "./engine.ts";
import { languageName } from "./languages.ts";
import type { FallbackThresholds, ModelSpec, WindowOptions, WindowOutput } from "./protocol.ts";

export const SAMPLE_RATE = 16_000;
export const WINDOW_SAMPLES = 30 * SAMPLE_RATE;
/** Whisper's seek unit: a 10 ms mel frame. */
const SAMPLES_PER_FRAME = SAMPLE_RATE / 100;
const FALLBACK_TEMPERATURES = [0, 0.2, 0.4, 0.6, 0.8, 1];
/** Below -60 dBFS peak a window is silence: Whisper would only hallucinate on it, so it is skipped. */
const SILENCE_PEAK = 1e-3;

export interface TranscribeParams {
  engine: Pick<Engine, "transcribeWindow">;
  /** Granted per window: jobs queue again between windows, so a short clip never waits for a whole long file. */
  compute: Limiter;
  model: ModelSpec;
  pcm: AsyncIterable<Float32Array>;
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
  /** Collects each text token's log-probability into the transcript. */
  includeLogprobs?: boolean;
  /**
   * Windows of this file in inference at once, decoded together in the engine's batches: each still
   * takes its own slot, in line with every other job's windows. Default 1.
   */
  parallelWindows?: number;
  signal?: AbortSignal;
  onProgress?: (doneSeconds: number) => void;
  /** Told the inference time of each window, for metrics. */
  onWindow?: (seconds: number) => void;
}

interface Window {
  /** Stream offset of the first sample. */
  start: number;
  samples: Float32Array;
  /** More audio followed it: the window ends at a cut, not at the end of the stream. */
  cut: boolean;
  /** Stops its wait for a slot when its result is no longer wanted. */
  abort: AbortController;
  /** null for a silent window, which is not decoded. */
  output: Promise<WindowOutput | null>;
}

/**
 * Whisper over a decoded stream in windows of up to 30 s, holding only the windows in flight.
 *
 * A window that more audio follows ends at a pause in its last seconds where there is one
 * (quietCut), so the next window can start there before this one is decoded: a long file's windows
 * decode at once in one batch, and their segments are joined in order. When the model still leaves
 * the last segment of a cut window open (speech runs on past the cut), the windows after it started
 * at a false seam: their results are dropped and decoding resumes where the open segment began, as
 * Whisper's own sequential decoding does, so no words are cut at a seam. The transcript is the same
 * whatever the number of windows in flight.
 *
 * A language to identify is identified once, by the first voiced window, which reports it as soon
 * as its encoder and first decoder step have run; the windows after it wait only for that.
 */
export async function transcribePcm(params: TranscribeParams): Promise<Transcript> {
  const queue = new SampleQueue(params.pcm);
  const parallel = Math.max(1, params.parallelWindows ?? 1);
  const inFlight: Window[] = [];
  const segments: Segment[] = [];
  let language = params.language ?? null;
  let mustIdentify = params.identifyLanguage ?? params.language === undefined;
  let identified: Promise<void> = Promise.resolve();

  const stream = randomUUID();
  const first = params.temperature ?? 0;
  const temperatures = [first, ...FALLBACK_TEMPERATURES.filter((t) => t > first + 1e-9)];
  const windowOptions = (): WindowOptions => ({ language: language ?? undefined, task: params.task, prompt: params.prompt, temperatures, thresholds: params.thresholds });
  const logprobs: TokenLogprob[] = [];
  const run = (samples: Float32Array, signal: AbortSignal, onLanguage?: (code: string) => void) =>
    params.compute.run(async () => {
      const started = performance.now();
      const result = await params.engine.transcribeWindow(params.model, samples, windowOptions(), { stream, signal, onLanguage });
      params.onWindow?.((performance.now() - started) / 1000);
      return result;
    }, signal);
  const decode = async (samples: Float32Array, signal: AbortSignal): Promise<WindowOutput | null> => {
    if (isSilent(samples)) return null;
    if (!mustIdentify) {
      await identified;
      return run(samples, signal);
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
    const output = run(samples, signal, (code) => {
      language = code;
      heard();
    });
    output.then(heard, failed);
    return output;
  };
  const start = (samples: Float32Array, cut: boolean) => {
    const abort = new AbortController();
    const signal = params.signal ? AbortSignal.any([params.signal, abort.signal]) : abort.signal;
    const output = decode(samples, signal);
    // Marked handled here; settle() still sees the failure when it takes this window.
    output.catch(() => undefined);
    inFlight.push({ start: queue.position, samples, cut, abort, output });
  };
  const dropInFlight = () => {
    const dropped = inFlight.splice(0);
    for (const w of dropped) w.abort.abort(new Error("window no longer wanted"));
    return dropped;
  };
  /** Takes the oldest window's segments; rewinds the stream if it left its last segment open. */
  const settle = async () => {
    const window = inFlight.shift()!;
    const output = await window.output;
    const offset = window.start / SAMPLE_RATE;
    const seconds = window.samples.length / SAMPLE_RATE;
    const chunks = [...(output?.chunks ?? [])];
    let done = window.start + window.samples.length;
    if (output) {
      language ??= output.language;
      const last = chunks.at(-1);
      if (last && last.end === null && window.cut && last.start > 1) {
        chunks.pop();
        const resumeAt = Math.round(last.start * SAMPLE_RATE);
        queue.unread([window.samples.subarray(resumeAt), ...dropInFlight().map((w) => w.samples)]);
        done = window.start + resumeAt;
      }
    }
    for (const chunk of chunks) {
      segments.push({
        id: segments.length,
        start: round(offset + chunk.start),
        end: round(offset + Math.min(chunk.end ?? seconds, seconds)),
        text: chunk.text,
        tokens: chunk.tokens,
        seek: Math.round(window.start / SAMPLES_PER_FRAME),
        temperature: output!.temperature,
        avgLogprob: output!.avgLogprob,
        compressionRatio: output!.compressionRatio,
        noSpeechProb: output!.noSpeechProb,
      });
      if (params.includeLogprobs) for (const t of chunk.textTokens) logprobs.push({ token: t.text, logprob: t.logprob, bytes: [...Buffer.from(t.text, "utf8")] });
    }
    params.onProgress?.(done / SAMPLE_RATE);
  };

  try {
    for (;;) {
      params.signal?.throwIfAborted();
      if (inFlight.length < parallel) {
        // One sample past a full window says whether more audio follows it.
        const ahead = await queue.fill(WINDOW_SAMPLES + 1);
        if (ahead.length > 0) {
          const cut = ahead.length > WINDOW_SAMPLES;
          const length = cut ? quietCut(ahead.subarray(0, WINDOW_SAMPLES), SAMPLE_RATE) : ahead.length;
          start(ahead.slice(0, length), cut);
          queue.consume(length);
          continue;
        }
      }
      if (inFlight.length === 0) break;
      await settle();
    }
  } catch (err) {
    await Promise.allSettled(dropInFlight().map((w) => w.output));
    throw err;
  } finally {
    await queue.close();
  }
  return {
    task: params.task,
    language: languageName(language),
    duration: round(queue.position / SAMPLE_RATE),
    text: segments.map((s) => s.text).join("").trim(),
    segments,
    ...(params.includeLogprobs ? { logprobs } : {}),
  };
}

function isSilent(samples: Float32Array): boolean {
  for (const s of samples) if (s > SILENCE_PEAK || s < -SILENCE_PEAK) return false;
  return true;
}

function round(seconds: number): number {
  return Math.round(seconds * 100) / 100;
}
