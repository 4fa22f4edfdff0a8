import { describe, expect, it } from "vitest";
import { rates, stepPath } from "./chart.ts";

describe("the status page's chart", () => {
  it("draws readings as steps across the time box, clipping old ones to its left edge", () => {
    const now = 100_000;
    const samples = [
      { at: now - 150_000, value: 1 },
      { at: now - 50_000, value: 2 },
      { at: now - 25_000, value: 0 },
    ];
    expect(stepPath(samples, now, 100_000, 2, 300, 40)).toBe("M0 20H150V0H225V40H300");
    expect(stepPath([{ at: now, value: 9 }], now, 100_000, 2, 300, 40)).toBe("M300 0H300");
    expect(stepPath([], now, 100_000, 2, 300, 40)).toBe("");
  });

  it("turns a running total into rates per second", () => {
    expect(
      rates([
        { at: 0, value: 10 },
        { at: 2000, value: 70 },
        { at: 4000, value: 70 },
      ]),
    ).toEqual([
      { at: 2000, value: 30 },
      { at: 4000, value: 0 },
    ]);
    expect(rates([{ at: 0, value: 5 }])).toEqual([]);
  });
});
