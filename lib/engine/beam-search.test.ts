/**
 * Beam search at temperature 0 (Whisper's beam_size) in the shared batch, against a plain
 * implementation of Whisper's BeamSearchDecoder written here over the same model calls, one
 * hypothesis at a time with its own cache.
 */
import { describe, expect, it } from "vitest";
import * as ort from "onnxruntime-node";
import { synthesize, type SynthPart } from "../../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { microTones, STUTTER_TONE } from "../../tools/models/micro.ts";
import type { ModelSpec, WindowOptions } from "./protocol.ts";
import { createInference, type Inference } from "./worker.ts";
import type { BatchState, WhisperModel } from "./whisper-model.ts";

async function loaded(kind: "micro" | "tiny.en", dtype: "q8" | "fp32", rows?: number): Promise<{ spec: ModelSpec; inference: Inference; model: WhisperModel }> {
  const generated = await generateModel({ kind, out: DEFAULT_MODELS_DIR });
  const spec = { id: generated.id, dtype };
  const inference = createInference({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1, rows });
  return { spec, inference, model: await inference.load(spec) };
}

const decode = (inference: Inference, spec: ModelSpec, samples: Float32Array, options: Omit<WindowOptions, "task">, stream = "s") =>
  inference.transcribeWindow(stream, { model: spec, samples, options: { task: "transcribe", temperatures: [0], ...options } });

/** A hypothesis's own copy of its parent's cache: the self-attention K/V, which each step replaces (the cross-attention K/V stay the same). */
const copyState = (s: BatchState): BatchState => ({
  rows: s.rows,
  encoderStates: s.encoderStates,
  past: new Map([...s.past].map(([name, t]) => [name, name.includes(".decoder.") ? new ort.Tensor("float32", (t.data as Float32Array).slice(), t.dims) : t])),
  position: s.position,
});

interface Hypothesis {
  generated: number[];
  logprobs: number[];
  state: BatchState;
  logits: Float32Array;
}

/**
 * decoding.py's BeamSearchDecoder (patience 1) and MaximumLikelihoodRanker, one hypothesis per model
 * call, for at most `sampleLen` steps (its sample_len, n_text_ctx // 2 by default).
 */
async function referenceBeamSearch(model: WhisperModel, samples: Float32Array, beamSize: number, sampleLen = 224): Promise<{ generated: number[]; avgLogprob: number }> {
  const { rules, picker } = model;
  const encoded = await model.encode(samples);
  const init = model.initTokens(null, "transcribe").tokens;
  const first = await model.prefill([encoded], [init]);
  let beams: Hypothesis[] = [{ generated: [], logprobs: [], state: first.state, logits: first.logits[0]! }];
  const finished: { generated: number[]; logprobs: number[] }[] = [];
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  for (let i = 0; i < sampleLen; i++) {
    const scores = new Map<string, { score: number; parent: Hypothesis; token: number; logprob: number }>();
    for (const beam of beams) {
      const logits = beam.logits.slice();
      rules.apply(logits, beam.generated);
      // The same log-normaliser the engine uses, from the picker's log-probability of its token.
      const [pick] = await picker.pick([logits]);
      const logNorm = logits[pick!.token]! - pick!.logprob;
      const order = [...logits.keys()].sort((a, b) => (logits[b]! === logits[a]! ? a - b : logits[b]! > logits[a]! ? 1 : -1));
      for (const token of order.slice(0, beamSize + 1)) {
        const logprob = logits[token]! - logNorm;
        scores.set([...beam.generated, token].join(","), { score: sum(beam.logprobs) + logprob, parent: beam, token, logprob });
      }
    }
    const ranked = [...scores.values()].sort((a, b) => (a.score === b.score ? 0 : b.score > a.score ? 1 : -1));
    const next: typeof ranked = [];
    for (const c of ranked) {
      const sequence = { generated: [...c.parent.generated, c.token], logprobs: [...c.parent.logprobs, c.logprob] };
      if (c.token === rules.eos) {
        if (finished.length < beamSize) finished.push(sequence);
        continue;
      }
      next.push(c);
      if (next.length === beamSize) break;
    }
    const continued: Hypothesis[] = [];
    for (const c of next) {
      const state = copyState(c.parent.state);
      const { logits } = await model.step(state, [c.token]);
      continued.push({ generated: [...c.parent.generated, c.token], logprobs: [...c.parent.logprobs, c.logprob], state, logits: logits[0]! });
    }
    beams = continued;
    if (finished.length >= beamSize || init.length + beams[0]!.generated.length >= rules.maxLength) break;
  }
  for (const beam of [...beams].sort((a, b) => sum(b.logprobs) - sum(a.logprobs))) {
    if (finished.length >= beamSize) break;
    finished.push({ generated: [...beam.generated, rules.eos], logprobs: [...beam.logprobs, 0] });
  }
  const score = (f: { generated: number[]; logprobs: number[] }) => sum(f.logprobs) / Math.max(1, f.generated.length - 1);
  const best = finished.reduce((a, b) => (score(b) > score(a) ? b : a));
  return { generated: best.generated.slice(0, -1), avgLogprob: sum(best.logprobs) / best.logprobs.length };
}

const stutter = () => synthesize(microTones([{ silence: 1 }, { word: STUTTER_TONE.word, seconds: 6 }]));

describe("beam search", () => {
  it("keeps what Whisper's BeamSearchDecoder finds, on the micro model's stutter, where greedy decoding loops", async () => {
    const { spec, inference, model } = await loaded("micro", "q8");
    const greedy = await decode(inference, spec, stutter(), { temperatures: [0] });
    for (const beamSize of [2, 5]) {
      const searched = await decode(inference, spec, stutter(), { beamSize });
      const reference = await referenceBeamSearch(model, stutter(), beamSize);
      expect(
        searched.chunks.flatMap((c) => c.tokens),
        `beam ${beamSize}`,
      ).toEqual(reference.generated);
      expect(searched.avgLogprob).toBeCloseTo(reference.avgLogprob, 6);
      expect(searched.temperature).toBe(0);
      // Greedy repeats the word to the length limit; the search finds where it closes.
      expect(searched.chunks.flatMap((c) => c.tokens).length).toBeLessThan(greedy.chunks.flatMap((c) => c.tokens).length);
    }
    expect(inference.decoder.stats.activeRows).toBe(0);
  });

  it("ends a search the length limit cuts as Whisper's does: the beams still open are finished and ranked", async () => {
    const { spec, inference, model } = await loaded("micro", "q8");
    // No audio makes a search on these models run to 224 tokens: the limit is lowered to where the beams are still open.
    const limit = 2;
    (model.rules as { sampleLength: number }).sampleLength = limit;
    const searched = (await decode(inference, spec, stutter(), { beamSize: 2 })).chunks.flatMap((c) => c.tokens);
    expect(searched).toEqual((await referenceBeamSearch(model, stutter(), 2, limit)).generated);
    expect(searched).toHaveLength(limit);
  });

  it("on the architecture-faithful tiny.en in fp32, batched beams equal the one-at-a-time search", async () => {
    const { spec, inference, model } = await loaded("tiny.en", "fp32");
    const parts: SynthPart[] = [{ silence: 2 }, { tone: 700, seconds: 9 }, { silence: 1 }, { tone: 1500, seconds: 6 }];
    const searched = await decode(inference, spec, synthesize(parts), { beamSize: 3 });
    const reference = await referenceBeamSearch(model, synthesize(parts), 3);
    expect(searched.chunks.flatMap((c) => c.tokens)).toEqual(reference.generated);
    expect(reference.generated.length).toBeGreaterThan(3);
  });

  it("moves a row's self-attention cache to the rows that continue it (tiny.en fp32: the logits are the source's, bit for bit)", async () => {
    const { model } = await loaded("tiny.en", "fp32");
    const encoded = await model.encode(synthesize([{ tone: 900, seconds: 12 }]));
    const init = model.initTokens(null, "transcribe").tokens;
    const [a, b, c, d] = [50364, 262, 1049, 50400];
    const group = await model.prefill([encoded, encoded, encoded], [init, init, init], init.length - 1, [0, 0, 0]);
    await model.step(group.state, [a!, b!, c!]);
    model.reorderRows(group.state, [2, 2, 0]);
    const after = (await model.step(group.state, [d!, d!, d!])).logits;
    const alone = async (token: number) => {
      const one = await model.prefill([encoded], [init]);
      await model.step(one.state, [token]);
      return (await model.step(one.state, [d!])).logits[0]!;
    };
    const [fromC, fromA] = [await alone(c!), await alone(a!)];
    const apart = (x: Float32Array, y: Float32Array) => x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
    expect([apart(after[0]!, fromC), apart(after[1]!, fromC), apart(after[2]!, fromA)]).toEqual([0, 0, 0]);
    expect(apart(fromC, fromA)).toBeGreaterThan(0);
  });

  it("holds a search to the rows the engine may decode, starts a search's beams together, and decodes the same under load", async () => {
    const solo = await loaded("micro", "q8");
    const expected = await decode(solo.inference, solo.spec, stutter(), { beamSize: 3 });
    // Three rows: one search at a time, and a beam size above the budget searches with the budget.
    const { spec, inference } = await loaded("micro", "q8", 3);
    const outs = await Promise.all(["a", "b", "c"].map((stream) => decode(inference, spec, stutter(), { beamSize: 3 }, stream)));
    expect(outs).toEqual([expected, expected, expected]);
    expect(inference.decoder.stats.largestBatch).toBe(3);
    expect(await decode(inference, spec, stutter(), { beamSize: 8 })).toEqual(expected);
  });
});
