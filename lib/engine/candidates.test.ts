import { describe, expect, it } from "vitest";
import { beamStep, rankCandidates, topTokens, topUp, type Decode } from "./candidates.ts";

const EOS = 9;
const logits = (values: Record<number, number>) => {
  const out = new Float32Array(10).fill(-Infinity);
  for (const [id, v] of Object.entries(values)) out[Number(id)] = v;
  return out;
};
const decode = (generated: number[], logprobs: number[]): Decode => ({ generated, logprobs, attention: null, noSpeechProb: 0, temperature: 0 });

describe("topTokens", () => {
  it("gives the largest entries' indices, largest first, the lower index first among equals", () => {
    expect(topTokens(Float32Array.from([1, 5, 3, 5, -Infinity, 4]), 3)).toEqual([1, 3, 5]);
    expect(topTokens(Float32Array.from([2, 1]), 4)).toEqual([0, 1]);
  });
});

describe("rankCandidates", () => {
  it("prefers the highest mean log-probability over the tokens before end-of-text, the first of equals", () => {
    // -1.5 over 2 tokens (end-of-text's log-probability counted, not its place) against -1 over 1.
    expect(rankCandidates([decode([1, EOS], [-1, 0]), decode([1, 2, EOS], [-0.5, -0.5, -0.5])], EOS)).toBe(1);
    expect(rankCandidates([decode([1, EOS], [-1, 0]), decode([2, EOS], [-1, 0])], EOS)).toBe(0);
  });
});

describe("beamStep", () => {
  it("counts a sequence reached from identical beams once, and reports an ending only if it ranks above the last that goes on", () => {
    const same = { decode: decode([], []), logits: logits({ 1: 0, 2: -1, 3: -2, [EOS]: -3 }), logNorm: 0 };
    const { next, ended } = beamStep([same, same, same], EOS);
    expect(next.map((c) => c.token)).toEqual([1, 2, 3]);
    expect(ended).toEqual([]);
    const early = { decode: decode([], []), logits: logits({ [EOS]: 0, 1: -1, 2: -2 }), logNorm: 0 };
    expect(beamStep([early, early], EOS).ended.map((c) => c.token)).toEqual([EOS]);
  });

  it("scores by the whole sequence, whichever beam it extends", () => {
    // Token 6 is likelier than token 4, but its sequence is not.
    const strong = { decode: decode([1], [-0.1]), logits: logits({ 4: -1, 5: -3 }), logNorm: 0 };
    const weak = { decode: decode([2], [-2]), logits: logits({ 6: 0, 7: -0.5 }), logNorm: 0 };
    const { next } = beamStep([strong, weak], EOS);
    expect(next.map((c) => [c.source, c.token, c.logprob])).toEqual([
      [0, 4, -1],
      [1, 6, 0],
    ]);
  });
});

describe("topUp", () => {
  it("closes the likeliest unfinished beams until the search has its number of sequences", () => {
    const finished = [decode([1, EOS], [-1, -1])];
    topUp(finished, [decode([2], [-3]), decode([3], [-1])], 2, EOS);
    expect(finished.map((d) => d.generated)).toEqual([
      [1, EOS],
      [3, EOS],
    ]);
  });
});
