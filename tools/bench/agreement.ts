/**
 * How often decoding a window in a batch changes its tokens. fp32 rows decode exactly as alone (a
 * test checks it); int8 decoder calls quantize their activations with one scale per call
 * (DynamicQuantizeLinear over the whole batch), so a row's logits depend on the other rows a little.
 * Real speech windows from ../shared/audio, decoded alone and then all together in one batch.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { decodeToPcm } from "../../lib/audio/ffmpeg.ts";
import { createInference } from "../../lib/engine/worker.ts";
import type { WindowOutput } from "../../lib/engine/protocol.ts";
import type { Dtype } from "../../lib/capacity/plan.ts";
import { WhisperModel } from "../../lib/engine/whisper-model.ts";
import { WhisperRules } from "../../lib/engine/whisper-rules.ts";

export interface Agreement {
  model: string;
  dtype: Dtype;
  windows: number;
  batch: number;
  /** Windows whose batched tokens equal their batch-1 tokens. */
  identicalWindows: number;
  tokens: number;
  /** Tokens at the same index that differ (a row that diverges stays counted to its end). */
  differingTokens: number;
  logits: LogitNoise;
}

/** The LJSpeech clips end to end, cut into full 30 s windows. */
async function speechWindows(sharedDir: string, count: number): Promise<Float32Array[]> {
  const dir = join(sharedDir, "audio", "ljspeech-coqui");
  const files = (await readdir(dir)).filter((f) => f.endsWith(".wav")).sort();
  const parts: Float32Array[] = [];
  for (const file of files) for await (const chunk of decodeToPcm(join(dir, file))) parts.push(chunk);
  const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
  const size = 30 * 16_000;
  const windows: Float32Array[] = [];
  for (let at = 0; at + size <= all.length && windows.length < count; at += size) windows.push(all.slice(at, at + size));
  return windows;
}

const tokensOf = (out: WindowOutput) => out.chunks.flatMap((c) => c.tokens);

export async function measureAgreement(modelsDir: string, sharedDir: string, id: string, dtype: Dtype, batch: number): Promise<Agreement> {
  const windows = await speechWindows(sharedDir, batch);
  const spec = { id, dtype };
  const alone = createInference({ localModelPath: modelsDir, allowRemoteModels: false, cacheDir: null, threads: 2 });
  const solo: number[][] = [];
  for (const samples of windows) solo.push(tokensOf(await alone.transcribeWindow("solo", { model: spec, samples, options: { task: "transcribe", language: "en" } })));
  const together = createInference({ localModelPath: modelsDir, allowRemoteModels: false, cacheDir: null, threads: 2 });
  await together.load(spec);
  // One stream: its windows wait for each other and start as one cohort.
  const batched = await Promise.all(windows.map((samples) => together.transcribeWindow("file", { model: spec, samples, options: { task: "transcribe", language: "en" } })));
  let identicalWindows = 0;
  let tokens = 0;
  let differingTokens = 0;
  batched.map(tokensOf).forEach((row, i) => {
    const ref = solo[i]!;
    if (row.length === ref.length && row.every((t, j) => t === ref[j])) identicalWindows++;
    const n = Math.max(row.length, ref.length);
    tokens += ref.length;
    for (let j = 0; j < n; j++) if (row[j] !== ref[j]) differingTokens++;
  });
  // The batched inference's copy of the model: the bench holds every model it loads to the end.
  const logits = await measureLogitNoise(await together.load(spec), windows);
  return { model: id, dtype, windows: windows.length, batch: together.decoder.stats.largestBatch, identicalWindows, tokens, differingTokens, logits };
}

export interface LogitNoise {
  /** Decoder steps compared: every step of every window, its rows in one batch against each alone. */
  steps: number;
  /** The largest change batching made to any logit Whisper's rules left open, and the median step's largest. */
  maxDelta: number;
  medianStepDelta: number;
  /** The smallest lead the picked token had over the next one, decoded alone. */
  smallestMargin: number;
  /** Steps whose lead was less than twice that step's largest change: the only picks batching could turn. */
  stepsAtRisk: number;
}

/**
 * The size of int8 batching's effect on the logits themselves, which real weights can be compared
 * against where token agreement cannot: each window is decoded greedily alone, then its tokens are
 * fed to the same windows decoded in one batch (teacher forcing keeps the rows at the same
 * positions), and every step's logits, after Whisper's rules, are compared.
 */
async function measureLogitNoise(model: WhisperModel, windows: Float32Array[]): Promise<LogitNoise> {
  const encoded = await Promise.all(windows.map((w) => model.encode(w)));
  const init = model.initTokens(model.multilingual ? "en" : null, "transcribe");
  const masked = (logits: Float32Array, generated: number[]) => {
    const copy = logits.slice();
    model.rules.apply(copy, generated);
    return copy;
  };
  // Alone: each window's greedy tokens and the masked logits that chose them.
  const alone: { tokens: number[]; logits: Float32Array[] }[] = [];
  for (const e of encoded) {
    const tokens: number[] = [];
    const seen: Float32Array[] = [];
    let { logits, state } = await model.prefill([e], [init.tokens], init.sotIndex);
    for (;;) {
      const step = masked(logits[0]!, tokens);
      seen.push(step);
      const { token } = WhisperRules.greedy(step);
      tokens.push(token);
      if (token === model.rules.eos || model.rules.atLimit(init.tokens.length, tokens.length)) break;
      ({ logits } = await model.step(state, [token]));
    }
    WhisperModel.releaseState(state);
    alone.push({ tokens, logits: seen });
  }
  // Together: the same tokens fed to all rows at once; a row leaves the batch after its last token.
  const deltas: number[] = [];
  let maxDelta = 0;
  let smallestMargin = Infinity;
  let stepsAtRisk = 0;
  let rows = alone.map((_, i) => i);
  let { logits, state } = await model.prefill(
    encoded,
    encoded.map(() => init.tokens),
    init.sotIndex,
  );
  for (let position = 0; rows.length > 0; position++) {
    rows.forEach((row, k) => {
      const solo = alone[row]!;
      const together = masked(logits[k]!, solo.tokens.slice(0, position));
      const reference = solo.logits[position]!;
      let delta = 0;
      for (let j = 0; j < reference.length; j++) if (Number.isFinite(reference[j]!)) delta = Math.max(delta, Math.abs(together[j]! - reference[j]!));
      const margin = lead(reference);
      deltas.push(delta);
      maxDelta = Math.max(maxDelta, delta);
      smallestMargin = Math.min(smallestMargin, margin);
      if (margin < 2 * delta) stepsAtRisk++;
    });
    const staying = rows.flatMap((row, k) => (position + 1 < alone[row]!.tokens.length ? [k] : []));
    if (staying.length === 0) break;
    if (staying.length < rows.length) WhisperModel.keepRows(state, staying);
    rows = staying.map((k) => rows[k]!);
    ({ logits } = await model.step(
      state,
      rows.map((row) => alone[row]!.tokens[position]!),
    ));
  }
  WhisperModel.releaseState(state);
  deltas.sort((a, b) => a - b);
  return { steps: deltas.length, maxDelta, medianStepDelta: deltas[deltas.length >> 1] ?? 0, smallestMargin, stepsAtRisk };
}

/** How far the highest logit is above the next highest. */
function lead(logits: Float32Array): number {
  let first = -Infinity;
  let second = -Infinity;
  for (const v of logits) {
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) second = v;
  }
  return first - second;
}
