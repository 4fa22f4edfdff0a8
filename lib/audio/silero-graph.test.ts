import { existsSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { chords, noise } from "../../tools/audio/synth.ts";
import { floatTensor, Graph, modelBytes } from "../onnx/graph.ts";
import { readPcm } from "./ffmpeg.ts";
import { sileroSequenceModel, SILERO_INPUT, SILERO_STATE } from "./silero-graph.ts";
import { initialCarry, runSilero, sileroModelPath } from "./silero-vad.ts";
import { CHUNK_SAMPLES } from "./speech-regions.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const speechDir = join(sharedDir, "audio", "librispeech-mini");

const options: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 };

/** Each chunk's row: the 64 samples before it (zeros before the start), then its own. */
function rows(stream: Float32Array, from: number, to: number): Float32Array {
  const out = new Float32Array((to - from) * SILERO_INPUT);
  for (let chunk = from; chunk < to; chunk++) {
    const end = (chunk + 1) * CHUNK_SAMPLES;
    const start = end - SILERO_INPUT;
    out.set(stream.subarray(Math.max(0, start), end), (chunk - from) * SILERO_INPUT + Math.max(0, -start));
  }
  return out;
}

/** The published graph, every stream chunk by chunk in one batch per step, carrying the LSTM state. */
async function publishedProbabilities(session: ort.InferenceSession, streams: Float32Array[], steps: number): Promise<Float32Array[]> {
  const B = streams.length;
  const out = streams.map(() => new Float32Array(steps));
  let state: Float32Array = new Float32Array(2 * B * SILERO_STATE);
  for (let step = 0; step < steps; step++) {
    const input = new Float32Array(B * SILERO_INPUT);
    streams.forEach((s, b) => input.set(rows(s, step, step + 1), b * SILERO_INPUT));
    const result = await session.run({
      input: new ort.Tensor("float32", input, [B, SILERO_INPUT]),
      state: new ort.Tensor("float32", state, [2, B, SILERO_STATE]),
      sr: new ort.Tensor("int64", BigInt64Array.from([16_000n]), []),
    });
    const p = result.output!.data as Float32Array;
    out.forEach((o, b) => (o[step] = p[b]!));
    state = result.stateN!.data as Float32Array;
  }
  return out;
}

/** The sequence graph, a stream's chunks in calls of the given sizes, each starting from the last's state. */
async function sequenceProbabilities(session: ort.InferenceSession, stream: Float32Array, calls: number[]): Promise<Float32Array> {
  const out = new Float32Array(calls.reduce((a, n) => a + n, 0));
  let state: Float32Array = new Float32Array(2 * SILERO_STATE);
  let from = 0;
  for (const n of calls) {
    const result = await session.run({
      input: new ort.Tensor("float32", rows(stream, from, from + n), [n, SILERO_INPUT]),
      state: new ort.Tensor("float32", state, [2, 1, SILERO_STATE]),
    });
    out.set(result.output!.data as Float32Array, from);
    state = result.stateN!.data as Float32Array;
    from += n;
  }
  return out;
}

describe("Silero VAD's weights in the sequence graph", () => {
  it("gives, a run of chunks a call, the package graph's speech probabilities chunk by chunk on real speech, noise and music-like chords", async () => {
    const file = await readFile(sileroModelPath());
    const published = await ort.InferenceSession.create(file, options);
    const sequence = await ort.InferenceSession.create(sileroSequenceModel(file), options);
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
    const steps = 8 * 31;
    const expected = await publishedProbabilities(published, streams, steps);
    // Uneven calls: the state carried from one call to the next continues the sequence.
    const actual = await Promise.all(streams.map((s) => sequenceProbabilities(sequence, s, [1, 100, 7, steps - 108])));
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
    await sequence.release();
  });

  it.skipIf(!existsSync(speechDir))("runs a file's blocks, of any size, as the uninterrupted stream chunk by chunk", async () => {
    const clips = await Promise.all(
      [speechDir, join(sharedDir, "audio", "ljspeech-coqui")].flatMap((dir) =>
        readdirSync(dir)
          .filter((f) => f.endsWith(".wav"))
          .sort()
          .map((f) => readPcm(join(dir, f))),
      ),
    );
    const file = new Float32Array(clips.reduce((n, c) => n + c.length, 0));
    clips.reduce((at, c) => (file.set(c, at), at + c.length), 0);
    const published = await ort.InferenceSession.create(await readFile(sileroModelPath()), options);
    const chunks = Math.floor(file.length / CHUNK_SAMPLES);
    const [expected] = await publishedProbabilities(published, [file], chunks);
    // Blocks as the windows read them: a short one, then longer than a model call, then the rest.
    const cuts = [0, 200, 1500, chunks].map((c) => c * CHUNK_SAMPLES);
    let carry = initialCarry();
    const actual: number[] = [];
    for (let i = 1; i < cuts.length; i++) {
      const result = await runSilero(file.subarray(cuts[i - 1], cuts[i]), carry);
      carry = result.carry;
      actual.push(...result.probs);
    }
    expect(file.length / 16_000).toBeGreaterThan(60);
    expect(actual).toHaveLength(chunks);
    expect(Math.max(...actual.map((p, i) => Math.abs(p - expected![i]!)))).toBeLessThan(1e-4);
    expect(actual.filter((p) => p > 0.5).length).toBeGreaterThan(chunks / 2);
    await published.release();
  });

  it("names the weight a different model lacks", () => {
    const g = new Graph("other");
    g.init("weight", floatTensor([2], new Float32Array([1, 2])));
    const x = g.input("x", "float", [2]);
    g.op("Identity", [x], {}, "y");
    g.output("y", "float", [2]);
    expect(() => sileroSequenceModel(modelBytes(g, { producer: "test", opset: 17 }))).toThrow(/model\.stft\.forward_basis_buffer is missing/);
  });
});
