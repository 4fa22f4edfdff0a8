import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesize } from "../../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { microTones, STUTTER_TONE } from "../../tools/models/micro.ts";
import { DomainError } from "../errors.ts";
import { Engine } from "./engine.ts";

describe("Engine", () => {
  let engine: Engine;
  let spec: { id: string; dtype: "q8" };
  beforeAll(async () => {
    spec = { id: (await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR })).id, dtype: "q8" };
    engine = new Engine({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 2 });
  });
  afterAll(() => engine.close());

  it("loads a model once and decodes concurrent jobs' windows through it in shared batches", async () => {
    await engine.load(spec);
    expect(engine.modelStates()).toMatchObject([{ state: "ready" }]);
    const words = ["alpha", "echo", "charlie", "bravo"] as const;
    const outputs = await Promise.all(
      words.map((word, i) => engine.transcribeWindow(spec, synthesize(microTones([{ word, seconds: 10 }])), { task: "transcribe" }, { stream: `job-${i}` })),
    );
    expect(outputs.map((o) => o.chunks.map((c) => c.text.trim()))).toEqual(words.map((w) => [w]));
    const stats = await engine.stats();
    expect(stats.encoderRuns).toBe(words.length);
    expect(stats.largestBatch).toBeGreaterThan(1);
    expect(stats.activeRows).toBe(0);
  });

  it("cancels a window on abort: the caller hears at once and the thread drops it", async () => {
    const abort = new AbortController();
    const window = engine.transcribeWindow(spec, synthesize(microTones([{ word: "delta", seconds: 20 }])), { task: "transcribe" }, { signal: abort.signal });
    abort.abort(new Error("client went away"));
    await expect(window).rejects.toThrow("client went away");
    expect(engine.inFlight).toBe(0);
    await expect.poll(async () => (await engine.stats()).activeRows, { timeout: 60_000 }).toBe(0);
    const after = await engine.transcribeWindow(spec, synthesize(microTones([{ word: "bravo", seconds: 5 }])), { task: "transcribe" });
    expect(after.chunks.map((c) => c.text.trim())).toEqual(["bravo"]);
  });

  it("fails the windows still decoding when it closes, as a stop to retry, by the time close() returns", async () => {
    const closing = new Engine({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1 });
    await closing.load(spec);
    // Greedy decoding loops on the stutter tone, then falls back: hundreds of steps, still going when the close arrives.
    const window = closing.transcribeWindow(spec, synthesize(microTones([{ silence: 1 }, { word: STUTTER_TONE.word, seconds: 6 }])), { task: "transcribe" });
    const outcome = window.then(
      () => "decoded",
      (err: unknown) => err,
    );
    await expect.poll(() => closing.inFlight).toBe(1);
    await closing.close();
    const settled = await Promise.race([outcome, new Promise((resolve) => setImmediate(() => resolve("still pending")))]);
    expect(settled).toBeInstanceOf(DomainError);
    expect(settled).toMatchObject({ code: "unavailable", retryable: true });
    expect(closing.inFlight).toBe(0);
  });
});
