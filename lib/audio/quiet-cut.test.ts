import { describe, expect, it } from "vitest";
import { quietCut } from "./quiet-cut.ts";

const RATE = 16_000;

/** A 440 Hz tone over `seconds`, silent wherever `quiet` says. */
function toneWithGaps(seconds: number, quiet: (t: number) => boolean): Float32Array {
  const samples = new Float32Array(seconds * RATE);
  for (let i = 0; i < samples.length; i++) if (!quiet(i / RATE)) samples[i] = 0.5 * Math.sin((2 * Math.PI * 440 * i) / RATE);
  return samples;
}

/** A tone with no silence, whose 27-27.5 s stretch is scaled by `gain`. */
function toneWithDip(gain: number): Float32Array {
  const samples = toneWithGaps(30, () => false);
  for (let i = 27 * RATE; i < 27.5 * RATE; i++) samples[i]! *= gain;
  return samples;
}

describe("quietCut", () => {
  it("cuts inside the pause in the last seconds of the window", () => {
    const samples = toneWithGaps(30, (t) => t >= 26.4 && t < 26.9);
    const cut = quietCut(samples, RATE) / RATE;
    expect(cut).toBeGreaterThan(26.4);
    expect(cut).toBeLessThan(26.9);
  });

  it("ignores pauses before the searched stretch", () => {
    const samples = toneWithGaps(30, (t) => (t >= 10 && t < 12) || (t >= 28 && t < 28.3));
    const cut = quietCut(samples, RATE) / RATE;
    expect(cut).toBeGreaterThan(28);
    expect(cut).toBeLessThan(28.3);
  });

  it("takes a stretch 20 dB down as a pause when there is no silence", () => {
    const cut = quietCut(toneWithDip(0.1), RATE) / RATE;
    expect(cut).toBeGreaterThan(27);
    expect(cut).toBeLessThan(27.5);
  });

  it("keeps the whole window when nothing in its last seconds is a pause", () => {
    const samples = toneWithDip(0.5);
    expect(quietCut(samples, RATE)).toBe(samples.length);
  });

  it("keeps a window too short to search whole", () => {
    expect(quietCut(new Float32Array(100), RATE)).toBe(100);
  });

  it("returns a whole sample index within the window", () => {
    const samples = toneWithGaps(30, (t) => t > 29.95);
    const cut = quietCut(samples, RATE);
    expect(Number.isInteger(cut)).toBe(true);
    expect(cut).toBeLessThanOrEqual(samples.length);
  });
});
