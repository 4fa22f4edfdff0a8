import { SampleQueue } from "../audio/sample-queue.ts";
import type { Limiter } from "../admission/limiter.ts";
import type { Segment, Transcript } from "../transcript.ts";
import type { Engine } from "./engine.ts";
import { languageName } from "./languages.ts";
import type { ModelSpec } from "./protocol.ts";

export const SAMPLE_RATE = 16_000;
export const WINDOW_SAMPLES = 30 * SAMPLE_RATE;
/** Below -60 dBFS peak a window is silence: Whisper would only hallucinate on it, so it is skipped. */
const SILENCE_PEAK = 1e-3;

export interface TranscribeParams {
  engine: Engine;
  /** Granted per window: jobs queue again between windows, so a short clip never waits for a whole long file. */
  compute: Limiter;
  model: ModelSpec;
  pcm: AsyncIterable<Float32Array>;
  language?: string;
  task: "transcribe" | "translate";
  signal?: AbortSignal;
  onProgress?: (doneSeconds: number) => void;
  /** Told the inference time of each window, for metrics. */
  onWindow?: (seconds: number) => void;
}

/**
 * Whisper over a decoded stream, one 30 s window at a time, holding at most one window of samples.
 * When the model leaves the last segment of a full window open, the next window starts where that
 * segment began, as Whisper's own sequential decoding does, so no words are cut at the seam.
 */
export async function transcribePcm(params: TranscribeParams): Promise<Transcript> {
  const queue = new SampleQueue(params.pcm);
  const segments: Segment[] = [];
  let language = params.language ?? null;
  try {
    for (;;) {
      params.signal?.throwIfAborted();
      const window = await queue.fill(WINDOW_SAMPLES);
      if (window.length === 0) break;
      const offset = queue.position / SAMPLE_RATE;
      let consumed = window.length;
      if (!isSilent(window)) {
        const output = await params.compute.run(async () => {
          const started = performance.now();
          const result = await params.engine.transcribeWindow(params.model, window, { language: language ?? undefined, task: params.task });
          params.onWindow?.((performance.now() - started) / 1000);
          return result;
        }, params.signal);
        language ??= output.language;
        const chunks = [...output.chunks];
        const last = chunks.at(-1);
        if (last && last.end === null && window.length === WINDOW_SAMPLES && last.start > 1) {
          chunks.pop();
          consumed = Math.round(last.start * SAMPLE_RATE);
        }
        for (const chunk of chunks) {
          segments.push({
            id: segments.length,
            start: round(offset + chunk.start),
            end: round(offset + (chunk.end ?? window.length / SAMPLE_RATE)),
            text: chunk.text,
            tokens: chunk.tokens,
          });
        }
      }
      queue.consume(consumed);
      params.onProgress?.(queue.position / SAMPLE_RATE);
    }
  } finally {
    await queue.close();
  }
  return {
    task: params.task,
    language: languageName(language),
    duration: round(queue.position / SAMPLE_RATE),
    text: segments.map((s) => s.text).join("").trim(),
    segments,
  };
}

function isSilent(samples: Float32Array): boolean {
  for (const s of samples) if (s > SILENCE_PEAK || s < -SILENCE_PEAK) return false;
  return true;
}

function round(seconds: number): number {
  return Math.round(seconds * 100) / 100;
}
