import { describe, expect, it } from "vitest";
import { assembleSegments } from "./segments.ts";

// A vocabulary small enough to read: text tokens below EOS, specials up to TS, timestamps from TS in 0.02 s steps.
const EOS = 10;
const SOT = 11;
const TS = 20;
const at = (seconds: number) => TS + Math.round(seconds / 0.02);
const decode = (tokens: number[]) => tokens.map((t) => ` w${t}`).join("");
const assemble = (generated: number[]) =>
  assembleSegments(
    generated,
    generated.map(() => -0.1),
    TS,
    EOS,
    decode,
  ).map(({ start, end, text }) => ({ start, end, text }));

describe("assembleSegments", () => {
  it("cuts at timestamp pairs and leaves the last opened segment open", () => {
    expect(assemble([at(0), 1, 2, at(1.5), at(1.5), 3, at(2), at(2), 4])).toEqual([
      { start: 0, end: 1.5, text: " w1 w2" },
      { start: 1.5, end: 2, text: " w3" },
      { start: 2, end: null, text: " w4" },
    ]);
  });

  it("starts text that follows a special token after a closing timestamp at that timestamp, not back at the window's start", () => {
    const segments = assemble([at(29.9), 5, at(29.98), at(29.98), 6, at(30), SOT, 7, 8, EOS]);
    expect(segments.at(-1)).toEqual({ start: 30, end: null, text: " w7 w8" });
    expect(segments.map((s) => s.start)).toEqual([29.9, 29.98, 30]);
  });

  it("starts text without any timestamp at the window's start", () => {
    expect(assemble([1, 2, EOS])).toEqual([{ start: 0, end: null, text: " w1 w2" }]);
  });
});
