import { existsSync } from "node:fs";
import { join } from "node:path";
import { WhisperFeatureExtractor, type Tensor } from "@huggingface/transformers";
import { describe, expect, it } from "vitest";
import { sharedDir } from "../../tools/models/generate.ts";
import { decodeToPcm } from "./ffmpeg.ts";
import { useFastLogMel } from "../engine/feature-extractor.ts";
import { ComplexFft, RealPowerSpectrum } from "./log-mel.ts";
import { synthesize } from "../../tools/audio/synth.ts";

function naiveDft(re: Float64Array, im: Float64Array): { re: Float64Array; im: Float64Array } {
  const n = re.length;
  const out = { re: new Float64Array(n), im: new Float64Array(n) };
  for (let k = 0; k < n; k++) {
    for (let j = 0; j < n; j++) {
      const a = (-2 * Math.PI * ((j * k) % n)) / n;
      out.re[k]! += re[j]! * Math.cos(a) - im[j]! * Math.sin(a);
      out.im[k]! += re[j]! * Math.sin(a) + im[j]! * Math.cos(a);
    }
  }
  return out;
}

let seed = 7;
const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;

/** The library's own extractor, as the pipeline builds it from the published preprocessor config. */
const config = { feature_size: 80, hop_length: 160, n_fft: 400, n_samples: 480000, nb_max_frames: 3000, sampling_rate: 16000 };
const library = new WhisperFeatureExtractor(config);
const fast = new WhisperFeatureExtractor(config);
expect(useFastLogMel(fast)).toBe(true);

async function features(extractor: WhisperFeatureExtractor, audio: Float32Array, maxLength?: number): Promise<Tensor> {
  return ((await extractor(audio, { max_length: maxLength } as never)) as { input_features: Tensor }).input_features;
}
async function compare(audio: Float32Array, maxLength?: number): Promise<number> {
  const [ours, theirs] = [await features(fast, audio, maxLength), await features(library, audio, maxLength)];
  expect(ours.dims).toEqual(theirs.dims);
  return maxDifference(ours.data as Float32Array, theirs.data as Float32Array);
}
function maxDifference(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

describe("FFT", () => {
  it.each([1, 2, 3, 4, 5, 12, 60, 200, 400])("matches the direct DFT for %i points", (n) => {
    const re = Float64Array.from({ length: n }, random);
    const im = Float64Array.from({ length: n }, random);
    const expected = naiveDft(re, im);
    const outRe = new Float64Array(n);
    const outIm = new Float64Array(n);
    new ComplexFft(n).transform(re, im, outRe, outIm);
    for (let k = 0; k < n; k++) {
      expect(outRe[k]).toBeCloseTo(expected.re[k]!, 9);
      expect(outIm[k]).toBeCloseTo(expected.im[k]!, 9);
    }
  });

  it("refuses a length with a prime factor above 5", () => {
    expect(() => new ComplexFft(14)).toThrow(/prime factors/);
  });

  it("gives the power spectrum of a real frame", () => {
    const frame = Float64Array.from({ length: 400 }, random);
    const full = naiveDft(frame, new Float64Array(400));
    const out = new Float32Array(201);
    new RealPowerSpectrum(400).compute(frame, out, 0);
    for (let k = 0; k <= 200; k++) expect(out[k]).toBeCloseTo(Math.fround(full.re[k]! ** 2 + full.im[k]! ** 2), 3);
  });
});

describe("log-mel features agree with transformers.js's WhisperFeatureExtractor", () => {
  const cases: [string, () => Float32Array][] = [
    ["white noise", () => Float32Array.from({ length: 480000 }, () => random() * 0.3)],
    ["tones with silence between them", () => synthesize([{ tone: 440, seconds: 8 }, { silence: 4 }, { tone: 2500, seconds: 10, amplitude: 0.05 }, { silence: 8 }])],
    ["a 5 s clip padded to the window", () => synthesize([{ tone: 300, seconds: 5 }])],
    ["a quiet tone", () => synthesize([{ tone: 1000, seconds: 30, amplitude: 0.002 }])],
  ];
  it.each(cases)("%s", async (_name, make) => {
    expect(await compare(make())).toBeLessThan(1e-5);
  });

  it("a shorter max_length, as a caller may ask the extractor for", async () => {
    const audio = synthesize([{ tone: 700, seconds: 12 }]);
    expect(await compare(audio, 16000 * 10)).toBeLessThan(1e-5);
  });

  it("leaves other extractors alone", () => {
    expect(useFastLogMel({ window: new Float64Array(400) })).toBe(false);
  });

  it("speech (the jfk clip)", async (ctx) => {
    const path = join(sharedDir(), "audio", "jfk", "jfk.wav");
    if (!existsSync(path)) ctx.skip();
    const parts: Float32Array[] = [];
    for await (const chunk of decodeToPcm(path)) parts.push(chunk);
    const audio = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) audio.set(p, (at += p.length) - p.length);
    expect(audio.length).toBeGreaterThan(16000 * 10);
    expect(await compare(audio)).toBeLessThan(1e-5);
  });
});
