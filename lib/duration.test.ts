import { describe, expect, it } from "vitest";
import { parseDuration } from "./duration.ts";

describe("parseDuration", () => {
  it.each([
    ["0s", 0],
    ["250ms", 250],
    ["5s", 5_000],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["1d", 86_400_000],
    ["1.5h", 5_400_000],
    ["1h30m", 5_400_000],
    ["1m500ms", 60_500],
    ["  10s ", 10_000],
    ["0.0005s", 1],
  ])("reads %j as %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(["", "   ", "30", "5", "5x", "s", "-5s", "5 s", "5S", "1h 30m", "5s,", ".5s", "1e3ms", "5sec"])("refuses %j", (text) => {
    expect(() => parseDuration(text)).toThrow(/Invalid duration/);
  });

  it("refuses durations beyond the safe integer range", () => {
    expect(() => parseDuration("999999999999999999d")).toThrow(/too large/);
  });
});
