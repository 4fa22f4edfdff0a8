/** Messages between the engine (main thread) and its inference worker thread. */
import type { WhisperFeatureConfig } from "../audio/log-mel.ts";

export interface WorkerInit {
  localModelPath: string | null;
  allowRemoteModels: boolean;
  cacheDir: string | null;
  /** onnxruntime intra-op threads of every call: the instance's cores. */
  threads: number;
  /** Rows that may decode at once: the memory plan's slots (BatchDecoderOptions.rows). Default: unbounded. */
  rows?: number;
  /** Where the thread writes the encoder it rewrites (the service's scratch under DATA_DIR). Default: the OS temp dir. */
  tempDir?: string;
}

export interface ModelSpec {
  /** transformers.js model id: a hub id, or a path below the local models directory. */
  id: string;
  dtype: "q8" | "fp32";
}

/** When a decode is rejected and tried again hotter, and when a window counts as silence (Whisper's transcribe.py). */
export interface FallbackThresholds {
  /** Text whose zlib compression ratio is above this is repetitive: decode again. */
  compressionRatio: number;
  /** An average token log-probability below this is unsure: decode again. */
  logprob: number;
  /** A no-speech probability above this, with the average log-probability below `logprob`, is silence. */
  noSpeech: number;
}

export const DEFAULT_THRESHOLDS: FallbackThresholds = { compressionRatio: 2.4, logprob: -1, noSpeech: 0.6 };

export interface WindowOptions {
  /** Whisper language code ("en"); undefined asks a multilingual model to detect it. */
  language?: string;
  task: "transcribe" | "translate";
  /** Conditions decoding: <|startofprev|> and the prompt's last tokens before the start token. */
  prompt?: string;
  /** Temperatures tried in turn while a decode fails the thresholds; default [0, 0.2, ..., 1]. */
  temperatures?: number[];
  /** Seeds sampling above temperature 0, so a rerun decodes the same. */
  seed?: number;
  thresholds?: FallbackThresholds;
  /** Decodes sampled at each temperature above 0, the best kept (Whisper's best_of); default 1. */
  bestOf?: number;
  /** Beams searched at temperature 0 (Whisper's beam_size); default 1, greedy. */
  beamSize?: number;
  /** Align each word to the audio (needs a decoder with cross-attention outputs, see ModelInfo.wordTimestamps). */
  wordTimestamps?: boolean;
}

export interface WindowChunk {
  start: number;
  /** null when the model left the last segment open at the end of the window. */
  end: number | null;
  text: string;
  /** The segment's token ids, its timestamp tokens included, as Whisper reports them. */
  tokens: number[];
  /** The text tokens of the segment with their log-probabilities. */
  textTokens: { id: number; text: string; logprob: number }[];
  /** Its words with their times in the window, when word timestamps were asked for. */
  words?: WindowWord[];
}

export interface WindowWord {
  /** As the tokenizer spells it, leading space included. */
  word: string;
  start: number;
  end: number;
}

export interface WindowOutput {
  chunks: WindowChunk[];
  /** Language code used or detected; null for English-only models. */
  language: string | null;
  /** The temperature of the decode that was kept. */
  temperature: number;
  /** Mean log-probability of its tokens (end-of-text included). */
  avgLogprob: number;
  /** zlib compression ratio of its text. */
  compressionRatio: number;
  /** Probability of <|nocaptions|> right after the start token. */
  noSpeechProb: number;
}

/** The batch decoder's counters (lib/engine/batch-decoder.ts). */
export interface DecoderStats {
  encoderRuns: number;
  decoderCalls: number;
  /** Row-steps summed over decoder calls: rowSteps / decoderCalls is the mean batch. */
  rowSteps: number;
  largestBatch: number;
  /** Rows in cohorts right now. */
  activeRows: number;
  /** Decodes sent back to try a hotter temperature. */
  fallbacks: number;
  /** Rows started as a window's best_of samples or beams. */
  candidates: number;
  /** Cohorts that reached another's position and joined it. */
  merges: number;
}

export interface ModelInfo {
  multilingual: boolean;
  /** Resident bytes the load added to the process. */
  footprintBytes: number;
  /** Its decoder outputs the alignment heads' cross-attention (the `_timestamped` exports), so words can be timed. */
  wordTimestamps: boolean;
  /** Bytes one decoding row holds at the longest decode, by the model's shapes: the least a row can cost. */
  rowStateBytes: number;
  /** Encoder layers whose self-attention runs as one fused (flash) attention kernel (fused-encoder.ts); 0 when the export was left as it is. */
  fusedAttentionLayers: number;
  /** Why the fused attention was tried and not kept, when it was. */
  fusedAttentionRefused?: string;
}

export type ToWorker =
  | { op: "load"; rid: number; model: ModelSpec }
  /** `stream` names the file the window belongs to, for fairness between files; its features follow in a "features" message (computed on the audio thread meanwhile). */
  | { op: "window"; rid: number; stream: string; model: ModelSpec; samples: Float32Array; options: WindowOptions; followed: boolean }
  | { op: "features"; rid: number; features: Float32Array }
  | { op: "features"; rid: number; error: string }
  | { op: "cancel"; rid: number }
  | { op: "stats"; rid: number }
  /** Stop once the call in progress has returned: terminating a thread inside a native onnxruntime call can bring the process down. */
  | { op: "close"; rid: number };

export type FromWorker =
  /** Sent once, unasked, when the thread has loaded its modules and takes work. */
  | { op: "ready"; rid: 0 }
  /** `features`: what the model's features are computed with, for the audio thread. */
  | { op: "loaded"; rid: number; info: ModelInfo; features: WhisperFeatureConfig }
  | { op: "window"; rid: number; output: WindowOutput }
  /** Sent ahead of a window's result when the window had to identify its language. */
  | { op: "language"; rid: number; language: string }
  | { op: "stats"; rid: number; stats: DecoderStats }
  | { op: "error"; rid: number; message: string; code?: string };
