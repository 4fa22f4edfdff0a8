/**
 * The inference thread's window path (its session options, the lean timestamp processor and the fast
 * log-mel features) against the stock transformers.js pipeline called plainly: the speed-ups must not
 * change a single token, time or language.
 */
import { pipeline, type AutomaticSpeechRecognitionPipeline } from "@huggingface/transformers";
import { beforeAll, describe, expect, it } from "vitest";
import { synthesize, type SynthPart } from "../audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../models/generate.ts";
import { microTones } from "../models/micro.ts";
import type { WindowOutput } from "./protocol.ts";
import { createInference, oneRunAtATime, type Inference } from "./worker.ts";

interface Chunk {
  timestamp: [number, number | null];
  text: string;
}

async function stockPipeline(id: string): Promise<AutomaticSpeechRecognitionPipeline> {
  return (await pipeline("automatic-speech-recognition", id, {
    dtype: "q8",
    device: "cpu",
    session_options: { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 },
  })) as AutomaticSpeechRecognitionPipeline;
}

async function stockChunks(asr: AutomaticSpeechRecognitionPipeline, samples: Float32Array): Promise<[number, number | null, string][]> {
  const out = (await asr(samples, { return_timestamps: true })) as { chunks?: Chunk[] };
  return (out.chunks ?? []).filter((c) => c.text.trim()).map((c) => [c.timestamp[0], c.timestamp[1], c.text]);
}

const engineChunks = (out: WindowOutput): [number, number | null, string][] => out.chunks.map((c) => [c.start, c.end, c.text]);

describe("the engine's window path gives the stock pipeline's transcript", () => {
  let inference: Inference;
  beforeAll(() => {
    inference = createInference({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threadsPerJob: 1 });
  });

  const faithful: [string, SynthPart[]][] = [
    ["a fully voiced window", [{ tone: 440, seconds: 30 }]],
    ["a tone between silences", [{ silence: 4 }, { tone: 1000, seconds: 12 }, { silence: 14 }]],
    ["tones of different loudness with gaps", [{ tone: 200, seconds: 3 }, { silence: 2 }, { tone: 3000, seconds: 6, amplitude: 0.05 }, { silence: 5 }, { tone: 500, seconds: 14 }]],
    ["a 5 s clip", [{ tone: 300, seconds: 5 }]],
  ];
  it("with the architecture-faithful tiny.en, int8", async () => {
    const model = await generateModel({ kind: "tiny.en", out: DEFAULT_MODELS_DIR });
    const spec = { id: model.id, dtype: "q8" as const };
    const asr = await stockPipeline(model.id);
    // The fast features are in use (lib/audio/log-mel.test.ts checks them against the library's).
    const extractor = (await inference.load(spec)).asr.processor.feature_extractor as unknown as Record<string, unknown>;
    expect(Object.hasOwn(extractor, "_extract_fbank_features")).toBe(true);
    for (const [name, parts] of faithful) {
      const samples = synthesize(parts);
      const engine = engineChunks(await inference.transcribeWindow(spec, samples, { task: "transcribe" }));
      expect(engine, name).toEqual(await stockChunks(asr, samples));
      expect(engine.length, name).toBeGreaterThan(0);
    }
  });

  it("with the micro model, whose output depends on its KV cache", async () => {
    const model = await generateModel({ kind: "micro", out: DEFAULT_MODELS_DIR });
    const spec = { id: model.id, dtype: "q8" as const };
    const asr = await stockPipeline(model.id);
    const cases: [string, SynthPart[]][] = [
      ["alpha", microTones([{ word: "alpha", seconds: 8 }])],
      ["delta", microTones([{ silence: 4 }, { word: "delta", seconds: 12 }, { silence: 14 }])],
    ];
    for (const [word, parts] of cases) {
      const samples = synthesize(parts);
      const engine = engineChunks(await inference.transcribeWindow(spec, samples, { task: "transcribe" }));
      expect(engine).toEqual(await stockChunks(asr, samples));
      expect(engine.map((c) => c[2].trim())).toEqual([word]);
    }
  });
});

describe("language identification in the window path", () => {
  it("identifies a multilingual model's language within the window, encodes the window once, and decodes as if told the language", async () => {
    const inference = createInference({ localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threadsPerJob: 1 });
    const model = await generateModel({ kind: "tiny", out: DEFAULT_MODELS_DIR });
    const spec = { id: model.id, dtype: "q8" as const };
    const encoder = ((await inference.load(spec)).asr.model as unknown as { sessions: { model: { run(...args: unknown[]): Promise<unknown> } } }).sessions.model;
    const run = encoder.run.bind(encoder);
    let encoderRuns = 0;
    encoder.run = (...args) => {
      encoderRuns++;
      return run(...args);
    };
    const samples = synthesize([{ tone: 440, seconds: 20 }, { silence: 10 }]);
    const heard: string[] = [];
    const identified = await inference.transcribeWindow(spec, samples, { task: "transcribe" }, (language) => heard.push(language));
    expect(encoderRuns).toBe(1);
    expect(identified.language).toMatch(/^[a-z]{2,3}$/);
    expect(heard).toEqual([identified.language]);
    const told = await inference.transcribeWindow(spec, samples, { task: "transcribe", language: identified.language! });
    expect(engineChunks(identified).length).toBeGreaterThan(0);
    expect(engineChunks(identified)).toEqual(engineChunks(told));
  });
});

describe("oneRunAtATime", () => {
  it("runs a session's calls one after another, in call order, and a failure does not stop the queue", async () => {
    let running = 0;
    let most = 0;
    const order: number[] = [];
    const session = {
      async run(n: unknown): Promise<unknown> {
        running++;
        most = Math.max(most, running);
        await new Promise((r) => setTimeout(r, 5));
        running--;
        order.push(n as number);
        if (n === 2) throw new Error("boom");
        return n;
      },
    };
    oneRunAtATime(session);
    const results = await Promise.allSettled([1, 2, 3, 4].map((n) => session.run(n)));
    expect(most).toBe(1);
    expect(order).toEqual([1, 2, 3, 4]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
  });
});
