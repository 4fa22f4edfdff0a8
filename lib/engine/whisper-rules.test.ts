import { SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor, Tensor, WhisperTimeStampLogitsProcessor } from "@huggingface/transformers";
import { describe, expect, it } from "vitest";
import { sumExp, WhisperRules } from "./whisper-rules.ts";

// whisper-tiny.en's ids.
const V = 51865;
const config = {
  eos_token_id: 50257,
  decoder_start_token_id: 50258,
  no_timestamps_token_id: 50363,
  max_initial_timestamp_index: 50,
  suppress_tokens: [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 50359, 50360, 50361],
  begin_suppress_tokens: [220, 50257],
};
const TS = 50364;
const PROMPT = [50257, 50362];

let seed = 12345;
const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
const gauss = () => Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());

function randomHistory(): bigint[] {
  const ids = PROMPT.map(BigInt);
  const extra = Math.floor(rand() * 6);
  for (let i = 0; i < extra; i++) ids.push(rand() < 0.4 ? BigInt(TS + Math.floor(rand() * 1501)) : BigInt(Math.floor(rand() * 50000)));
  return ids;
}

/** Random logits, a fifth of them in the shapes decoding meets: masked timestamps, a forced token, -inf holes, near ties. */
function randomLogits(): Float32Array {
  const logits = new Float32Array(V);
  const scale = [0.05, 1, 5, 30][Math.floor(rand() * 4)]!;
  for (let i = 0; i < V; i++) logits[i] = gauss() * scale;
  const mode = rand();
  if (mode < 0.2) logits.fill(-1e4, TS + 1);
  else if (mode < 0.3) logits[TS + Math.floor(rand() * 1501)] = 2e4;
  else if (mode < 0.4) for (let i = 0; i < 200; i++) logits[Math.floor(rand() * V)] = -Infinity;
  else if (mode < 0.7) {
    // A near tie: the timestamps' total probability equal to the best text token's, give or take a hair.
    let m = -Infinity;
    for (let i = TS; i < V; i++) m = Math.max(m, logits[i]!);
    let s = 0;
    for (let i = TS; i < V; i++) s += Math.exp(logits[i]! - m);
    let best = 0;
    for (let i = 1; i < TS; i++) if (logits[i]! > logits[best]!) best = i;
    logits[best] = Math.fround(m + Math.log(s) + (rand() - 0.5) * [1e-7, 1e-5, 1e-3, 1e-1][Math.floor(rand() * 4)]!);
  }
  return logits;
}

/**
 * openai's rules that generate() lacks, as decoding.py's ApplyTimestampRules masks them: the first
 * timestamp at most max_initial_timestamp (1.0 s); no timestamp before the last one, nor equal to it
 * but right after a segment's closing one.
 */
function openaiMasks(ids: bigint[], logits: Float32Array): void {
  const generated = ids.slice(PROMPT.length).map(Number);
  const n = generated.length;
  if (n === 0) logits.fill(-Infinity, TS + 50 + 1);
  const timestamps = generated.filter((t) => t >= TS);
  if (timestamps.length === 0) return;
  const lastWas = generated[n - 1]! >= TS;
  const penultimateWas = n < 2 || generated[n - 2]! >= TS;
  logits.fill(-Infinity, TS, lastWas && !penultimateWas ? timestamps.at(-1)! : timestamps.at(-1)! + 1);
}

/** What transformers.js's generate() leaves for the ASR pipeline with timestamps (its three processors in its order), after openai's mask. */
function library(ids: bigint[], logits: Float32Array): Float32Array {
  const masked = logits.slice();
  openaiMasks(ids, masked);
  const tensor = new Tensor("float32", masked, [1, V]);
  const rows = [(tensor as unknown as Tensor[])[0]] as unknown as Tensor;
  new SuppressTokensLogitsProcessor(config.suppress_tokens)._call([ids], rows);
  new SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, PROMPT.length)._call([ids], rows);
  new WhisperTimeStampLogitsProcessor(config as never, PROMPT)._call([ids], rows);
  return tensor.data as Float32Array;
}

describe("WhisperRules", () => {
  it("never lets timestamps go back, nor a segment end where it starts", () => {
    const rules = new WhisperRules(config);
    // <|5.00|> a <|6.00|><|6.00|> b: the open segment started at 6.00.
    const open = new Float32Array(V);
    open[TS + 100] = 50;
    rules.apply(open, [TS + 250, 100, TS + 300, TS + 300, 200]);
    expect(open[TS + 100]).toBe(-Infinity);
    expect(open[TS + 300]).toBe(-Infinity);
    expect(open[TS + 301]).toBeGreaterThan(-Infinity);
    // Right after <|5.00|> a <|6.00|> closed a segment, the next may open at 6.00 but not before.
    const closed = new Float32Array(V);
    rules.apply(closed, [TS + 250, 100, TS + 300]);
    expect(closed[TS + 299]).toBe(-Infinity);
    expect(closed[TS + 300]).toBeGreaterThan(-Infinity);
  });

  it("starts with a timestamp of at most 1.0 s, as openai's max_initial_timestamp", () => {
    const rules = new WhisperRules(config);
    const logits = new Float32Array(V);
    // The model wants <|12.00|> first: everything before it would be skipped.
    logits[TS + 600] = 50;
    rules.apply(logits, []);
    expect(logits[TS + 50]).toBeGreaterThan(-Infinity);
    expect(logits[TS + 51]).toBe(-Infinity);
    expect(WhisperRules.greedy(logits).token).toBeLessThanOrEqual(TS + 50);
  });

  it("leaves exactly the logits the library's processors leave after openai's timestamp rules, first step and near ties included", () => {
    const rules = new WhisperRules(config);
    let textMasked = 0;
    let firstSteps = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const ids = randomHistory();
      const logits = randomLogits();
      const expected = library(ids, logits);
      const actual = logits.slice();
      rules.apply(actual, ids.slice(PROMPT.length).map(Number));
      for (let i = 0; i < V; i++) if (!Object.is(actual[i], expected[i])) expect.fail(`trial ${trial}: logit ${i} is ${actual[i]}, the library's is ${expected[i]}`);
      if (ids.length === PROMPT.length) firstSteps++;
      else if (expected[0] === -Infinity) textMasked++;
    }
    // Both outcomes of the timestamp rule were exercised, and close calls went to the library.
    expect(textMasked).toBeGreaterThan(100);
    expect(firstSteps).toBeGreaterThan(100);
    expect(rules.deferred).toBeGreaterThan(10);
  });

  it("picks the first maximum with its log-probability", () => {
    const logits = Float32Array.from([0, 2, 2, -Infinity]);
    const pick = WhisperRules.greedy(logits);
    expect(pick.token).toBe(1);
    expect(pick.logprob).toBeCloseTo(Math.log(Math.exp(2) / (1 + 2 * Math.exp(2))), 6);
  });

  it("sums the softmax's normaliser as Math.exp does, masked and far-below entries as zeros", () => {
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const [spread, temperature] of [
      [5, 1],
      [40, 1],
      [40, 0.4],
      [2000, 1],
      [10, 1.7],
    ] as const) {
      const logits = Float32Array.from({ length: V }, () => (random() < 0.01 ? -Infinity : (random() - 0.5) * spread));
      let max = -Infinity;
      for (const v of logits) max = Math.max(max, v);
      let exact = 0;
      for (const v of logits) exact += Math.exp((v - max) / temperature);
      expect(Math.abs(sumExp(logits, max, temperature) - exact) / exact).toBeLessThan(1e-8);
    }
    expect(sumExp(Float32Array.from([3, -Infinity, Number.NaN]), 3, 1)).toBe(1);
  });
});
