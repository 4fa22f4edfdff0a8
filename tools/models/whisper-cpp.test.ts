import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseWhisperBench } from "../bench/experiments/whisper-cpp.ts";
import { generateModel, type GeneratedModel } from "./generate.ts";
import { writeWhisperCppModel } from "./whisper-cpp.ts";

interface GgmlTensor {
  name: string;
  /** ggml's order: the fastest-moving dimension first. */
  ne: number[];
  type: number;
  offset: number;
}

/** Reads a whisper.cpp model file the way src/whisper.cpp's loader walks it (whisper_model_load). */
function readGgml(bytes: Buffer) {
  let at = 0;
  const i32 = () => {
    const v = bytes.readInt32LE(at);
    at += 4;
    return v;
  };
  const magic = i32() >>> 0;
  const names = ["n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype"];
  const hparams = Object.fromEntries(names.map((n) => [n, i32()]));
  const melRows = i32();
  const melColumns = i32();
  const mel = new Float32Array(bytes.buffer.slice(bytes.byteOffset + at, bytes.byteOffset + at + 4 * melRows * melColumns));
  at += 4 * melRows * melColumns;
  const vocab: Buffer[] = [];
  for (let n = i32(), i = 0; i < n; i++) {
    const length = i32();
    vocab.push(bytes.subarray(at, at + length));
    at += length;
  }
  const tensors: GgmlTensor[] = [];
  while (at < bytes.length) {
    const dims = i32();
    const nameLength = i32();
    const type = i32();
    const ne = Array.from({ length: dims }, i32);
    const name = bytes.subarray(at, at + nameLength).toString();
    at += nameLength;
    tensors.push({ name, ne, type, offset: at });
    at += ne.reduce((a, b) => a * b, 1) * (type === 1 ? 2 : 4);
  }
  return { magic, hparams, mel: { rows: melRows, columns: melColumns, values: mel }, vocab, tensors, end: at };
}

function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

describe("whisper.cpp model file of a generated model", () => {
  let model: GeneratedModel;
  let dir: string;
  let file: ReturnType<typeof readGgml>;
  let config: Record<string, number>;

  beforeAll(async () => {
    model = await generateModel({ kind: "tiny.en" });
    dir = await mkdtemp(join(tmpdir(), "ggml-"));
    const out = join(dir, "ggml-tiny.en-f16.bin");
    await writeWhisperCppModel(model.path, out);
    file = readGgml(await readFile(out));
    config = JSON.parse(await readFile(join(model.path, "config.json"), "utf8"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("declares the model's architecture in whisper.cpp's header, as float16", () => {
    expect(file.magic).toBe(0x67676d6c);
    expect(file.hparams).toEqual({
      n_vocab: config.vocab_size,
      n_audio_ctx: 1500,
      n_audio_state: 384,
      n_audio_head: 6,
      n_audio_layer: 4,
      n_text_ctx: 448,
      n_text_state: 384,
      n_text_head: 6,
      n_text_layer: 4,
      n_mels: 80,
      ftype: 1,
    });
  });

  it("carries the model's mel filters and its byte-level vocabulary as bytes, without <|endoftext|>", async () => {
    expect([file.mel.rows, file.mel.columns]).toEqual([80, 201]);
    expect(file.mel.values.some((v) => v > 0)).toBe(true);
    const tokenizer = JSON.parse(await readFile(join(model.path, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number> } };
    const ids = new Map(Object.entries(tokenizer.model.vocab));
    expect(file.vocab).toHaveLength(ids.size - 1);
    // "Ġthe" is " the" in GPT-2's byte-to-character table; "Ċ" is a newline.
    expect(file.vocab[ids.get("Ġthe")!]!.toString()).toBe(" the");
    expect(file.vocab[ids.get("Ċ")!]!.toString()).toBe("\n");
  });

  it("has every tensor whisper.cpp's loader creates, once, in ggml's dimension order, and nothing after the last", () => {
    const names = file.tensors.map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
    // whisper.cpp creates 5 + 15 per encoder layer + 2 (ln_post) and 4 + 24 per decoder layer + 2 (decoder.ln).
    expect(names).toHaveLength(5 + 15 * 4 + 2 + 4 + 24 * 4);
    const byName = new Map(file.tensors.map((t) => [t.name, t]));
    expect(byName.get("encoder.conv1.weight")!.ne).toEqual([3, 80, 384]);
    expect(byName.get("encoder.conv1.bias")!.ne).toEqual([1, 384]);
    expect(byName.get("encoder.blocks.3.mlp.0.weight")!.ne).toEqual([384, 1536]);
    expect(byName.get("decoder.token_embedding.weight")!.ne).toEqual([384, config.vocab_size]);
    expect(byName.get("decoder.blocks.0.cross_attn.key.bias")).toBeUndefined();
    expect(byName.get("decoder.blocks.3.cross_attn.value.bias")!.ne).toEqual([384]);
    // float32 where the converter keeps it: vectors, conv biases and positional embeddings.
    expect(byName.get("encoder.positional_embedding")!.type).toBe(0);
    expect(byName.get("decoder.ln.weight")!.type).toBe(0);
    expect(byName.get("decoder.blocks.0.attn.query.weight")!.type).toBe(1);
  });

  it("writes finite weights of the published initialisation's scale, and layer norms at 1", async () => {
    const bytes = await readFile(join(dir, "ggml-tiny.en-f16.bin"));
    const q = file.tensors.find((t) => t.name === "decoder.blocks.1.attn.query.weight")!;
    const values = Array.from({ length: 4096 }, (_, i) => halfToFloat(bytes.readUInt16LE(q.offset + 2 * i)));
    const std = Math.sqrt(values.reduce((a, v) => a + v * v, 0) / values.length);
    expect(values.every(Number.isFinite)).toBe(true);
    expect(std).toBeGreaterThan(0.015);
    expect(std).toBeLessThan(0.025);
    const norm = file.tensors.find((t) => t.name === "encoder.blocks.0.attn_ln.weight")!;
    expect(bytes.readFloatLE(norm.offset)).toBe(1);
    expect(bytes.length).toBe(file.end);
  });
});

describe("whisper-bench's timings", () => {
  it("reads the encoder's and the single-token decoder's per-run milliseconds", () => {
    const output = [
      "whisper_print_timings:     load time =    37.30 ms",
      "whisper_print_timings:   encode time =   310.40 ms /     1 runs (   310.40 ms per run)",
      "whisper_print_timings:   decode time =   289.71 ms /   256 runs (     1.13 ms per run)",
      "whisper_print_timings:   batchd time =   295.04 ms /   320 runs (     0.92 ms per run)",
    ].join("\n");
    expect(parseWhisperBench(output)).toEqual({ encodeMs: 310.4, decodeMsPerToken: 1.13 });
    expect(() => parseWhisperBench("error: failed to initialize whisper context")).toThrow(/no encode time/);
  });
});
