/**
 * Whisper's best_of: above temperature 0 a window samples several decodes and keeps the one its ranker
 * prefers, the same whatever the engine's load, within the rows the memory plan holds.
 */
import { describe, expect, it, vi } from "vitest";
import { synthesize } from "../../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { microTones, STUTTER_TONE } from "../../tools/models/micro.ts";
import { mulberry32 } from "../random.ts";
import { WindowCanceled } from "./batch-decoder.ts";
import { rankCandidates } from "./candidates.ts";
import type { ModelSpec, WindowOptions, WindowOutput } from "./protocol.ts";
import { WhisperModel } from "./whisper-model.ts";
import { createInference, type Inference } from "./worker.ts";

async function loaded(rows?: number): Promise<{ spec: ModelSpec; inference: Inference }> {
  const model = await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR });
  const spec = { id: model.id, dtype: "q8" as const };
  const inference = createInference({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1, rows });
  await inference.load(spec);
  return { spec, inference };
}

/** The micro model says the stutter tone's word again and again, closing it only when sampled: candidates differ in how often. */
const stutter = () => synthesize(microTones([{ silence: 1 }, { word: STUTTER_TONE.word, seconds: 6 }]));

const decode = (inference: Inference, spec: ModelSpec, options: Omit<WindowOptions, "task">, stream = "s", signal?: AbortSignal) =>
  inference.transcribeWindow(stream, { model: spec, samples: stutter(), options: { task: "transcribe", ...options } }, signal);

/** A decode's tokens as the ranker sees them: every segment's, then end-of-text, whose log-probability the average includes. */
function asCandidate(out: WindowOutput, eos: number): { generated: number[]; logprobs: number[] } {
  const generated = [...out.chunks.flatMap((c) => c.tokens), eos];
  return { generated, logprobs: [out.avgLogprob * generated.length] };
}

/**
 * Watches the decoder between its calls until `done` settles: the calls during which one of two rows
 * decoded while rows waited to start, and, once a window has fallen back, the turns of the event
 * loop it sat with rows ready and none decoding (a hold).
 */
async function watchRows(inference: Inference, done: Promise<unknown>): Promise<{ callsWithRowFree: number; idleTurnsAfterFallback: number }> {
  const decoder = inference.decoder as unknown as { cohorts: { rows: unknown[] }[]; ready: unknown[]; stats: { decoderCalls: number; fallbacks: number } };
  let settled = false;
  void done.finally(() => (settled = true)).catch(() => undefined);
  const callsWithRowFree = new Set<number>();
  const fallbacksBefore = decoder.stats.fallbacks;
  let idleTurnsAfterFallback = 0;
  while (!settled) {
    await new Promise((resolve) => setImmediate(resolve));
    const decoding = decoder.cohorts.reduce((n, c) => n + c.rows.length, 0);
    if (decoding === 1 && decoder.ready.length > 0) callsWithRowFree.add(decoder.stats.decoderCalls);
    if (decoding === 0 && decoder.ready.length > 0 && decoder.stats.fallbacks > fallbacksBefore) idleTurnsAfterFallback++;
  }
  return { callsWithRowFree: callsWithRowFree.size, idleTurnsAfterFallback };
}

/** A window of a file that says more of the file follows (none does). */
const followedWindow = (inference: Inference, spec: ModelSpec, options: Omit<WindowOptions, "task">) =>
  inference.transcribeWindow("followed", { model: spec, samples: stutter(), options: { task: "transcribe", ...options }, followed: true });

describe("best_of", () => {
  it("keeps the candidate Whisper's ranker prefers among decodes sampled with generators seeded from the window's", async () => {
    const { spec, inference } = await loaded();
    const eos = (await inference.load(spec)).rules.eos;
    const seed = 1234;
    const draws = mulberry32(seed);
    const candidateSeeds = Array.from({ length: 5 }, () => Math.floor(draws() * 2 ** 32));
    // With best_of 1 a window samples with its own generator: seeded with a candidate's seed, it decodes that candidate.
    const alone = [];
    for (const s of candidateSeeds) alone.push(await decode(inference, spec, { temperatures: [0.4], seed: s, bestOf: 1 }));
    const repeats = alone.map(
      (o) =>
        o.chunks
          .map((c) => c.text)
          .join("")
          .split(" ")
          .filter(Boolean).length,
    );
    expect(new Set(repeats).size, `words per candidate: ${repeats}`).toBeGreaterThan(1);

    const before = inference.decoder.stats.candidates;
    const best = await decode(inference, spec, { temperatures: [0.4], seed, bestOf: 5 });
    expect(inference.decoder.stats.candidates - before).toBe(5);
    expect(best).toEqual(
      alone[
        rankCandidates(
          alone.map((o) => asCandidate(o, eos)),
          eos,
        )
      ],
    );
    expect(await decode(inference, spec, { temperatures: [0.4], seed, bestOf: 5 })).toEqual(best);
  });

  it("samples candidates only above temperature 0, and on each fallback temperature", async () => {
    const { spec, inference } = await loaded();
    const out = await decode(inference, spec, { seed: 7, bestOf: 3 });
    // Greedy loops until the length limit (one row), then each hotter attempt samples three.
    expect(out.temperature).toBeGreaterThan(0);
    const attempts = Math.round(out.temperature / 0.2);
    expect(inference.decoder.stats.fallbacks).toBe(attempts);
    expect(inference.decoder.stats.candidates).toBe(3 * attempts);
  });

  it("stops a sample that loops after openai-whisper's sample_len (224 tokens), as greedy decoding", async () => {
    const { spec, inference } = await loaded();
    // With this seed a candidate repeats the word past 224 tokens, and the ranker keeps the longest.
    const out = await decode(inference, spec, { temperatures: [0.2], seed: 4, bestOf: 5 });
    expect(out.chunks.flatMap((c) => c.tokens)).toHaveLength(224);
  });

  it("decodes the same within a budget of two rows, never holding more", async () => {
    const free = await loaded();
    const expected = await decode(free.inference, free.spec, { temperatures: [0.6], seed: 99, bestOf: 5 });
    const { spec, inference } = await loaded(2);
    const outs = await Promise.all([
      decode(inference, spec, { temperatures: [0.6], seed: 99, bestOf: 5 }, "a"),
      decode(inference, spec, { temperatures: [0.6], seed: 99, bestOf: 5 }, "b"),
    ]);
    expect(outs).toEqual([expected, expected]);
    expect(inference.decoder.stats.candidates).toBe(10);
    expect(inference.decoder.stats.largestBatch).toBe(2);
  });

  it("starts candidates beyond the rows as rows free, in a window that says more of its file follows too", async () => {
    const { spec, inference } = await loaded(2);
    const expected = await decode(inference, spec, { temperatures: [0.6], seed: 99, bestOf: 5 });
    const out = followedWindow(inference, spec, { temperatures: [0.6], seed: 99, bestOf: 5 });
    const { callsWithRowFree } = await watchRows(inference, out);
    expect(await out).toEqual(expected);
    // Each of the three that wait starts as soon as a row is free. Held while their siblings
    // decoded, they left a freed row idle for 13 calls of 32.
    expect(callsWithRowFree).toBeLessThanOrEqual(3);
  });

  it("decodes a window again at once after each fallback, though it says more of its file follows", async () => {
    const { spec, inference } = await loaded();
    const expected = await decode(inference, spec, { seed: 3 });
    expect(expected.temperature).toBeGreaterThan(0.2);
    const out = followedWindow(inference, spec, { seed: 3 });
    const { idleTurnsAfterFallback } = await watchRows(inference, out);
    expect(await out).toEqual(expected);
    // At most the turn between each of its 4 fallbacks and its start. Held again for its file's next
    // window after each one, it sat 300 ms per temperature.
    expect(idleTurnsAfterFallback).toBeLessThanOrEqual(4);
  });

  it("fails a window whose decoder call fails, and starts none of its candidates still waiting for a row", async () => {
    const { spec, inference } = await loaded(2);
    const failing = decode(inference, spec, { temperatures: [0.6], seed: 99, bestOf: 5 }, "failing");
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 60_000 }).toBe(2);
    const step = vi.spyOn(WhisperModel.prototype, "step").mockRejectedValueOnce(new Error("the decoder call failed"));
    try {
      await expect(failing).rejects.toThrow("the decoder call failed");
    } finally {
      step.mockRestore();
    }
    const calls = inference.decoder.stats.decoderCalls;
    await inference.decoder.idle();
    // The three waiting decoded for nobody, each in a call of its own.
    expect(inference.decoder.stats.decoderCalls).toBe(calls);
    expect(inference.decoder.stats.activeRows).toBe(0);
    expect((await decode(inference, spec, { temperatures: [0.2], seed: 5, bestOf: 2 })).temperature).toBe(0.2);
  });

  it("removes every candidate of a canceled window", async () => {
    const { spec, inference } = await loaded();
    const abort = new AbortController();
    const canceled = decode(inference, spec, { temperatures: [0.2], seed: 5, bestOf: 5 }, "c", abort.signal);
    await expect.poll(() => inference.decoder.stats.activeRows, { interval: 1, timeout: 60_000 }).toBe(5);
    abort.abort();
    await expect(canceled).rejects.toBeInstanceOf(WindowCanceled);
    await inference.decoder.idle();
    expect(inference.decoder.stats.activeRows).toBe(0);
    // The engine goes on.
    expect((await decode(inference, spec, { temperatures: [0.2], seed: 5, bestOf: 2 })).temperature).toBe(0.2);
  });
});
