import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Limiter } from "../admission/limiter.ts";
import { decodeToPcm } from "../audio/ffmpeg.ts";
import { noise, synthesize } from "../../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { MICRO_TONES, microTones } from "../../tools/models/micro.ts";
import { Engine } from "./engine.ts";
import type { ModelSpec, WindowOutput } from "./protocol.ts";
import { SAMPLE_RATE, transcribePcm, type TranscribeParams } from "./transcribe.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const jfkPath = join(sharedDir, "audio", "jfk", "jfk.wav");

async function* chunked(samples: Float32Array): AsyncIterable<Float32Array> {
  for (let i = 0; i < samples.length; i += 8_000) yield samples.slice(i, i + 8_000);
}

function join2(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

async function readAll(path: string): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for await (const p of decodeToPcm(path)) parts.push(p);
  return join2(...parts);
}

const compute = (slots: number) => new Limiter({ permits: slots, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 1 });

// One engine with the micro model for the whole file: it loads in a moment and keeps no state between tests.
let engine: Engine;
let spec: ModelSpec;
beforeAll(async () => {
  spec = { id: (await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR })).id, dtype: "q8" };
  engine = new Engine({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1 });
});
afterAll(() => engine.close());

describe("windows on the file's timeline", () => {
  const aroundSilence = () => synthesize(microTones([{ word: "alpha", seconds: 10 }, { silence: 40 }, { word: "bravo", seconds: 5 }]));

  it("keeps each word where it was spoken around 40 s of silence (VAD=energy: windows start just before the sound)", async () => {
    const transcript = await transcribePcm({ engine, compute: compute(2), model: spec, pcm: chunked(aroundSilence()), vad: "energy", task: "transcribe", parallelWindows: 2 });
    expect(transcript.segments.map((s) => [s.text.trim(), s.start, s.end])).toEqual([
      ["alpha", 0, 10],
      ["bravo", 50, 55],
    ]);
  });

  it("with VAD=off decodes the silence as Whisper's transcribe() does: the segment after it starts at most 1 s into its window", async () => {
    const transcript = await transcribePcm({ engine, compute: compute(2), model: spec, pcm: chunked(aroundSilence()), vad: "off", task: "transcribe", parallelWindows: 2 });
    const [alpha, bravo] = transcript.segments;
    expect(transcript.segments.map((s) => s.text.trim())).toEqual(["alpha", "bravo"]);
    expect([alpha!.start, alpha!.end, bravo!.end]).toEqual([0, 10, 55]);
    // The first window ends in the silence, within Whisper's 30 s; the second starts there.
    expect(bravo!.start).toBeGreaterThanOrEqual(25);
    expect(bravo!.start).toBeLessThanOrEqual(31);
  });

  it.skipIf(!existsSync(jfkPath))("sends Whisper only the speech, and maps its times back across the noise removed (VAD=silero)", async () => {
    const jfk = await readAll(jfkPath);
    const audio = join2(jfk, noise("white", 40, { rms: 0.1 }), jfk);
    const windows: number[] = [];
    // Whisper's stand-in: a segment 0.5-5 s into the window and one ending 0.5 s before its end.
    const fake = {
      async transcribeWindow(_m: ModelSpec, samples: Float32Array): Promise<WindowOutput> {
        const seconds = samples.length / SAMPLE_RATE;
        windows.push(seconds);
        return {
          language: "en",
          chunks: [
            { start: 0.5, end: 5, text: " first", tokens: [], textTokens: [] },
            { start: seconds - 5, end: seconds - 0.5, text: " second", tokens: [], textTokens: [] },
          ],
          temperature: 0,
          avgLogprob: -0.2,
          compressionRatio: 1,
          noSpeechProb: 0,
        };
      },
    };
    const transcript = await transcribePcm({ engine: fake, compute: compute(2), model: spec, pcm: chunked(audio), vad: "silero", language: "en", task: "transcribe" });
    const duration = audio.length / SAMPLE_RATE;
    // Both speeches, with their padding, in one window; the 40 s of noise between them never sent.
    expect(windows).toHaveLength(1);
    expect(windows[0]).toBeLessThan(2 * (jfk.length / SAMPLE_RATE) + 1);
    expect(transcript.duration).toBeCloseTo(duration, 1);
    const [first, second] = transcript.segments;
    expect(first!.start).toBeGreaterThanOrEqual(0.5);
    expect(first!.start).toBeLessThan(1);
    expect(second!.start).toBeCloseTo(duration - 5, 1);
    expect(second!.end).toBeCloseTo(duration - 0.5, 1);
  });
});

describe("silero windows when decoding fails", () => {
  it("reports a stream that fails after its first block, read ahead in the background", async () => {
    async function* failing(): AsyncIterable<Float32Array> {
      for (let i = 0; i < 60; i++) yield noise("white", 1, { rms: 0.01, seed: i });
      throw new Error("truncated input");
    }
    const never = { transcribeWindow: () => Promise.reject(new Error("no speech expected")) };
    await expect(
      transcribePcm({ engine: never, compute: compute(2), model: { id: "none", dtype: "q8" }, pcm: failing(), vad: "silero", language: "en", task: "transcribe" }),
    ).rejects.toThrow("truncated input");
  });
});

describe("silero windows and the engine's batching across jobs", () => {
  it.skipIf(!existsSync(jfkPath))("gives a file the same transcript alone and among other jobs", async () => {
    const jfk = await readAll(jfkPath);
    // Speech that Silero hears, over a quiet tone that the micro model names; noise between.
    const file = (tone: number, gapSeconds: number) => {
      const speech = join2(jfk, jfk, jfk);
      const under = synthesize([{ tone, seconds: speech.length / SAMPLE_RATE, amplitude: 0.05 }]);
      for (let i = 0; i < speech.length; i++) speech[i] = speech[i]! + under[i]!;
      return join2(speech, noise("pink", gapSeconds, { rms: 0.05 }), speech);
    };
    const run = (audio: Float32Array, slots: Limiter): Promise<unknown> => {
      const params: TranscribeParams = { engine, compute: slots, model: spec, pcm: chunked(audio), vad: "silero", task: "transcribe", parallelWindows: 3 };
      return transcribePcm(params);
    };
    const mine = file(MICRO_TONES[2]!.hz, 20);
    const alone = await run(mine, compute(4));
    const shared = compute(4);
    const others = MICRO_TONES.filter((_, i) => i !== 2).map((t, i) => run(file(t.hz, 5 + 7 * i), shared));
    const among = await run(mine, shared);
    await Promise.all(others);
    expect(among).toEqual(alone);
    expect((alone as { segments: unknown[] }).segments.length).toBeGreaterThan(0);
  });
});
