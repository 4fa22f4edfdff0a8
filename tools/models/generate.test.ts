import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { env, pipeline, type AutomaticSpeechRecognitionPipeline, type Tensor } from "@huggingface/transformers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesize } from "../audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel, type GeneratedModel } from "./generate.ts";
import { microTones } from "./micro.ts";

const SAMPLE_RATE = 16000;

async function stockPipeline(model: GeneratedModel, dtype: "fp32" | "q8"): Promise<AutomaticSpeechRecognitionPipeline> {
  env.allowRemoteModels = false;
  env.localModelPath = join(model.path, "..", "..");
  return pipeline("automatic-speech-recognition", model.id, { dtype, session_options: { logSeverityLevel: 3 } });
}

/** Tokens the model generated for 30 s of audio, after the prompt, counted from the ids themselves. */
async function generatedTokens(asr: AutomaticSpeechRecognitionPipeline, audio: Float32Array): Promise<number> {
  const { input_features } = (await asr.processor(audio)) as { input_features: Tensor };
  const sequences = (await asr.model.generate({ inputs: input_features } as never)) as Tensor;
  const prompt = 2; // <|startoftranscript|> <|notimestamps|> for English-only models
  const ids = (sequences.tolist() as bigint[][])[0]!.slice(prompt);
  const eos = BigInt((asr.model as unknown as { generation_config: { eos_token_id: number } }).generation_config.eos_token_id);
  return ids.filter((id) => id !== eos).length;
}

async function digest(dir: string, files: string[]): Promise<string> {
  const hash = createHash("sha256");
  for (const f of files.sort()) hash.update(f).update(await readFile(join(dir, f)));
  return hash.digest("hex");
}

describe("micro model", () => {
  let model: GeneratedModel;
  let asr: AutomaticSpeechRecognitionPipeline;
  const scratch: string[] = [];

  beforeAll(async () => {
    model = await generateModel({ kind: "micro" });
    asr = await stockPipeline(model, "fp32");
  });
  afterAll(async () => {
    await Promise.all(scratch.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("is written in the published transformers.js layout", () => {
    expect(Object.keys(model.files).sort()).toEqual([
      "config.json",
      "generation_config.json",
      "onnx/decoder_model_merged.onnx",
      "onnx/decoder_model_merged_quantized.onnx",
      "onnx/encoder_model.onnx",
      "onnx/encoder_model_quantized.onnx",
      "preprocessor_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
  });

  it("is byte-for-byte the same when generated twice", async () => {
    const a = await mkdtemp(join(tmpdir(), "gen-a-"));
    const b = await mkdtemp(join(tmpdir(), "gen-b-"));
    scratch.push(a, b);
    const [ma, mb] = await Promise.all([generateModel({ kind: "micro", out: a }), generateModel({ kind: "micro", out: b })]);
    const files = Object.keys(ma.files);
    expect(await digest(ma.path, files)).toBe(await digest(mb.path, files));
  });

  it("is reused from the cache when already generated", async () => {
    const again = await generateModel({ kind: "micro" });
    expect(again.reused).toBe(true);
    expect(again.path).toBe(model.path);
  });

  it.each(["alpha", "bravo", "charlie", "delta", "echo"] as const)("names the %s tone", async (word) => {
    const out = await asr(synthesize(microTones([{ word, seconds: 8 }])));
    expect(out).toEqual({ text: ` ${word}` });
  });

  it("gives the segment from the first to the last voiced instant of the window", async () => {
    const audio = synthesize(microTones([{ silence: 4 }, { word: "delta", seconds: 12 }, { silence: 14 }]));
    const out = (await asr(audio, { return_timestamps: true })) as { text: string; chunks: { timestamp: [number, number]; text: string }[] };
    expect(out.text).toBe(" delta");
    expect(out.chunks).toHaveLength(1);
    const [start, end] = out.chunks[0]!.timestamp;
    expect([start, end]).toEqual([4, 16]);
  });

  it("transcribes a multi-window file window by window, in order, with absolute times", async () => {
    const audio = synthesize(microTones([{ word: "echo", seconds: 30 }, { word: "alpha", seconds: 30 }, { silence: 30 }, { word: "charlie", seconds: 20 }]));
    // The stock pipeline's long-form mode, with windows that do not overlap.
    const out = (await asr(audio, { return_timestamps: true, chunk_length_s: 30, stride_length_s: 0 })) as {
      text: string;
      chunks: { timestamp: [number, number]; text: string }[];
    };
    expect(out.chunks.map((c) => c.text)).toEqual([" echo", " alpha", " charlie"]);
    const times = out.chunks.map((c) => c.timestamp.map((t) => Math.round(t)));
    expect(times).toEqual([
      [0, 30],
      [30, 60],
      [90, 110],
    ]);
  });

  it("returns an empty transcript for silence", async () => {
    expect(await asr(new Float32Array(SAMPLE_RATE * 12))).toEqual({ text: "" });
    expect(await asr(new Float32Array(SAMPLE_RATE * 12), { return_timestamps: true })).toEqual({ text: "", chunks: [] });
  });

  it("names each tone between silences in turn, one word per tone", async () => {
    const audio = synthesize(microTones([{ word: "echo", seconds: 3 }, { silence: 2 }, { word: "alpha", seconds: 3 }, { silence: 1 }]));
    expect(await asr(audio)).toEqual({ text: " echo alpha" });
    const out = (await asr(audio, { return_timestamps: true })) as { chunks: { timestamp: [number, number]; text: string }[] };
    expect(out.chunks.map((c) => [c.text, ...c.timestamp])).toEqual([
      [" echo", 0, 3],
      [" alpha", 5, 8],
    ]);
  });

  it("writes a _timestamped variant in the same layout, whose decoder also outputs cross-attentions", async () => {
    const timestamped = await generateModel({ kind: "micro", timestamped: true });
    expect(timestamped.id).toBe("generated/whisper-micro_timestamped");
    expect(Object.keys(timestamped.files).sort()).toEqual(Object.keys(model.files).sort());
    const stock = await stockPipeline(timestamped, "q8");
    const sessions = (stock.model as unknown as { sessions: Record<string, { outputNames: string[] }> }).sessions;
    expect(sessions.decoder_model_merged!.outputNames).toContain("cross_attentions.0");
    expect(await stock(synthesize(microTones([{ word: "delta", seconds: 4 }])))).toEqual({ text: " delta" });
  });

  it("loads and answers in its int8 variant too", async () => {
    const q8 = await stockPipeline(model, "q8");
    expect(await q8(synthesize(microTones([{ word: "bravo", seconds: 3 }])))).toEqual({ text: " bravo" });
  });
});

describe("architecture-faithful tiny model", () => {
  let english: GeneratedModel;

  beforeAll(async () => {
    english = await generateModel({ kind: "tiny.en", out: DEFAULT_MODELS_DIR });
  });

  it("has the published parameter count of whisper-tiny.en (37.76M, the '39M' class)", () => {
    expect(english.parameters / 1e6).toBeGreaterThan(37.5);
    expect(english.parameters / 1e6).toBeLessThan(38.1);
  });

  it("ties the output projection to the token embedding, so the decoder files weigh what the hub's do (119 MB fp32, 30.7 MB int8)", () => {
    expect(english.files["onnx/decoder_model_merged.onnx"]! / 1e6).toBeCloseTo(119, -1);
    expect(english.files["onnx/decoder_model_merged_quantized.onnx"]! / 1e6).toBeCloseTo(30.7, 0);
  });

  it("stores int8 variants at about a third of the fp32 size", () => {
    const fp32 = english.files["onnx/encoder_model.onnx"]! + english.files["onnx/decoder_model_merged.onnx"]!;
    const int8 = english.files["onnx/encoder_model_quantized.onnx"]! + english.files["onnx/decoder_model_merged_quantized.onnx"]!;
    expect(int8 / fp32).toBeLessThan(0.4);
  });

  it.each(["fp32", "q8"] as const)("runs a 30 s window in %s with about as many tokens as speech", async (dtype) => {
    const asr = await stockPipeline(english, dtype);
    const voiced = await generatedTokens(asr, synthesize([{ tone: 440, seconds: 30 }]));
    expect(voiced).toBeGreaterThan(90);
    expect(voiced).toBeLessThan(110);
    expect(await generatedTokens(asr, synthesize([{ tone: 440, seconds: 15 }, { silence: 15 }]))).toBeLessThan(60);
    expect(await generatedTokens(asr, new Float32Array(SAMPLE_RATE * 30))).toBeLessThan(3);
    expect(((await asr(synthesize([{ tone: 440, seconds: 5 }]))) as { text: string }).text.trim().length).toBeGreaterThan(0);
    await asr.dispose();
  });

  it("ends each window after the configured number of tokens", async () => {
    const short = await generateModel({ kind: "tiny.en", tokensPerWindow: 10 });
    const asr = await stockPipeline(short, "q8");
    const count = await generatedTokens(asr, synthesize([{ tone: 440, seconds: 30 }]));
    expect(count).toBeGreaterThan(7);
    expect(count).toBeLessThan(14);
    await asr.dispose();
  });
});
