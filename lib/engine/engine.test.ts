import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesize } from "../audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../models/generate.ts";
import { microTones } from "../models/micro.ts";
import { Engine } from "./engine.ts";

describe("Engine lanes", () => {
  let engine: Engine;
  let spec: { id: string; dtype: "q8" };
  beforeAll(async () => {
    spec = { id: (await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR })).id, dtype: "q8" };
    engine = new Engine({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threadsPerJob: 1, lanes: 2 });
  });
  afterAll(() => engine.close());

  it("loads the model on every lane and runs concurrent windows on different lanes", async () => {
    await engine.load(spec);
    expect(engine.modelStates()).toMatchObject([{ state: "ready" }]);
    const words = ["alpha", "echo"] as const;
    const outputs = await Promise.all(words.map((word) => engine.transcribeWindow(spec, synthesize(microTones([{ word, seconds: 10 }])), { task: "transcribe" })));
    expect(outputs.map((o) => o.chunks.map((c) => c.text.trim()))).toEqual([["alpha"], ["echo"]]);
    expect(engine.laneStats()).toEqual([
      { inFlight: 0, windows: 1 },
      { inFlight: 0, windows: 1 },
    ]);
  });

  it("gives the next window to the lane with the least in flight", async () => {
    const before = engine.laneStats().map((l) => l.windows);
    const audio = synthesize(microTones([{ word: "charlie", seconds: 5 }]));
    const three = [1, 2, 3].map(() => engine.transcribeWindow(spec, audio, { task: "transcribe" }));
    await new Promise((r) => setImmediate(r));
    const inFlight = engine.laneStats().map((l) => l.inFlight);
    expect(inFlight.sort()).toEqual([1, 2]);
    await Promise.all(three);
    const added = engine.laneStats().map((l, i) => l.windows - before[i]!);
    expect(added.sort()).toEqual([1, 2]);
  });
});
