import { describe, expect, it } from "vitest";
import type { WindowChunk } from "./protocol.ts";
import { alignWords, dtw, medianFilter, splitWords, wordsBySegment } from "./word-timing.ts";

const EOS = 100;
const TS = 101;
const SPELLING: Record<number, string> = { 1: " alpha", 2: " bra", 3: "vo", 4: ".", 5: " charlie" };
const decode = (tokens: number[]) => tokens.map((t) => SPELLING[t] ?? "").join("");

/** Two heads over 5 s (250 positions); a row attends to [from, to) and barely elsewhere. */
function row(from: number, to: number, frames = 250, heads = 2): Float32Array {
  const out = new Float32Array(heads * frames).fill(1e-4);
  for (let h = 0; h < heads; h++) for (let f = from; f < to; f++) out[h * frames + f] = 0.5 + 0.1 * h;
  return out;
}
const uniform = (frames = 250, heads = 2) => new Float32Array(heads * frames).fill(1 / frames);

describe("word alignment (Whisper's timing.py)", () => {
  // <|0.40|> alpha bra vo . charlie <|4.00|> <|endoftext|>, each row the one that predicted the token.
  const generated = [TS + 20, 1, 2, 3, 4, 5, TS + 200, EOS];
  const rows = [uniform(), uniform(), row(20, 60), row(80, 100), row(100, 120), row(120, 125), row(150, 200), row(200, 250), uniform()];
  const attention = { heads: 2, frames: 250, rows, initialRows: 1 };

  it("starts each word where the DTW path reaches its first token and ends it where the next word starts", () => {
    const words = alignWords(generated, attention, EOS, decode);
    expect(words.map((w) => w.word)).toEqual([" alpha", " bravo", ".", " charlie"]);
    // Through a pause every token fits equally: the path moves on as the pause begins.
    expect(words.map((w) => [w.start, w.end])).toEqual([
      [0, 1.2],
      [1.2, 2.4],
      [2.4, 2.5],
      [2.5, 4],
    ]);
  });

  it("merges punctuation into the word before it and keeps words inside their segment", () => {
    const words = alignWords(generated, attention, EOS, decode);
    const chunk: WindowChunk = {
      start: 0.4,
      end: 4,
      text: " alpha bravo. charlie",
      tokens: generated.slice(0, 7),
      textTokens: [1, 2, 3, 4, 5].map((id) => ({ id, text: decode([id]), logprob: 0 })),
    };
    expect(wordsBySegment([chunk], words, 5)).toEqual([
      [
        { word: " alpha", start: 0.4, end: 1.2 },
        { word: " bravo.", start: 1.2, end: 2.4 },
        { word: " charlie", start: 2.5, end: 4 },
      ],
    ]);
  });

  it("lets a word run to the audio's end when decoding stopped on a text token", () => {
    const words = alignWords([TS, 1, 5], { heads: 2, frames: 250, rows: [uniform(), uniform(), row(0, 100), row(100, 250)], initialRows: 1 }, EOS, decode);
    expect(words.map((w) => [w.word, w.start, w.end])).toEqual([
      [" alpha", 0, 2],
      [" charlie", 2, 5],
    ]);
  });

  it("ignores positions past the audio: frames is all the alignment sees", () => {
    expect(
      alignWords([TS, 1, EOS], { heads: 1, frames: 10, rows: [uniform(10, 1), uniform(10, 1), row(0, 5, 10, 1)], initialRows: 1 }, EOS, decode).at(-1)!.end,
    ).toBeLessThanOrEqual(0.2);
  });

  it("splits words at spaces and punctuation and keeps a multi-byte character whole", () => {
    const bytes: Record<number, string> = { 1: " caf", 2: "\ufffd", 3: ",", 4: " ok" };
    const dec = (t: number[]) => (t.join() === "2,3" ? "é," : t.map((x) => bytes[x]).join(""));
    expect(splitWords([1, 4, 3], dec)).toEqual([
      { word: " caf", tokens: [1] },
      { word: " ok", tokens: [4] },
      { word: ",", tokens: [3] },
    ]);
    expect(splitWords([1, 2, 3], dec)).toEqual([{ word: " café,", tokens: [1, 2, 3] }]);
  });

  it("makes every character a word in a language written without spaces, a split character still whole", () => {
    const pieces: Record<number, string> = { 1: "日", 2: "本", 3: "\ufffd", 4: "。" };
    const dec = (t: number[]) => (t.join() === "3,4" ? "語。" : t.map((x) => pieces[x]).join(""));
    for (const language of ["ja", "zh", "th", "yue"]) {
      expect(splitWords([1, 2, 3, 4], dec, language), language).toEqual([
        { word: "日", tokens: [1] },
        { word: "本", tokens: [2] },
        { word: "語。", tokens: [3, 4] },
      ]);
    }
    // Written with spaces, or an English-only model (no language): one word until a space.
    expect(splitWords([1, 2], dec, "de")).toEqual([{ word: "日本", tokens: [1, 2] }]);
    expect(splitWords([1, 2], dec)).toEqual([{ word: "日本", tokens: [1, 2] }]);
  });

  it("has Whisper's median filter (reflected edges) and DTW path", () => {
    expect(Array.from(medianFilter(Float64Array.from([3, 1, 4, 1, 5, 9, 2, 6]), 3))).toEqual([1, 3, 1, 4, 5, 5, 6, 2]);
    const path = dtw([Float64Array.from([1, 1, 0, 0]), Float64Array.from([0, 0, 1, 1])], 4);
    // Worked by hand through timing.py's dtw: at (1, 1) the step from above is strictly cheapest.
    expect(path).toEqual({ tokenIndex: [0, 0, 1, 1, 1], timeIndex: [0, 1, 1, 2, 3] });
  });
});
