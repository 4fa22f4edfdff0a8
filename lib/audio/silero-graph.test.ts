import { existsSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { chords, noise } from "../../tools/audio/synth.ts";
import { floatTensor, Graph, modelBytes } from "../onnx/graph.ts";
import { readPcm } from "./ffmpeg.ts";
import { batchedSileroModel, SILERO_INPUT, SILERO_STATE } from "./silero-graph.ts";
import { sileroModelPath } from "./silero-vad.ts";
import { CHUNK_SAMPLES } from "./speech-regions.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const speechDir = join(sharedDir, "audio", "librispeech-mini");

const options: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 };

/**
 * Every stream through the graph chunk by chunk, all streams in one batch per step, carrying the
 * LSTM state: each stream's speech probabilities, as the VAD computes them.
 */
async function probabilities(session: ort.InferenceSession, streams: Float32Array[], extra: Record<string, ort.Tensor> = {}): Promise<Float32Array[]> {
  const B = streams.length;
  const steps = Math.max(...streams.map((s) => Math.floor(s.length / CHUNK_SAMPLES)));
  const out = streams.map(() => new Float32Array(steps));
  let state: Float32Array = new Float32Array(2 * B * SILERO_STATE);
  const context = SILERO_INPUT - CHUNK_SAMPLES;
  for (let step = 0; step < steps; step++) {
    const input = new Float32Array(B * SILERO_INPUT);
    streams.forEach((s, b) => {
      const end = (step + 1) * CHUNK_SAMPLES;
      const from = end - SILERO_INPUT;
      input.set(s.subarray(Math.max(0, from), Math.min(end, s.length)), b * SILERO_INPUT + Math.max(0, -from));
    });
    const result = await session.run({
      input: new ort.Tensor("float32", input, [B, context + CHUNK_SAMPLES]),
      state: new ort.Tensor("float32", state, [2, B, SILERO_STATE]),
      ...extra,
    });
    const p = result.output!.data as Float32Array;
    out.forEach((o, b) => (o[step] = p[b]!));
    state = result.stateN!.data as Float32Array;
  }
  return out;
}

describe("Silero VAD's weights in the batched graph", () => {
  it("gives the package graph's speech probabilities on real speech, noise and music-like chords", async () => {
    const file = await readFile(sileroModelPath());
    const published = await ort.InferenceSession.create(file, options);
    const batched = await ort.InferenceSession.create(batchedSileroModel(file), options);
    const speech = existsSync(speechDir)
      ? await Promise.all(
          readdirSync(speechDir)
            .filter((f) => f.endsWith(".wav"))
            .sort()
            .slice(0, 4)
            .map((f) => readPcm(join(speechDir, f))),
        )
      : [];
    const streams = [
      ...speech.map((s) => s.subarray(0, 8 * 16_000)),
      noise("white", 8, { rms: 0.1, seed: 1 }),
      noise("pink", 8, { seed: 2 }),
      noise("brown", 8, { seed: 3 }),
      chords(8),
      new Float32Array(8 * 16_000),
    ];
    const sr = new ort.Tensor("int64", BigInt64Array.from([16_000n]), []);
    const expected = await probabilities(published, streams, { sr });
    const actual = await probabilities(batched, streams);
    let largest = 0;
    let spoken = 0;
    expected.forEach((e, b) =>
      e.forEach((p, i) => {
        largest = Math.max(largest, Math.abs(p - actual[b]![i]!));
        if (p > 0.5) spoken++;
      }),
    );
    // Summation order is all that differs.
    expect(largest).toBeLessThan(1e-4);
    // The comparison covers speech as well as non-speech decisions.
    if (speech.length > 0) expect(spoken).toBeGreaterThan(100);
    await published.release();
    await batched.release();
  });

  it("names the weight a different model lacks", () => {
    const g = new Graph("other");
    g.init("weight", floatTensor([2], new Float32Array([1, 2])));
    const x = g.input("x", "float", [2]);
    g.op("Identity", [x], {}, "y");
    g.output("y", "float", [2]);
    expect(() => batchedSileroModel(modelBytes(g, { producer: "test", opset: 17 }))).toThrow(/model\.stft\.forward_basis_buffer is missing/);
  });
});
