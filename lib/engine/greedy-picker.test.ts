import { describe, expect, it } from "vitest";
import { GreedyPicker } from "./greedy-picker.ts";
import { sessionOptions } from "./whisper-model.ts";
import { WhisperRules } from "./whisper-rules.ts";

const VOCAB = 51865;

/** Logits like a decoder step's after Whisper's rules: a spread of values, a masked range, a few ties. */
function maskedLogits(seed: number): Float32Array {
  const logits = new Float32Array(VOCAB);
  let s = seed;
  for (let i = 0; i < VOCAB; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    logits[i] = (s / 2 ** 32) * 24 - 12;
  }
  logits.fill(-Infinity, 50257, 50364);
  return logits;
}

describe("GreedyPicker", () => {
  it("picks the first maximum and its log-probability, as the JavaScript greedy choice does", async () => {
    const picker = await GreedyPicker.create(sessionOptions(2));
    const rows = [1, 2, 3].map(maskedLogits);
    // A tie for the maximum: the first one is Whisper's (and the library's) choice.
    rows[1]![40000] = 30;
    rows[1]![100] = 30;
    const picks = await picker.pick(rows);
    rows.forEach((row, i) => {
      const expected = WhisperRules.greedy(row);
      expect(picks[i]!.token).toBe(expected.token);
      expect(picks[i]!.logprob).toBeCloseTo(expected.logprob, 5);
    });
    expect(picks[1]!.token).toBe(100);
  });

  it("gives a row the same pick whatever rows it is picked with", async () => {
    const picker = await GreedyPicker.create(sessionOptions(2));
    const buffer = new Float32Array(5 * VOCAB);
    for (let r = 0; r < 5; r++) buffer.set(maskedLogits(10 + r), r * VOCAB);
    const rows = Array.from({ length: 5 }, (_, r) => buffer.subarray(r * VOCAB, (r + 1) * VOCAB));
    const together = await picker.pick(rows);
    for (let r = 0; r < 5; r++) expect(await picker.pick([maskedLogits(10 + r)])).toEqual([together[r]]);
  });

  it("leaves a row with a NaN to JavaScript, which skips it", async () => {
    const picker = await GreedyPicker.create(sessionOptions(1));
    const row = maskedLogits(7);
    row[5] = Number.NaN;
    const [pick] = await picker.pick([row]);
    expect(pick).toEqual(WhisperRules.greedy(row));
    expect(Number.isNaN(pick!.logprob)).toBe(false);
  });
});
