/**
 * A whisper.cpp model file (ggml, as its models/convert-pt-to-ggml.py writes it) of the same
 * architecture, vocabulary and mel filters as a generated model directory, for measuring whisper.cpp
 * side by side on the same machine. Its weights are random: whisper.cpp's compute per window and per
 * token depends on the shapes only, and no published weights can be downloaded here.
 */
import { createWriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { WhisperFeatureExtractor } from "@huggingface/transformers";
import { whisperFeatureConfig } from "../../lib/engine/feature-extractor.ts";
import { mulberry32 } from "../../lib/random.ts";
import { byteToUnicode } from "./tokenizer.ts";

const GGML_MAGIC = 0x67676d6c;
const F32 = 0;
const F16 = 1;

interface HfWhisperConfig {
  vocab_size: number;
  num_mel_bins: number;
  d_model: number;
  encoder_layers: number;
  encoder_attention_heads: number;
  decoder_layers: number;
  decoder_attention_heads: number;
  max_source_positions: number;
  max_target_positions: number;
}

interface TensorSpec {
  name: string;
  /** PyTorch's order (rows first), as the converter's numpy arrays have it. */
  shape: number[];
  /** What the tensor holds: layer norms start at 1 and 0, as trained models' stay near. */
  fill: "random" | "ones" | "zeros";
}

/** The tensors of openai/whisper's state dict, in its order, with the converter's shapes. */
function whisperCppTensors(c: HfWhisperConfig): TensorSpec[] {
  const d = c.d_model;
  const linear = (prefix: string, inDim: number, outDim: number, bias = true): TensorSpec[] => [
    { name: `${prefix}.weight`, shape: [outDim, inDim], fill: "random" },
    ...(bias ? [{ name: `${prefix}.bias`, shape: [outDim], fill: "zeros" as const }] : []),
  ];
  const norm = (prefix: string): TensorSpec[] => [
    { name: `${prefix}.weight`, shape: [d], fill: "ones" },
    { name: `${prefix}.bias`, shape: [d], fill: "zeros" },
  ];
  const attention = (prefix: string): TensorSpec[] => [
    ...linear(`${prefix}.query`, d, d),
    ...linear(`${prefix}.key`, d, d, false),
    ...linear(`${prefix}.value`, d, d),
    ...linear(`${prefix}.out`, d, d),
  ];
  const mlp = (prefix: string): TensorSpec[] => [...norm(`${prefix}.mlp_ln`), ...linear(`${prefix}.mlp.0`, d, 4 * d), ...linear(`${prefix}.mlp.2`, 4 * d, d)];
  const tensors: TensorSpec[] = [
    { name: "encoder.positional_embedding", shape: [c.max_source_positions, d], fill: "random" },
    { name: "encoder.conv1.weight", shape: [d, c.num_mel_bins, 3], fill: "random" },
    { name: "encoder.conv1.bias", shape: [d, 1], fill: "zeros" },
    { name: "encoder.conv2.weight", shape: [d, d, 3], fill: "random" },
    { name: "encoder.conv2.bias", shape: [d, 1], fill: "zeros" },
  ];
  for (let i = 0; i < c.encoder_layers; i++) {
    const block = `encoder.blocks.${i}`;
    tensors.push(...attention(`${block}.attn`), ...norm(`${block}.attn_ln`), ...mlp(block));
  }
  tensors.push(...norm("encoder.ln_post"));
  tensors.push(
    { name: "decoder.positional_embedding", shape: [c.max_target_positions, d], fill: "random" },
    { name: "decoder.token_embedding.weight", shape: [c.vocab_size, d], fill: "random" },
  );
  for (let i = 0; i < c.decoder_layers; i++) {
    const block = `decoder.blocks.${i}`;
    tensors.push(...attention(`${block}.attn`), ...norm(`${block}.attn_ln`), ...attention(`${block}.cross_attn`), ...norm(`${block}.cross_attn_ln`), ...mlp(block));
  }
  tensors.push(...norm("decoder.ln"));
  return tensors;
}

/** The converter keeps these in float32; every other tensor of two or more dimensions is float16. */
function keptFloat32(t: TensorSpec): boolean {
  return t.shape.length < 2 || /^(encoder\.conv[12]\.bias|encoder\.positional_embedding|decoder\.positional_embedding)$/.test(t.name);
}

/** float32 -> IEEE half, round to nearest even (the values here are small and finite). */
const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

function toHalf(value: number): number {
  scratch[0] = value;
  const x = scratchBits[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = ((x >>> 23) & 0xff) - 127 + 15;
  const mantissa = x & 0x7fffff;
  if (exponent <= 0) {
    if (exponent < -10) return sign;
    const m = (mantissa | 0x800000) >>> (1 - exponent);
    return sign | ((m + 0xfff + ((m >>> 13) & 1)) >>> 13);
  }
  if (exponent >= 31) return sign | 0x7c00;
  const rounded = (exponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  return sign | (rest > 0x1000 || (rest === 0x1000 && rounded & 1) ? rounded + 1 : rounded);
}

function int32s(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeInt32LE(v, i * 4));
  return b;
}

/** Writes `modelDir`'s architecture as a float16 ggml file at `out`; returns the parameter count. */
export async function writeWhisperCppModel(modelDir: string, out: string): Promise<{ parameters: number; tokens: number }> {
  const config = JSON.parse(await readFile(join(modelDir, "config.json"), "utf8")) as HfWhisperConfig;
  const preprocessor = JSON.parse(await readFile(join(modelDir, "preprocessor_config.json"), "utf8")) as Record<string, unknown>;
  const features = whisperFeatureConfig(new WhisperFeatureExtractor(preprocessor));
  if (!features) throw new Error(`${modelDir} has no Whisper feature extractor`);
  const tokenizer = JSON.parse(await readFile(join(modelDir, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number> } };
  // As the converter reads vocab.json: every byte-level token but <|endoftext|>, in id order;
  // whisper.cpp numbers them from 0 and adds the special tokens itself.
  const byteOf = new Map(byteToUnicode().map((ch, byte) => [ch, byte]));
  const vocab = Object.entries(tokenizer.model.vocab)
    .filter(([token]) => token !== "<|endoftext|>")
    .sort((a, b) => a[1] - b[1])
    .map(([token]) => Buffer.from([...token].map((ch) => byteOf.get(ch) ?? 0)));
  const tensors = whisperCppTensors(config);
  await pipeline(Readable.from(ggmlChunks(config, features.melFilters, vocab, tensors)), createWriteStream(out));
  return { parameters: tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0), tokens: vocab.length };
}

/** The file in order: header, mel filters, vocabulary, then each tensor's header and values. */
function* ggmlChunks(config: HfWhisperConfig, filters: number[][], vocab: Buffer[], tensors: TensorSpec[]): Generator<Buffer> {
  yield int32s(
    GGML_MAGIC,
    config.vocab_size,
    config.max_source_positions,
    config.d_model,
    config.encoder_attention_heads,
    config.encoder_layers,
    config.max_target_positions,
    config.d_model,
    config.decoder_attention_heads,
    config.decoder_layers,
    config.num_mel_bins,
    F16,
  );
  yield int32s(filters.length, filters[0]!.length);
  yield Buffer.from(Float32Array.from(filters.flat()).buffer);
  yield int32s(vocab.length);
  for (const token of vocab) yield Buffer.concat([int32s(token.length), token]);
  let seed = 0;
  for (const tensor of tensors) {
    const half = !keptFloat32(tensor);
    const name = Buffer.from(tensor.name);
    yield Buffer.concat([int32s(tensor.shape.length, name.length, half ? F16 : F32), int32s(...[...tensor.shape].reverse()), name]);
    const count = tensor.shape.reduce((a, b) => a * b, 1);
    const next = mulberry32((seed += count));
    // The published init_std is 0.02 (uniform with that deviation); written in blocks of 1M values.
    const bound = 0.02 * Math.sqrt(3);
    for (let start = 0; start < count; start += 1 << 20) {
      const n = Math.min(1 << 20, count - start);
      const values = new Float32Array(n);
      if (tensor.fill === "ones") values.fill(1);
      else if (tensor.fill === "random") for (let i = 0; i < n; i++) values[i] = (next() * 2 - 1) * bound;
      if (!half) {
        yield Buffer.from(values.buffer);
        continue;
      }
      const halves = new Uint16Array(n);
      for (let i = 0; i < n; i++) halves[i] = toHalf(values[i]!);
      yield Buffer.from(halves.buffer);
    }
  }
}
