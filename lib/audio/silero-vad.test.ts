import { readdirSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { readPcm } from "./ffmpeg.ts";
import { chords, noise } from "../../tools/audio/synth.ts";
import { initialCarry, runSilero } from "./silero-vad.ts";
import type { SpeechDetection } from "./speech-regions.ts";
import { windowSource } from "./windows.ts";

const RATE = 16_000;
const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const audioDir = join(sharedDir, "audio");
const clips = ["jfk", "librispeech-mini", "ljspeech-coqui"].flatMap((set) =>
  existsSync(join(audioDir, set))
    ? readdirSync(join(audioDir, set))
        .filter((f) => f.endsWith(".wav"))
        .sort()
        .map((f) => join(audioDir, set, f))
    : [],
);

async function* chunked(samples: Float32Array): AsyncIterable<Float32Array> {
  for (let i = 0; i < samples.length; i += 8_000) yield samples.slice(i, i + 8_000);
}

/** Every window Silero VAD makes of the stream, as [start, end) seconds of the file per piece. */
async function speech(
  pcm: AsyncIterable<Float32Array>,
  readAheadWindows = 1,
  detection?: SpeechDetection,
): Promise<{ regions: [number, number][]; windows: [number, number][][]; seconds: number }> {
  const source = windowSource("silero", pcm, { sampleRate: RATE, windowSamples: 30 * RATE, readAheadSamples: readAheadWindows * 30 * RATE, detection });
  const windows: [number, number][][] = [];
  for (let w; (w = await source.next()); ) windows.push(w.pieces.map((p) => [p.start / RATE, (p.start + p.samples.length) / RATE]));
  await source.close();
  return { regions: windows.flat(), windows, seconds: source.position / RATE };
}

/** From the first to the last 10 ms frame within 30 dB of the clip's loudest: where its speech is. */
function voicedSpan(samples: Float32Array): [number, number] {
  const frame = RATE / 100;
  const rms: number[] = [];
  for (let i = 0; i + frame <= samples.length; i += frame) {
    let sum = 0;
    for (let j = i; j < i + frame; j++) sum += samples[j]! * samples[j]!;
    rms.push(Math.sqrt(sum / frame));
  }
  const floor = Math.max(...rms) / 31.6;
  let last = rms.length - 1;
  while (last > 0 && rms[last]! <= floor) last--;
  return [rms.findIndex((r) => r > floor) / 100, (last + 1) / 100];
}

const covered = (regions: [number, number][], [from, to]: [number, number]) => regions.reduce((n, [a, b]) => n + Math.max(0, Math.min(b, to) - Math.max(a, from)), 0);

describe("Silero VAD on real speech and on non-speech", () => {
  it.skipIf(clips.length === 0)("finds the shared speech clips as speech from their first to their last word", async () => {
    let voiced = 0;
    let found = 0;
    for (const clip of clips) {
      const samples = await readPcm(clip);
      const span = voicedSpan(samples);
      const { regions } = await speech(chunked(samples));
      const recall = covered(regions, span) / (span[1] - span[0]);
      expect(recall, clip).toBeGreaterThan(0.95);
      voiced += span[1] - span[0];
      found += covered(regions, span);
    }
    console.log(`speech recall on ${clips.length} shared clips: ${((100 * found) / voiced).toFixed(2)}% of ${voiced.toFixed(1)} s`);
    expect(found / voiced).toBeGreaterThan(0.99);
  });

  it.skipIf(!clips.some((c) => c.endsWith("jfk.wav")))("cuts the pauses out of real speech when a request asks for a short silence", async () => {
    const samples = await readPcm(clips.find((c) => c.endsWith("jfk.wav"))!);
    const total = (regions: [number, number][]) => regions.reduce((n, [a, b]) => n + b - a, 0);
    const asIs = await speech(chunked(samples));
    // "And so, my fellow Americans | ask not | what your country can do for you | ask what ...": its
    // pauses are shorter than the 2 s that end a region by default, longer than 300 ms.
    expect(asIs.regions).toHaveLength(1);
    const cut = await speech(chunked(samples), 1, { minSilenceMs: 300, padMs: 0 });
    expect(cut.regions.length).toBeGreaterThanOrEqual(3);
    expect(total(cut.regions)).toBeLessThan(total(asIs.regions) - 2);
    // What is left is speech: every region lies within the clip's voiced span.
    const span = voicedSpan(samples);
    for (const [a, b] of cut.regions) expect(a >= span[0] - 0.05 && b <= span[1] + 0.05, `${a}-${b}`).toBe(true);
    // Padding brings back the edges of each phrase.
    const padded = await speech(chunked(samples), 1, { minSilenceMs: 300, padMs: 150 });
    expect(padded.regions).toHaveLength(cut.regions.length);
    expect(total(padded.regions)).toBeGreaterThan(total(cut.regions));
  });

  it("finds no speech in white, pink or brown noise, music-like chords or silence", async () => {
    const cases: [string, Float32Array][] = [
      ["white noise", noise("white", 60, { seed: 1 })],
      ["pink noise", noise("pink", 60, { seed: 2 })],
      ["brown noise", noise("brown", 60, { seed: 3 })],
      ["chords", chords(60)],
      ["silence", new Float32Array(60 * RATE)],
    ];
    let total = 0;
    let falseSpeech = 0;
    for (const [name, samples] of cases) {
      const { regions, seconds } = await speech(chunked(samples));
      const found = covered(regions, [0, seconds]);
      console.log(`${name}: ${found.toFixed(2)} s of ${seconds} s taken for speech`);
      expect(found, name).toBe(0);
      total += seconds;
      falseSpeech += found;
    }
    console.log(`false-speech rate on generated non-speech: ${((100 * falseSpeech) / total).toFixed(2)}% of ${total} s`);
  });

  it.skipIf(clips.length === 0)("cuts the same windows however far ahead it reads", async () => {
    // All the clips end to end (about 4 min of speech with short pauses), read in odd-sized pieces.
    const all = await Promise.all(clips.map((c) => readPcm(c)));
    const file = new Float32Array(all.reduce((n, a) => n + a.length, 0));
    all.reduce((at, a) => (file.set(a, at), at + a.length), 0);
    const near = await speech(chunked(file), 1);
    const far = await speech(chunked(file), 7);
    expect(far.windows).toEqual(near.windows);
    expect(near.windows.length).toBeGreaterThan(6);
    // Continuous speech is cut in its pauses into nearly full windows.
    const lengths = near.windows.slice(0, -1).map((w) => w.reduce((n, [a, b]) => n + b - a, 0));
    expect(lengths.reduce((a, b) => a + b, 0) / lengths.length).toBeGreaterThan(24);
  });

  it.skipIf(clips.length === 0)("keeps the speech around 40 s of -20 dBFS noise and the file's own times", async () => {
    const jfk = await readPcm(clips.find((c) => c.endsWith("jfk.wav"))!);
    const gap = noise("white", 40, { rms: 0.1 });
    const file = new Float32Array(2 * jfk.length + gap.length);
    file.set(jfk);
    file.set(gap, jfk.length);
    file.set(jfk, jfk.length + gap.length);
    const { regions, seconds } = await speech(chunked(file));
    const first = jfk.length / RATE;
    const second = first + 40;
    expect(seconds).toBeCloseTo(file.length / RATE, 3);
    // Padding (0.4 s) reaches a little into the noise, in 32 ms steps.
    expect(covered(regions, [first + 1, second - 1])).toBe(0);
    const [from, to] = voicedSpan(jfk);
    expect(covered(regions, [from, to])).toBeGreaterThan(0.95 * (to - from));
    expect(covered(regions, [second + from, second + to])).toBeGreaterThan(0.95 * (to - from));
  });
});

describe("Silero blocks of several files on one thread", () => {
  it("a short block arriving during a long one is done first, and each comes out as it would alone", async () => {
    const long = noise("pink", 60, { rms: 0.1, seed: 3 });
    const short = noise("white", 5, { rms: 0.1, seed: 4 });
    const aloneLong = await runSilero(long, initialCarry());
    const aloneShort = await runSilero(short, initialCarry());
    const finished: string[] = [];
    const longRun = runSilero(long, initialCarry()).then((r) => (finished.push("long"), r));
    // Into the long block's steps, as a clip's first block arrives behind a long file's.
    await new Promise((r) => setTimeout(r, 5));
    const shortRun = runSilero(short, initialCarry()).then((r) => (finished.push("short"), r));
    const [together, shortTogether] = await Promise.all([longRun, shortRun]);
    expect(finished).toEqual(["short", "long"]);
    expect(together.probs).toEqual(aloneLong.probs);
    expect(shortTogether.probs).toEqual(aloneShort.probs);
    expect(together.carry).toEqual(aloneLong.carry);
  });
});
