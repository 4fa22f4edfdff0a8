/** Messages between the engine (main thread) and its inference worker thread. */
export interface WorkerInit {
  localModelPath: string | null;
  allowRemoteModels: boolean;
  cacheDir: string | null;
  /** onnxruntime intra-op threads of every call: the instance's cores. */
  threads: number;
}

export interface ModelSpec {
  /** transformers.js model id: a hub id, or a path below the local models directory. */
  id: string;
  dtype: "q8" | "fp32";
}

export interface WindowOptions {
  /** Whisper language code ("en"); undefined asks a multilingual model to detect it. */
  language?: string;
  task: "transcribe" | "translate";
}

export interface WindowChunk {
  start: number;
  /** null when the model left the last segment open at the end of the window. */
  end: number | null;
  text: string;
  tokens: number[];
}

export interface WindowOutput {
  chunks: WindowChunk[];
  /** Language code used or detected; null for English-only models. */
  language: string | null;
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
}

export interface ModelInfo {
  multilingual: boolean;
  /** Resident bytes the load added to the process. */
  footprintBytes: number;
}

export type ToWorker =
  | { op: "load"; rid: number; model: ModelSpec }
  /** `stream` names the file the window belongs to, for fairness between files. */
  | { op: "window"; rid: number; stream: string; model: ModelSpec; samples: Float32Array; options: WindowOptions }
  | { op: "cancel"; rid: number }
  | { op: "stats"; rid: number };

export type FromWorker =
  /** Sent once, unasked, when the thread has loaded its modules and takes work. */
  | { op: "ready"; rid: 0 }
  | { op: "loaded"; rid: number; info: ModelInfo }
  | { op: "window"; rid: number; output: WindowOutput }
  /** Sent ahead of a window's result when the window had to identify its language. */
  | { op: "language"; rid: number; language: string }
  | { op: "stats"; rid: number; stats: DecoderStats }
  | { op: "error"; rid: number; message: string; code?: string };
