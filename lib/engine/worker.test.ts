/**
 * The engine's own decoding loop against the stock transformers.js pipeline called plainly: at batch 1
 * it must return the pipeline's tokens, times and text; batched fp32 rows must equal their batch-1
 * decoding; concurrent windows never see each other's audio; a canceled window leaves no row.
 */
import { LogitsProcessor, LogitsProcessorList, pipeline, type AutomaticSpeechRecognitionPipeline, type Tensor } from "@huggingface/transformers";
import { describe, expect, it, vi } from "vitest";
import { synthesize, type SynthPart } from "../../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { microTones, STUTTER_TONE, type MicroWord } from "../../tools/models/micro.ts";
import { whisperFeatures } from "../audio/log-mel.ts";
import { WindowCanceled } from "./batch-decoder.ts";
import { GreedyPicker } from "./greedy-picker.ts";
import type { ModelSpec, WindowOutput } from "./protocol.ts";
import { type BatchState, WhisperModel } from "./whisper-model.ts";
import { createInference, type Inference } from "./worker.ts";

interface Chunk {
  timestamp: [number, number | null];
  text: string;
}

const init = { localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1 };

async function stockPipeline(id: string, dtype: "q8" | "fp32"): Promise<AutomaticSpeechRecognitionPipeline> {
  return (await pipeline("automatic-speech-recognition", id, {
    dtype,
    device: "cpu",
    session_options: { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 },
  })) as AutomaticSpeechRecognitionPipeline;
}

/** openai-whisper's sample_len (n_text_ctx // 2): the tokens one decode may sample at most. */
const SAMPLE_LEN = 224;

/**
 * openai's max_initial_timestamp (the first timestamp at most 1.0 s), which generate() reads but never
 * applies: given to the stock pipeline so that where it binds (speech starting later than 1 s into a
 * window) the comparison is still token for token.
 */
class MaxInitialTimestamp extends LogitsProcessor {
  private begin = -1;
  constructor(private readonly timestampBegin: number) {
    super();
  }

  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    for (let i = 0; i < inputIds.length; i++) {
      // The first call sees the initial tokens only: its length is where generation begins.
      if (this.begin < 0) this.begin = inputIds[i]!.length;
      if (inputIds[i]!.length === this.begin) ((logits as unknown as Tensor[])[i]!.data as Float32Array).fill(-Infinity, this.timestampBegin + 50 + 1);
    }
    return logits;
  }
}

async function stockChunks(asr: AutomaticSpeechRecognitionPipeline, samples: Float32Array): Promise<[number, number | null, string][]> {
  const logits_processor = new LogitsProcessorList();
  const { no_timestamps_token_id } = (asr.model as unknown as { generation_config: { no_timestamps_token_id: number } }).generation_config;
  logits_processor.push(new MaxInitialTimestamp(no_timestamps_token_id + 1));
  // The engine's length limit, which the pipeline takes as max_new_tokens (and then decodes the window once, as the engine does).
  const out = (await asr(samples, { return_timestamps: true, max_new_tokens: SAMPLE_LEN, logits_processor } as never)) as { chunks?: Chunk[] };
  return (out.chunks ?? []).filter((c) => c.text.trim()).map((c) => [c.timestamp[0], c.timestamp[1], c.text]);
}

const engineChunks = (out: WindowOutput): [number, number | null, string][] => out.chunks.map((c) => [c.start, c.end, c.text]);

/** A fresh inference thread's state with the generated `kind` model loaded. */
async function loaded(kind: "micro" | "tiny" | "tiny.en", dtype: "q8" | "fp32"): Promise<{ spec: ModelSpec; inference: Inference }> {
  const model = await generateModel({ kind, out: DEFAULT_MODELS_DIR });
  const spec = { id: model.id, dtype };
  const inference = createInference(init);
  await inference.load(spec);
  return { spec, inference };
}

const window = (inference: Inference, spec: ModelSpec, samples: Float32Array, stream = "s", signal?: AbortSignal) =>
  inference.transcribeWindow(stream, { model: spec, samples, options: { task: "transcribe" } }, signal);

/** The micro model says the stutter tone's word until the length limit: a window that decodes long. */
const stutter = () => synthesize(microTones([{ silence: 1 }, { word: STUTTER_TONE.word, seconds: 6 }]));

/**
 * Two windows of "first" decoding well ahead of "second" (their cohort is stepped only once
 * "second" has caught up), then "first" canceled: its rows wait in a cohort not being stepped.
 */
async function firstCanceledWhileSecondCatchesUp() {
  const model = await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR });
  const spec = { id: model.id, dtype: "q8" as const };
  const inference = createInference({ ...init, rows: 3 });
  await inference.load(spec);
  const decoder = inference.decoder;
  const abort = new AbortController();
  const first = [0, 1].map(() => window(inference, spec, stutter(), "first", abort.signal));
  for (const w of first) w.catch(() => undefined);
  await expect.poll(() => decoder.stats.decoderCalls, { interval: 1, timeout: 60_000 }).toBeGreaterThan(40);
  const second = window(inference, spec, stutter(), "second");
  await expect.poll(() => decoder.stats.activeRows, { interval: 1, timeout: 60_000 }).toBe(3);
  abort.abort();
  await expect(first[0]).rejects.toBeInstanceOf(WindowCanceled);
  return { spec, inference, decoder, second };
}

const faithful: [string, SynthPart[]][] = [
  ["a fully voiced window", [{ tone: 440, seconds: 30 }]],
  ["a tone between silences", [{ silence: 4 }, { tone: 1000, seconds: 12 }, { silence: 14 }]],
  ["tones of different loudness with gaps", [{ tone: 200, seconds: 3 }, { silence: 2 }, { tone: 3000, seconds: 6, amplitude: 0.05 }, { silence: 5 }, { tone: 500, seconds: 14 }]],
  ["a 5 s clip", [{ tone: 300, seconds: 5 }]],
];

describe("the engine's decoding loop at batch 1 gives the stock pipeline's transcript", () => {
  for (const dtype of ["q8", "fp32"] as const) {
    it(`with the architecture-faithful tiny.en, ${dtype}`, async () => {
      const { spec, inference } = await loaded("tiny.en", dtype);
      const asr = await stockPipeline(spec.id, dtype);
      for (const [name, parts] of faithful) {
        const samples = synthesize(parts);
        const engine = engineChunks(await window(inference, spec, samples));
        expect(engine, name).toEqual(await stockChunks(asr, samples));
        expect(engine.length, name).toBeGreaterThan(0);
      }
      expect(inference.decoder.stats.largestBatch).toBe(1);
    });
  }

  it("with the micro model, whose output depends on its KV cache", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const asr = await stockPipeline(spec.id, "q8");
    const cases: [string, SynthPart[]][] = [
      ["alpha", microTones([{ word: "alpha", seconds: 8 }])],
      ["delta", microTones([{ silence: 4 }, { word: "delta", seconds: 12 }, { silence: 14 }])],
    ];
    for (const [word, parts] of cases) {
      const samples = synthesize(parts);
      const engine = engineChunks(await window(inference, spec, samples));
      expect(engine).toEqual(await stockChunks(asr, samples));
      expect(engine.map((c) => c[2].trim())).toEqual([word]);
    }
  });

  it("with the micro model on a tone greedy decoding loops on: both stop after openai-whisper's sample_len of tokens", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const asr = await stockPipeline(spec.id, "q8");
    const samples = stutter();
    const out = await inference.transcribeWindow("s", { model: spec, samples, options: { task: "transcribe", temperatures: [0] } });
    expect(engineChunks(out)).toEqual(await stockChunks(asr, samples));
    expect(out.chunks.flatMap((c) => c.tokens)).toHaveLength(SAMPLE_LEN);
  });
});

describe("batched decoding", () => {
  it("decodes fp32 rows in one batch exactly as each alone, and never mixes their audio", async () => {
    const model = await generateModel({ kind: "tiny.en", out: DEFAULT_MODELS_DIR });
    const spec = { id: model.id, dtype: "fp32" as const };
    const alone = createInference(init);
    const inputs = faithful.map(([, parts]) => synthesize(parts));
    const solo: WindowOutput[] = [];
    for (const samples of inputs) solo.push(await window(alone, spec, samples));

    const batched = createInference(init);
    await batched.load(spec);
    const together = await Promise.all(inputs.map((samples) => window(batched, spec, samples)));
    expect(batched.decoder.stats.largestBatch).toBe(inputs.length);
    expect(together).toEqual(solo);
  });

  it("merges cohorts started a few steps apart once the later ones catch up, and decodes each fp32 row exactly as alone", async () => {
    const model = await generateModel({ kind: "tiny.en", out: DEFAULT_MODELS_DIR });
    const spec = { id: model.id, dtype: "fp32" as const };
    const inputs = faithful.map(([, parts]) => synthesize(parts));
    const alone = createInference(init);
    const solo: WindowOutput[] = [];
    for (const samples of inputs) solo.push(await window(alone, spec, samples));

    const inference = createInference(init);
    await inference.load(spec);
    // A slow clock: the files stay served about as much (cohorts of files far apart in service do
    // not merge), however slow the machine.
    const real = performance.now.bind(performance);
    const t0 = real();
    const clock = vi.spyOn(performance, "now").mockImplementation(() => t0 + (real() - t0) / 1000);
    try {
      const outs: Promise<WindowOutput>[] = [];
      for (const [i, samples] of inputs.entries()) {
        const calls = inference.decoder.stats.decoderCalls;
        outs.push(window(inference, spec, samples, `file-${i}`));
        // The next file arrives once this one's window has taken a few steps.
        await expect.poll(() => inference.decoder.stats.decoderCalls, { interval: 1, timeout: 120_000 }).toBeGreaterThan(calls + 3);
      }
      expect(await Promise.all(outs)).toEqual(solo);
      expect(inference.decoder.stats.merges).toBeGreaterThan(0);
      expect(inference.decoder.stats.largestBatch).toBeGreaterThan(1);
    } finally {
      clock.mockRestore();
    }
  });

  it("gives each of concurrent micro windows its own word, in one batch", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const words: MicroWord[] = ["alpha", "bravo", "charlie", "delta", "echo", "alpha"];
    // Each starts at its own time, within the 1.0 s a window's first timestamp may be.
    const onset = (i: number) => i * 0.2;
    const outs = await Promise.all(words.map((word, i) => window(inference, spec, synthesize(microTones([{ silence: onset(i) }, { word, seconds: 6 + i }])), `job-${i}`)));
    expect(outs.map((o) => o.chunks.map((c) => c.text.trim()))).toEqual(words.map((w) => [w]));
    outs.forEach((o, i) => expect(o.chunks[0]!.start).toBeCloseTo(onset(i), 1));
    expect(inference.decoder.stats.largestBatch).toBeGreaterThan(1);
  });

  it("removes a canceled window's row at once, mid-batch, and the others finish unchanged", async () => {
    const { spec, inference } = await loaded("tiny.en", "fp32");
    const samples = synthesize([{ tone: 440, seconds: 30 }]);
    const expected = await window(inference, spec, samples);
    const abort = new AbortController();
    const keep = [window(inference, spec, samples, "a"), window(inference, spec, samples, "b")];
    const canceled = window(inference, spec, samples, "c", abort.signal);
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 120_000 }).toBe(3);
    abort.abort();
    await expect(canceled).rejects.toBeInstanceOf(WindowCanceled);
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 120_000 }).toBeLessThanOrEqual(2);
    expect(await Promise.all(keep)).toEqual([expected, expected]);
    expect(inference.decoder.stats.activeRows).toBe(0);
  });
});

describe("a cohort most of whose rows have finished", () => {
  it("holds no more than its rows left: their encoder output and cross-attention cache move to buffers their size", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const shortWindow = synthesize(microTones([{ word: "bravo", seconds: 3 }]));
    // Greedy decoding loops on this tone to the length limit, as Whisper on some audio.
    const looping = stutter();
    const cohorts = (inference.decoder as unknown as { cohorts: { rows: unknown[]; state: BatchState }[] }).cohorts;
    const long = window(inference, spec, looping, "long");
    const ends = await Promise.all([window(inference, spec, shortWindow, "a"), window(inference, spec, shortWindow, "b"), window(inference, spec, shortWindow, "c")]);
    expect(ends.map((o) => o.chunks.map((c) => c.text.trim()))).toEqual([["bravo"], ["bravo"], ["bravo"]]);
    // The looping row decodes on alone in the cohort the four started in.
    expect(cohorts).toHaveLength(1);
    expect(cohorts[0]!.rows).toHaveLength(1);
    const { encoderStates, past } = cohorts[0]!.state;
    for (const t of [encoderStates, ...past.values()]) expect((t.data as Float32Array).buffer.byteLength).toBe((t.data as Float32Array).byteLength);
    await long;
  });
});

describe("a cohort whose first step fails", () => {
  it("fails its windows and leaves no row decoding for them; the next window decodes as before", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const samples = synthesize(microTones([{ word: "bravo", seconds: 3 }]));
    const expected = await window(inference, spec, samples);
    const pick = vi.spyOn(GreedyPicker.prototype, "pick").mockRejectedValueOnce(new Error("the picker failed"));
    await expect(window(inference, spec, samples, "failed")).rejects.toThrow("the picker failed");
    expect(inference.decoder.stats.activeRows).toBe(0);
    pick.mockRestore();
    expect(await window(inference, spec, samples)).toEqual(expected);
  });
});

describe("a failure between the decoder's calls (an allocation merging two cohorts' caches, out of memory, part-way)", () => {
  it("fails the windows decoding with it, and the next window decodes as before", { timeout: 120_000 }, async () => {
    const { spec, inference } = await loaded("micro", "q8");
    // The allocation fails at the second tensor joined, the first pair's buffers freed already.
    const merge = WhisperModel.mergeStates.bind(WhisperModel);
    const mergeStates = vi.spyOn(WhisperModel, "mergeStates").mockImplementationOnce((a: BatchState, b: BatchState) => {
      let joined = 0;
      const past = new Map(b.past);
      const get = past.get.bind(past);
      past.get = (name: string) => {
        if (++joined === 2) throw new RangeError("Array buffer allocation failed");
        return get(name);
      };
      return merge(a, { ...b, past });
    });
    // As in the merge test above: a slow clock keeps the two files served about as much, so their cohorts merge.
    const real = performance.now.bind(performance);
    const t0 = real();
    const clock = vi.spyOn(performance, "now").mockImplementation(() => t0 + (real() - t0) / 1000);
    try {
      const first = window(inference, spec, stutter(), "first");
      first.catch(() => undefined);
      await expect.poll(() => inference.decoder.stats.decoderCalls, { interval: 1, timeout: 60_000 }).toBeGreaterThan(3);
      const second = window(inference, spec, stutter(), "second");
      // The second catches up with the first, and the two merge between calls, where nothing else catches a failure.
      await expect(first).rejects.toThrow("Array buffer allocation failed");
      await expect(second).rejects.toThrow("Array buffer allocation failed");
      expect(mergeStates).toHaveBeenCalledTimes(1);
    } finally {
      clock.mockRestore();
      mergeStates.mockRestore();
    }
    await inference.decoder.idle();
    expect(inference.decoder.stats.activeRows).toBe(0);
    const bravo = synthesize(microTones([{ word: "bravo", seconds: 3 }]));
    expect((await window(inference, spec, bravo)).chunks.map((c) => c.text.trim())).toEqual(["bravo"]);
  });
});

describe("a canceled file", () => {
  it("is forgotten at once by the scheduler, so a newcomer starts just ahead of the files still running, not from it", async () => {
    const { spec, inference } = await loaded("tiny.en", "fp32");
    const samples = synthesize([{ tone: 440, seconds: 30 }]);
    const usage = (inference.decoder as unknown as { usage: Map<string, number> }).usage;
    const running = [window(inference, spec, samples, "long"), window(inference, spec, samples, "longer")];
    const abort = new AbortController();
    const gone = window(inference, spec, samples, "gone", abort.signal);
    // Looked at (queued behind the others' encoder runs), then canceled.
    await expect.poll(() => usage.has("gone"), { interval: 1, timeout: 60_000 }).toBe(true);
    abort.abort();
    await expect(gone).rejects.toBeInstanceOf(WindowCanceled);
    expect(usage.has("gone")).toBe(false);
    await Promise.all(running);
  });
});

describe("a file that drops windows it no longer wants (a window's result moved the next cut) and carries on", () => {
  it("keeps what it was served when its next window comes", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const decoder = inference.decoder;
    const usage = (decoder as unknown as { usage: Map<string, number> }).usage;
    const submit = (stream: string, signal?: AbortSignal, followed = true) =>
      inference.transcribeWindow(stream, { model: spec, samples: stutter(), options: { task: "transcribe" }, followed }, signal);
    const dropped = new AbortController();
    const inFlight = [0, 1].map(() => submit("long", dropped.signal));
    for (const w of inFlight) w.catch(() => undefined);
    await expect.poll(() => decoder.stats.decoderCalls, { interval: 1, timeout: 60_000 }).toBeGreaterThan(30);
    const clip = submit("clip", undefined, false);
    await expect.poll(() => decoder.stats.activeRows, { interval: 1, timeout: 60_000 }).toBe(3);
    const served = usage.get("long")!;
    dropped.abort(new Error("window no longer wanted"));
    // The re-cut window of the same file: forgotten at the drop, it came back as new, ahead of the clip.
    const next = submit("long", undefined, false);
    await expect.poll(() => decoder.stats.encoderRuns, { interval: 1, timeout: 60_000 }).toBe(4);
    expect(usage.get("long")).toBeGreaterThanOrEqual(served);
    await Promise.all([clip, next]);
  });
});

describe("a file canceled while its rows decode in a cohort not being stepped", () => {
  it("is forgotten by the scheduler once its rows are canceled, not when the engine next idles", async () => {
    const { decoder, second } = await firstCanceledWhileSecondCatchesUp();
    const usage = (decoder as unknown as { usage: Map<string, number> }).usage;
    const calls = decoder.stats.decoderCalls;
    await expect.poll(() => decoder.stats.decoderCalls, { interval: 1, timeout: 60_000 }).toBeGreaterThan(calls + 5);
    expect(decoder.stats.activeRows).toBe(1);
    expect(usage.has("first")).toBe(false);
    await second;
  });
});

describe("a canceled window's rows", () => {
  it("leave their cohort before the next call, though another file's cohort is the one stepped, and free their rows for a newcomer", async () => {
    const { spec, inference, decoder, second } = await firstCanceledWhileSecondCatchesUp();
    const cohorts = (decoder as unknown as { cohorts: { rows: { canceled: boolean; stream: string }[] }[] }).cohorts;
    const callsAtCancel = decoder.stats.decoderCalls;
    const newcomer = window(inference, spec, synthesize(microTones([{ word: "bravo", seconds: 3 }])), "newcomer");
    let lingered = 0;
    let newcomerStarted = false;
    while (!newcomerStarted || cohorts.some((c) => c.rows.some((r) => r.canceled))) {
      await new Promise((resolve) => setImmediate(resolve));
      if (cohorts.some((c) => c.rows.some((r) => r.canceled))) lingered = decoder.stats.decoderCalls - callsAtCancel;
      newcomerStarted ||= cohorts.some((c) => c.rows.some((r) => r.stream === "newcomer"));
    }
    // At most the call that was running when the cancel came; before, they stayed 40 calls.
    expect(lingered).toBeLessThanOrEqual(1);
    await Promise.all([second, newcomer]);
    expect(decoder.stats.activeRows).toBe(0);
  });
});

describe("a file's windows found one after another", () => {
  const followedWindow = (inference: Inference, spec: ModelSpec, samples: Float32Array, stream: string, followed: boolean) =>
    inference.transcribeWindow(stream, { model: spec, samples, options: { task: "transcribe" }, followed });
  const setUp = async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const clip = (word: MicroWord) => synthesize(microTones([{ word, seconds: 8 }]));
    return { spec, inference, clip };
  };

  it("start decoding together when each says another follows, and decode as they would apart", async () => {
    const { spec, inference, clip } = await setUp();
    const solo = [await followedWindow(inference, spec, clip("alpha"), "solo", false), await followedWindow(inference, spec, clip("bravo"), "solo", false)];
    const before = { ...inference.decoder.stats };
    const first = followedWindow(inference, spec, clip("alpha"), "file", true);
    // The second window arrives only after the first is encoded and ready, as speech detection delivers them.
    await expect.poll(() => inference.decoder.stats.encoderRuns, { interval: 1, timeout: 60_000 }).toBe(before.encoderRuns + 1);
    const second = followedWindow(inference, spec, clip("bravo"), "file", false);
    expect(await Promise.all([first, second])).toEqual(solo);
    expect(inference.decoder.stats.largestBatch).toBe(2);
  });

  it("start apart when none says another follows", async () => {
    const { spec, inference, clip } = await setUp();
    const first = followedWindow(inference, spec, clip("alpha"), "file", false);
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 60_000 }).toBe(1);
    const second = followedWindow(inference, spec, clip("bravo"), "file", false);
    await Promise.all([first, second]);
    expect(inference.decoder.stats.largestBatch).toBe(1);
  });

  /** A file's first window decoding (tiny.en fp32 on a 30 s tone, which decodes long) and its second encoded and ready. */
  const firstDecodingSecondReady = async (followed: boolean) => {
    const { spec, inference } = await loaded("tiny.en", "fp32");
    const samples = synthesize([{ tone: 440, seconds: 30 }]);
    const expected = await followedWindow(inference, spec, samples, "solo", false);
    const first = followedWindow(inference, spec, samples, "file", followed);
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 120_000 }).toBe(1);
    const runs = inference.decoder.stats.encoderRuns;
    const second = followedWindow(inference, spec, samples, "file", followed);
    await expect.poll(() => inference.decoder.stats.encoderRuns, { interval: 1, timeout: 120_000 }).toBe(runs + 1);
    return { inference, expected, first, second, third: () => followedWindow(inference, spec, samples, "file", false) };
  };

  /** The clock `ms` ahead from now on: holds that would end in that time are over. */
  const clockAhead = (ms: number) => {
    const real = performance.now.bind(performance);
    return vi.spyOn(performance, "now").mockImplementation(() => real() + ms);
  };

  it("one that arrives while the file's earlier windows decode waits to start with the file's next", async () => {
    const { inference, expected, first, second, third } = await firstDecodingSecondReady(false);
    expect(await Promise.all([first, second, third()])).toEqual([expected, expected, expected]);
    expect(inference.decoder.stats.largestBatch).toBe(2);
  });

  it("one that has waited past the short hold still waits while the file's earlier windows decode", async () => {
    const { inference, expected, first, second, third } = await firstDecodingSecondReady(false);
    let firstDone = false;
    void first.then(() => (firstDone = true));
    // Well past the short hold, as a file's next window comes once a row of it has finished.
    const clock = clockAhead(1000);
    try {
      const calls = inference.decoder.stats.decoderCalls;
      await expect.poll(() => inference.decoder.stats.decoderCalls, { interval: 1, timeout: 120_000 }).toBeGreaterThan(calls + 2);
      expect(firstDone).toBe(false);
      expect(inference.decoder.stats.activeRows).toBe(1);
      expect(await Promise.all([first, second, third()])).toEqual([expected, expected, expected]);
      expect(inference.decoder.stats.largestBatch).toBe(2);
    } finally {
      clock.mockRestore();
    }
  });

  it("one whose file's last decoding row has just finished waits for the window that row's slot admits", async () => {
    const { inference, expected, first, second, third } = await firstDecodingSecondReady(true);
    // Its short hold is over by the time the first window finishes.
    const clock = clockAhead(500);
    try {
      const firstOut = await first;
      // The slot the first window frees admits the file's next window a moment later (in the
      // service: the window settles, the limiter hands its permit on, the window source is read).
      await new Promise((r) => setTimeout(r, 20));
      expect([firstOut, ...(await Promise.all([second, third()]))]).toEqual([expected, expected, expected]);
      expect(inference.decoder.stats.largestBatch).toBe(2);
    } finally {
      clock.mockRestore();
    }
  });

  it("a window whose follower never comes still decodes, and a file arriving with it decodes beside it at once", async () => {
    const { spec, inference, clip } = await setUp();
    const alone = await followedWindow(inference, spec, clip("charlie"), "lonely", true);
    expect(alone.chunks.map((c) => c.text.trim())).toEqual(["charlie"]);
    const held = followedWindow(inference, spec, clip("alpha"), "held", true);
    await expect.poll(() => inference.decoder.stats.encoderRuns, { interval: 1, timeout: 60_000 }).toBe(2);
    const other = followedWindow(inference, spec, clip("delta"), "other", false);
    expect((await Promise.all([held, other])).map((o) => o.chunks.map((c) => c.text.trim()))).toEqual([["alpha"], ["delta"]]);
    // The other file started a cohort at once, and the held window of a file served as little joined it.
    expect(inference.decoder.stats.largestBatch).toBe(2);
  });

  it("never sleeps past a hold that ends while the loop looks, however far the clock moves between its readings", async () => {
    const { spec, inference, clip } = await setUp();
    const samples = clip("bravo");
    const expected = await followedWindow(inference, spec, samples, "solo", false);
    // A clock that jumps between any two readings, by a different step each file, as a loaded
    // machine's does: a hold that ended between the loop finding a window held and computing its
    // wait was in neither, and the loop slept until another window came (a job stayed running).
    const real = performance.now.bind(performance);
    let drift = 0;
    let step = 0;
    const clock = vi.spyOn(performance, "now").mockImplementation(() => real() + (drift += step));
    try {
      for (step = 30; step <= 90; step += 2) {
        for (let i = 0; i < 3; i++) expect(await followedWindow(inference, spec, samples, `file-${step}`, i < 2)).toEqual(expected);
      }
    } finally {
      clock.mockRestore();
    }
  });
});

describe("a file decoding one window at a time (a plan of one or two slots)", () => {
  it("keeps what it has been served between its windows, is never further behind than a newcomer, and is forgotten when its next window does not come", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const usage = (inference.decoder as unknown as { usage: Map<string, number> }).usage;
    const next = (word: MicroWord) =>
      inference.transcribeWindow("one-by-one", { model: spec, samples: synthesize(microTones([{ word, seconds: 8 }])), options: { task: "transcribe" }, followed: true });
    // Another file decoding all along (the stutter tone decodes to the length limit, then falls back), so the loop runs on.
    const other = inference.transcribeWindow("other", {
      model: spec,
      samples: stutter(),
      options: { task: "transcribe" },
    });
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 60_000 }).toBe(1);

    let otherDone = false;
    void other.then(() => (otherDone = true));
    expect((await next("alpha")).chunks.map((c) => c.text.trim())).toEqual(["alpha"]);
    const calls = inference.decoder.stats.decoderCalls;
    await expect.poll(() => inference.decoder.stats.decoderCalls, { interval: 1, timeout: 60_000 }).toBeGreaterThan(calls + 2);
    expect(otherDone).toBe(false);
    // Still known between its windows: forgotten, its next window was new again, NEW_FILE_CREDIT_MS
    // ahead of the other file, at every window.
    const served = usage.get("one-by-one");
    expect(served).toBeGreaterThan(0);
    // The other file served 10 s more meanwhile (its window waited that long for a slot): the
    // returning file starts a newcomer's credit (1 s) behind it, not 10 s.
    usage.set("other", usage.get("other")! + 10_000);
    const floor = usage.get("other")! - 1000;
    const bravo = next("bravo");
    await expect.poll(() => inference.decoder.stats.encoderRuns, { interval: 1, timeout: 60_000 }).toBe(3);
    expect(usage.get("one-by-one")).toBeGreaterThanOrEqual(Math.max(served!, floor));
    expect(usage.get("one-by-one")).toBeLessThan(usage.get("other")!);
    expect((await bravo).chunks.map((c) => c.text.trim())).toEqual(["bravo"]);

    // Its transcription ends between windows (the engine never hears of it): a minute on, it is gone.
    expect(usage.has("one-by-one")).toBe(true);
    expect(otherDone).toBe(false);
    const real = performance.now.bind(performance);
    const clock = vi.spyOn(performance, "now").mockImplementation(() => real() + 61_000);
    try {
      await expect.poll(() => usage.has("one-by-one"), { interval: 1, timeout: 60_000 }).toBe(false);
    } finally {
      clock.mockRestore();
    }
    await other;
  });
});

describe("language identification in the decoding loop", () => {
  it("identifies a multilingual model's language from the window's first step, encodes the window once, and decodes as if told the language", async () => {
    const { spec, inference } = await loaded("tiny", "q8");
    const samples = synthesize([{ tone: 440, seconds: 20 }, { silence: 10 }]);
    const heard: string[] = [];
    const identified = await inference.transcribeWindow("s", { model: spec, samples, options: { task: "transcribe" }, onLanguage: (l) => heard.push(l) });
    expect(inference.decoder.stats.encoderRuns).toBe(1);
    expect(identified.language).toMatch(/^[a-z]{2,3}$/);
    expect(heard).toEqual([identified.language]);
    const told = await inference.transcribeWindow("s", { model: spec, samples, options: { task: "transcribe", language: identified.language! } });
    expect(engineChunks(identified).length).toBeGreaterThan(0);
    expect(engineChunks(identified)).toEqual(engineChunks(told));
  });
});

describe("features computed elsewhere", () => {
  it("windows arriving together wait for their features and batch; a window whose features fail fails alone", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const model = await inference.load(spec);
    const words = ["alpha", "echo", "charlie"] as const;
    const clips = words.map((word) => synthesize(microTones([{ word, seconds: 10 }])));
    const expected = [];
    for (const samples of clips) expected.push(await window(inference, spec, samples));
    const before = { ...inference.decoder.stats };
    const deliveries: (() => void)[] = [];
    const outputs = clips.map((samples) =>
      inference.transcribeWindow("s", {
        model: spec,
        samples,
        options: { task: "transcribe" },
        features: new Promise((resolve) => deliveries.push(() => resolve(whisperFeatures(samples, model.featureConfig)))),
      }),
    );
    let failFeatures!: (err: Error) => void;
    const failing = inference.transcribeWindow("t", {
      model: spec,
      samples: clips[0]!,
      options: { task: "transcribe" },
      features: new Promise((_, reject) => (failFeatures = reject)),
    });
    await new Promise((r) => setTimeout(r, 50));
    // Nothing is encoded before its features arrive.
    expect(inference.decoder.stats.encoderRuns).toBe(before.encoderRuns);
    for (const deliver of deliveries) deliver();
    failFeatures(new Error("audio thread stopped"));
    await expect(failing).rejects.toThrow("audio thread stopped");
    expect(await Promise.all(outputs)).toEqual(expected);
    expect(inference.decoder.stats.encoderRuns).toBe(before.encoderRuns + words.length);
    expect(inference.decoder.stats.largestBatch).toBe(words.length);
    expect(inference.decoder.stats.activeRows).toBe(0);
  });

  it("a window whose features never come is encoded with features of its own after a second", async () => {
    const { spec, inference } = await loaded("micro", "q8");
    const samples = synthesize(microTones([{ word: "delta", seconds: 10 }]));
    const expected = await window(inference, spec, samples);
    const output = await inference.transcribeWindow("s", { model: spec, samples, options: { task: "transcribe" }, features: new Promise(() => undefined) });
    expect(output).toEqual(expected);
  });
});
