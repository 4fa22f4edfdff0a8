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
  return { model: id, dtype, windows: windows.length, batch: together.decoder.stats.largestBatch, identicalWindows, tokens, differingTokens };
}
