import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Limiter } from "../admission/limiter.ts";
import { synthesize } from "../../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { MICRO_TONES, microTones, type MicroPart } from "../../tools/models/micro.ts";
import { Engine, type WindowCall } from "./engine.ts";
import type { ModelSpec, WindowChunk, WindowOptions, WindowOutput } from "./protocol.ts";
import { SAMPLE_RATE, transcribePcm } from "./transcribe.ts";

// The micro model names the tone that dominates each window, so every word here fills most of one.
const WORD_SECONDS = 27;
const GAP_SECONDS = 1.5;
const WORDS = [...MICRO_TONES.map((t) => t.word), "alpha" as const];
const PARTS: MicroPart[] = WORDS.flatMap((word) => [{ word, seconds: WORD_SECONDS }, { silence: GAP_SECONDS }]);

async function* chunked(samples: Float32Array): AsyncIterable<Float32Array> {
  for (let i = 0; i < samples.length; i += 8_000) yield samples.slice(i, i + 8_000);
}

describe("transcribePcm", () => {
  let engine: Engine;
  let spec: ModelSpec;
  let audio: Float32Array;
  let inFlight = 0;
  let maxInFlight = 0;
  beforeAll(async () => {
    spec = { id: (await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR })).id, dtype: "q8" };
    engine = new Engine({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1 });
    const transcribeWindow = engine.transcribeWindow.bind(engine);
    engine.transcribeWindow = async (...args) => {
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      try {
        return await transcribeWindow(...args);
      } finally {
        inFlight--;
      }
    };
    audio = synthesize(microTones(PARTS));
  });
  afterAll(() => engine.close());

  const run = (parallelWindows: number, signal?: AbortSignal) =>
    transcribePcm({
      engine,
      compute: new Limiter({ permits: 2, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 1 }),
      model: spec,
      pcm: chunked(audio),
      // The micro model's "speech" is pure tones, which Silero rightly ignores.
      vad: "energy",
      task: "transcribe",
      parallelWindows,
      signal,
    });

  it("decodes a long file's windows at once in one batch and joins them in order, no word lost at a seam", async () => {
    maxInFlight = 0;
    const transcript = await run(2);
    expect(maxInFlight).toBe(2);
    expect(transcript.segments.map((s) => s.text.trim())).toEqual(WORDS);
    expect(transcript.duration).toBeCloseTo(audio.length / SAMPLE_RATE, 1);
    // Each window ended in a pause, so each word's segment is where it was spoken.
    transcript.segments.forEach((segment, i) => {
      const spoken = i * (WORD_SECONDS + GAP_SECONDS);
      expect(segment.id).toBe(i);
      expect(Math.abs(segment.start - spoken)).toBeLessThan(0.1);
      expect(Math.abs(segment.end - (spoken + WORD_SECONDS))).toBeLessThan(0.1);
    });
  });

  it("has files at once share the windows beyond each one's first, and gives each the transcript it has alone", async () => {
    const extraWindows = new Limiter({ permits: 1, queueSize: 0, queueTimeoutMs: 0, retryAfterSeconds: () => 1 });
    const compute = new Limiter({ permits: 8, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 1 });
    const file = () => transcribePcm({ engine, compute, model: spec, pcm: chunked(audio), vad: "energy", task: "transcribe", parallelWindows: 3, extraWindows });
    maxInFlight = 0;
    const together = await Promise.all([file(), file(), file()]);
    // Each file's first window, and the one extra: not three windows each.
    expect(maxInFlight).toBe(4);
    expect(extraWindows.stats.inUse).toBe(0);
    const alone = await run(1);
    for (const transcript of together) expect(transcript).toEqual(alone);
  });

  it("gives the same transcript one window at a time", async () => {
    maxInFlight = 0;
    const [one, two] = [await run(1), await run(2)];
    expect(maxInFlight).toBe(2);
    expect(one).toEqual(two);
  });

  it("stops every window of the file when it is aborted, and leaves no window running", async () => {
    const abort = new AbortController();
    const pending = run(2, abort.signal);
    await new Promise((r) => setTimeout(r, 50));
    abort.abort(new Error("client went away"));
    await expect(pending).rejects.toThrow("client went away");
    await expect.poll(() => engine.inFlight, { timeout: 60_000 }).toBe(0);
    // A row canceled inside a decoder call leaves its cohort when that call returns.
    await expect.poll(async () => (await engine.stats()).activeRows, { timeout: 60_000 }).toBe(0);
  });
});

/**
 * A stand-in for the engine whose transcript is a known function of the audio, like Whisper's: each
 * voiced run is a segment named by its amplitude, and a run still voiced at the end of the window is
 * left open (end null), as Whisper leaves a segment that speech runs on past.
 */
class RunReader {
  calls = 0;
  /** The language each window was decoded in; the windows that identified it, and when. */
  readonly decodedIn: (string | undefined)[] = [];
  readonly identifiedFrom: Float32Array[] = [];
  readonly events: string[] = [];
  /** Whether each window, in the order sent, said another follows at once. */
  readonly followed: boolean[] = [];

  constructor(private readonly heard: string | null = null) {}

  async transcribeWindow(_model: ModelSpec, samples: Float32Array, options: WindowOptions, { onLanguage, followed }: WindowCall = {}): Promise<WindowOutput> {
    const call = this.calls++;
    this.followed.push(followed ?? false);
    this.events.push(`start ${call}`);
    let language = options.language;
    if (language === undefined && this.heard) {
      this.identifiedFrom.push(samples);
      await new Promise((r) => setTimeout(r, 5));
      language = this.heard;
      onLanguage?.(language);
      await new Promise((r) => setTimeout(r, 30));
    } else {
      await new Promise((r) => setTimeout(r, 5));
    }
    this.decodedIn.push(language);
    this.events.push(`end ${call}`);
    const chunks: WindowChunk[] = [];
    let runStart = -1;
    for (let i = 0; i <= samples.length; i++) {
      const voiced = i < samples.length && Math.abs(samples[i]!) > 0.01;
      if (voiced && runStart < 0) runStart = i;
      if (!voiced && runStart >= 0) {
        chunks.push({
          start: runStart / SAMPLE_RATE,
          end: i === samples.length ? null : i / SAMPLE_RATE,
          text: ` w${Math.round(Math.abs(samples[runStart]!) * 10)}`,
          tokens: [],
          textTokens: [],
        });
        runStart = -1;
      }
    }
    return { chunks, language: language ?? null, temperature: 0, avgLogprob: -0.2, compressionRatio: 1, noSpeechProb: 0 };
  }
}

describe("transcribePcm seams", () => {
  // Words as [seconds, amplitude/10], 1 s apart. The 14 s word runs through the 30 s mark with no
  // pause in the window's last seconds, so that window is cut at 30 s and left open.
  const words: [number, number][] = [
    [5, 1],
    [9, 2],
    [14, 3],
    [6, 4],
    [3, 5],
    [20, 6],
    [4, 7],
    [8, 8],
    [2, 9],
  ];
  const audio = (() => {
    const parts: Float32Array[] = [];
    for (const [seconds, level] of words) {
      const word = new Float32Array(seconds * SAMPLE_RATE);
      for (let i = 0; i < word.length; i++) word[i] = i % 2 ? level / 10 : -level / 10;
      parts.push(word, new Float32Array(SAMPLE_RATE));
    }
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
    return all;
  })();
  const run = (engine: RunReader, parallelWindows: number, pcm = audio, language: string | null = "en") =>
    transcribePcm({
      engine,
      compute: new Limiter({ permits: 2, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 1 }),
      model: { id: "run-reader", dtype: "q8" },
      pcm: chunked(pcm),
      vad: "energy",
      language: language ?? undefined,
      task: "transcribe",
      parallelWindows,
    });

  it("decodes again from an open segment, so a word running past a cut comes out once and whole", async () => {
    const transcript = await run(new RunReader(), 1);
    let at = 0;
    const expected = words.map(([seconds, level]) => {
      const segment = { text: `w${level}`, start: at, end: at + seconds };
      at += seconds + 1;
      return segment;
    });
    expect(transcript.segments.map((s) => ({ text: s.text.trim(), start: s.start, end: s.end }))).toEqual(expected);
  });

  it("drops the windows started at a false seam and gives the same transcript with windows in flight at once", async () => {
    const one = new RunReader();
    const two = new RunReader();
    const [sequential, parallel] = [await run(one, 1), await run(two, 2)];
    expect(parallel).toEqual(sequential);
    // The window after the open one was decoded and dropped, then decoded again from the open segment.
    expect(two.calls).toBeGreaterThan(one.calls);
  });

  it("identifies an unknown language once, in the first voiced window, and starts the next windows as soon as it is heard", async () => {
    // 31 s of silence first: the first window is skipped, so the second (voiced) one identifies.
    const silence = new Float32Array(31 * SAMPLE_RATE);
    const withLeadingSilence = new Float32Array(silence.length + audio.length);
    withLeadingSilence.set(audio, silence.length);
    const engine = new RunReader("fr");
    const transcript = await run(engine, 2, withLeadingSilence, null);
    expect(engine.identifiedFrom).toHaveLength(1);
    expect(engine.identifiedFrom[0]!.some((s) => s !== 0)).toBe(true);
    expect(engine.decodedIn.length).toBeGreaterThan(1);
    expect(new Set(engine.decodedIn)).toEqual(new Set(["fr"]));
    expect(engine.events.indexOf("start 1")).toBeLessThan(engine.events.indexOf("end 0"));
    expect(transcript.language).toBe("french");
  });

  it("says a window that more audio follows is followed by another, and the stream's last is not", async () => {
    const engine = new RunReader();
    await run(engine, 3);
    expect(engine.followed.length).toBeGreaterThan(2);
    expect(engine.followed[0]).toBe(true);
    expect(engine.followed.at(-1)).toBe(false);
  });

  it("says no window is followed when one at a time is in flight: the next is read only once it is decoded", async () => {
    const engine = new RunReader();
    await run(engine, 1);
    expect(engine.followed.length).toBeGreaterThan(2);
    expect(new Set(engine.followed)).toEqual(new Set([false]));
  });

  it("identifies nothing when the language is given", async () => {
    const engine = new RunReader("fr");
    const transcript = await run(engine, 2);
    expect(engine.identifiedFrom).toHaveLength(0);
    expect(new Set(engine.decodedIn)).toEqual(new Set(["en"]));
    expect(transcript.language).toBe("english");
  });
});
