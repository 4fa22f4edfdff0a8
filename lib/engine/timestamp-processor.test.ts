import { Tensor, WhisperTimeStampLogitsProcessor } from "@huggingface/transformers";
import { describe, expect, it } from "vitest";
import { LeanLogitsProcessorList, LeanTimestampLogitsProcessor } from "./timestamp-processor.ts";

// whisper-tiny.en's ids.
const V = 51865;
const config = { eos_token_id: 50257, no_timestamps_token_id: 50363, max_initial_timestamp_index: 50 };
const TS = 50364;
const PROMPT = [50257, 50362];

let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
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

function apply(processor: (ids: bigint[][], logits: Tensor) => unknown, ids: bigint[], logits: Float32Array): Float32Array {
  const tensor = new Tensor("float32", logits.slice(), [1, V]);
  processor([ids], tensor);
  return tensor.data as Float32Array;
}

describe("LeanTimestampLogitsProcessor", () => {
  it("leaves exactly the logits the library's processor leaves, near ties included", () => {
    let textMasked = 0;
    let deferred = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const ids = randomHistory();
      const logits = randomLogits();
      const expected = apply((i, l) => new WhisperTimeStampLogitsProcessor(config as never, PROMPT)(i, l), ids, logits);
      const lean = new LeanTimestampLogitsProcessor(new WhisperTimeStampLogitsProcessor(config as never, PROMPT));
      const actual = apply((i, l) => lean(i, l), ids, logits);
      for (let i = 0; i < V; i++) if (!Object.is(actual[i], expected[i])) expect.fail(`trial ${trial}: logit ${i} is ${actual[i]}, the library's is ${expected[i]}`);
      deferred += lean.deferred;
      if (expected[0] === -Infinity && ids.length > PROMPT.length) textMasked++;
    }
    // Both outcomes of the timestamp rule were exercised, and close calls went to the library.
    expect(textMasked).toBeGreaterThan(100);
    expect(deferred).toBeGreaterThan(10);
  });

  it("follows begin_index when generate() moves it", () => {
    const lean = new LeanTimestampLogitsProcessor(new WhisperTimeStampLogitsProcessor(config as never, PROMPT));
    lean.begin_index = 3;
    const ids = [...PROMPT, 50300].map(BigInt);
    // At the new begin index only timestamps may come.
    const out = apply((i, l) => lean(i, l), ids, randomLogits());
    expect(out.subarray(0, TS).every((x) => x === -Infinity)).toBe(true);
    expect(out[TS]).toBeGreaterThan(-Infinity);
  });

  it("replaces only the timestamp processor in a generate() processor list", () => {
    const list = new LeanLogitsProcessorList();
    const timestamps = new WhisperTimeStampLogitsProcessor(config as never, PROMPT);
    list.push(timestamps);
    const processors = (list as unknown as { processors: unknown[] }).processors;
    expect(processors).toHaveLength(1);
    expect(processors[0]).toBeInstanceOf(LeanTimestampLogitsProcessor);
  });
});
