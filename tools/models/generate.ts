import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeModel, type Graph } from "../../lib/onnx/graph.ts";
import { ensureDirectory } from "../../lib/directories.ts";
import { buildMicroDecoder, buildMicroEncoder, microDims, microTokenLayout } from "./micro.ts";
import { buildTokenLayout, tokenizerConfigJson, tokenizerJson, WHISPER_LANGUAGES, type TokenLayout } from "./tokenizer.ts";
import { WeightSource } from "./weights.ts";
import { buildDecoder, buildEncoder, type WhisperDims } from "./whisper-graph.ts";
import { TIMESTAMPED_SUFFIX } from "../../lib/engine/models.ts";

/**
 * Writes Whisper model directories in the transformers.js layout of the published ONNX exports, with
 * graphs this project builds itself: the designed micro model, or architecture-faithful models with
 * deterministic random weights at the published sizes.
 */
export const GENERATED_KINDS = ["micro", "tiny", "tiny.en", "base", "base.en", "small", "small.en"] as const;
export type GeneratedKind = (typeof GENERATED_KINDS)[number];

/** Bump when the graphs or files change, so cached directories are rebuilt. */
const GENERATOR_VERSION = 13;
const OPSET = 17;
export const DEFAULT_TOKENS_PER_WINDOW = 100;

const ARCHITECTURES: Record<"tiny" | "base" | "small", { d_model: number; layers: number; heads: number; ffn: number }> = {
  tiny: { d_model: 384, layers: 4, heads: 6, ffn: 1536 },
  base: { d_model: 512, layers: 6, heads: 8, ffn: 2048 },
  small: { d_model: 768, layers: 12, heads: 12, ffn: 3072 },
};

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const DEFAULT_MODELS_DIR = join(REPO_ROOT, ".cache", "models");

export function sharedDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.SLOTSCRIBE_SHARED_DIR ?? join(REPO_ROOT, "..", "shared");
}

export interface GenerateOptions {
  kind: GeneratedKind;
  /** Parent directory; the model is written to `<out>/<model id>`. */
  out?: string;
  /** Tokens per fully voiced 30 s window before end-of-text (faithful models only). */
  tokensPerWindow?: number;
  /** Where the published tokenizer/config files are; generated ones are used when absent. */
  metadataDir?: string;
  /**
   * The `_timestamped` variant, as the hub publishes it beside each model: a separate model id whose
   * decoder also outputs its cross-attention weights (cross_attentions.{layer}), for word timestamps.
   */
  timestamped?: boolean;
  log?: (line: string) => void;
}

export interface GeneratedModel {
  id: string;
  path: string;
  kind: GeneratedKind;
  /** Parameters of the fp32 graphs, counting the tied output projection once. */
  parameters: number;
  files: Record<string, number>;
  reused: boolean;
  seconds: number;
}

function generatedModelId(kind: GeneratedKind, tokensPerWindow = DEFAULT_TOKENS_PER_WINDOW, timestamped = false): string {
  const suffix = kind !== "micro" && tokensPerWindow !== DEFAULT_TOKENS_PER_WINDOW ? `-t${tokensPerWindow}` : "";
  return `generated/whisper-${kind}${suffix}${timestamped ? TIMESTAMPED_SUFFIX : ""}`;
}

const STAMP = "slotscribe-generated.json";

export async function generateModel(options: GenerateOptions): Promise<GeneratedModel> {
  const started = performance.now();
  const tokensPerWindow = options.tokensPerWindow ?? DEFAULT_TOKENS_PER_WINDOW;
  if (!Number.isInteger(tokensPerWindow) || tokensPerWindow < 1 || tokensPerWindow > 440) {
    throw new RangeError("tokensPerWindow must be an integer from 1 to 440");
  }
  const timestamped = options.timestamped ?? false;
  const id = generatedModelId(options.kind, tokensPerWindow, timestamped);
  const path = join(resolve(options.out ?? DEFAULT_MODELS_DIR), id);
  const plan = await planModel(options.kind, tokensPerWindow, options.metadataDir ?? join(sharedDir(), "whisper-metadata"), timestamped);
  const fingerprint = createHash("sha256")
    .update(JSON.stringify({ v: GENERATOR_VERSION, kind: options.kind, tokensPerWindow, timestamped, files: plan.jsonFiles }))
    .digest("hex");

  const stampPath = join(path, STAMP);
  if (existsSync(stampPath)) {
    const stamp = JSON.parse(await readFile(stampPath, "utf8")) as { fingerprint: string; parameters: number; files: Record<string, number> };
    if (stamp.fingerprint === fingerprint) {
      return { id, path, kind: options.kind, parameters: stamp.parameters, files: stamp.files, reused: true, seconds: (performance.now() - started) / 1000 };
    }
  }

  // Built beside the target and renamed into place, so a crash never leaves a half-written model
  // that a later run would take for complete.
  const staging = `${path}.partial-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  // Not mkdir's recursive form: it never returns for a folder under /proc (see ensureDirectory).
  await ensureDirectory(join(staging, "onnx"));
  const files: Record<string, number> = {};
  for (const [name, content] of Object.entries(plan.jsonFiles)) {
    const text = JSON.stringify(content, null, 2);
    await writeFile(join(staging, name), text);
    files[name] = Buffer.byteLength(text);
  }
  let parameters = 0;
  for (const quantized of [false, true]) {
    const suffix = quantized ? "_quantized" : "";
    const graphs: [string, Graph][] = [
      [`onnx/encoder_model${suffix}.onnx`, plan.encoder(quantized)],
      [`onnx/decoder_model_merged${suffix}.onnx`, plan.decoder(quantized)],
    ];
    for (const [name, graph] of graphs) {
      options.log?.(`writing ${name}`);
      if (!quantized) parameters += graph.parameterCount;
      files[name] = await writeModel(join(staging, name), graph, {
        producer: `slotscribe-generator-${GENERATOR_VERSION}`,
        opset: OPSET,
        extraOpsets: [{ domain: "com.microsoft", version: 1 }],
      });
    }
  }
  await writeFile(join(staging, STAMP), JSON.stringify({ fingerprint, kind: options.kind, tokensPerWindow, parameters, files }, null, 2));
  await rm(path, { recursive: true, force: true });
  await ensureDirectory(dirname(path));
  await rename(staging, path);
  return { id, path, kind: options.kind, parameters, files, reused: false, seconds: (performance.now() - started) / 1000 };
}

interface ModelPlan {
  jsonFiles: Record<string, object>;
  encoder(quantized: boolean): Graph;
  decoder(quantized: boolean): Graph;
}

const PREPROCESSOR_CONFIG = {
  chunk_length: 30,
  feature_extractor_type: "WhisperFeatureExtractor",
  feature_size: 80,
  hop_length: 160,
  n_fft: 400,
  n_samples: 480000,
  nb_max_frames: 3000,
  padding_side: "right",
  padding_value: 0.0,
  processor_class: "WhisperProcessor",
  return_attention_mask: false,
  sampling_rate: 16000,
};

async function planModel(kind: GeneratedKind, tokensPerWindow: number, metadataDir: string, timestamped: boolean): Promise<ModelPlan> {
  if (kind === "micro") return microPlan(timestamped);
  const size = kind.replace(".en", "") as keyof typeof ARCHITECTURES;
  const english = kind.endsWith(".en");
  const arch = ARCHITECTURES[size];
  const published = await readPublishedMetadata(metadataDir, kind);

  const layout = published ? null : fallbackLayout(english);
  const vocabSize = published ? (published.config.vocab_size as number) : layout!.vocabSize;
  const dims: WhisperDims = {
    d_model: arch.d_model,
    encoder_layers: arch.layers,
    encoder_attention_heads: arch.heads,
    encoder_ffn_dim: arch.ffn,
    decoder_layers: arch.layers,
    decoder_attention_heads: arch.heads,
    decoder_ffn_dim: arch.ffn,
    vocab_size: vocabSize,
    num_mel_bins: 80,
    max_source_positions: 1500,
    max_target_positions: 448,
  };
  const config = {
    ...(published?.config ?? fallbackConfig(layout!, english)),
    ...dims,
    num_hidden_layers: arch.layers,
    _name_or_path: `slotscribe/generated-whisper-${kind}${timestamped ? TIMESTAMPED_SUFFIX : ""}`,
  };
  const generation: Record<string, unknown> = { ...(published?.generation ?? fallbackGeneration(layout!, english)), alignment_heads: lastLayerHeads(arch.layers, arch.heads) };
  const noTimestamps = generation.no_timestamps_token_id as number;
  const control = { eos: generation.eos_token_id as number, timestampBegin: noTimestamps + 1 };
  const weights = new WeightSource(`whisper-${size}`);
  return {
    jsonFiles: {
      "config.json": config,
      "generation_config.json": generation,
      "preprocessor_config.json": PREPROCESSOR_CONFIG,
      "tokenizer.json": published?.tokenizer ?? tokenizerJson(layout!),
      "tokenizer_config.json": published?.tokenizerConfig ?? tokenizerConfigJson(),
    },
    encoder: (quantized) => buildEncoder(dims, weights, quantized),
    decoder: (quantized) => buildDecoder(dims, weights, quantized, { tokensPerWindow, control, crossAttentions: timestamped }),
  };
}

function microPlan(timestamped: boolean): ModelPlan {
  const layout = microTokenLayout();
  const dims = microDims(layout);
  const generation = {
    ...fallbackGeneration(layout, true),
    // The designed decoder may open a segment anywhere in the window and may end at once on silence.
    begin_suppress_tokens: [],
    suppress_tokens: [],
    max_initial_timestamp_index: 1500,
    alignment_heads: [[0, 0]],
  };
  return {
    jsonFiles: {
      "config.json": {
        ...fallbackConfig(layout, true),
        ...dims,
        num_hidden_layers: 1,
        _name_or_path: `slotscribe/generated-whisper-micro${timestamped ? TIMESTAMPED_SUFFIX : ""}`,
      },
      "generation_config.json": generation,
      "preprocessor_config.json": PREPROCESSOR_CONFIG,
      "tokenizer.json": tokenizerJson(layout),
      "tokenizer_config.json": tokenizerConfigJson(),
    },
    // Nothing in the micro graphs is a weight matrix, so its "quantized" files are the same graphs.
    encoder: () => buildMicroEncoder(),
    decoder: () => buildMicroDecoder(layout, timestamped),
  };
}

interface PublishedMetadata {
  config: Record<string, unknown>;
  generation: Record<string, unknown>;
  tokenizer: object;
  tokenizerConfig: object;
}

/** The real non-weight files of the nearest published checkpoint: same tokenizer for every size. */
async function readPublishedMetadata(metadataDir: string, kind: GeneratedKind): Promise<PublishedMetadata | null> {
  const source = kind.endsWith(".en") ? ["whisper-tiny.en", "whisper-base.en"] : ["whisper-tiny"];
  for (const name of source) {
    const dir = join(metadataDir, name);
    const files = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"];
    if (
      !(
        await Promise.all(
          files.map((f) =>
            stat(join(dir, f)).then(
              () => true,
              () => false,
            ),
          ),
        )
      ).every(Boolean)
    )
      continue;
    const [config, generation, tokenizer, tokenizerConfig] = await Promise.all(files.map(async (f) => JSON.parse(await readFile(join(dir, f), "utf8"))));
    return { config, generation, tokenizer, tokenizerConfig };
  }
  return null;
}

/**
 * The published id layout (English-only checkpoints have one text token fewer) without the published
 * merges, for machines that lack the real tokenizer files.
 */
function fallbackLayout(english: boolean): TokenLayout {
  return buildTokenLayout([], WHISPER_LANGUAGES.slice(0, 99), english ? 50256 : 50257);
}

/** The decoder prompt and suppressed tokens, which config.json and generation_config.json both carry. */
function forcedAndSuppressed(layout: TokenLayout, english: boolean): Record<string, unknown> {
  return {
    forced_decoder_ids: english
      ? [[1, layout.noTimestamps]]
      : [
          [1, null],
          [2, layout.transcribe],
        ],
    begin_suppress_tokens: [220, layout.eos],
    suppress_tokens: [],
  };
}

function fallbackConfig(layout: TokenLayout, english: boolean): Record<string, unknown> {
  return {
    architectures: ["WhisperForConditionalGeneration"],
    model_type: "whisper",
    activation_function: "gelu",
    is_encoder_decoder: true,
    scale_embedding: false,
    use_cache: true,
    bos_token_id: layout.eos,
    eos_token_id: layout.eos,
    pad_token_id: layout.eos,
    decoder_start_token_id: layout.sot,
    ...forcedAndSuppressed(layout, english),
  };
}

function fallbackGeneration(layout: TokenLayout, english: boolean): Record<string, unknown> {
  const multilingual = english
    ? {}
    : {
        lang_to_id: Object.fromEntries(Object.entries(layout.languages).map(([code, id]) => [`<|${code}|>`, id])),
        task_to_id: { transcribe: layout.transcribe, translate: layout.translate },
      };
  return {
    bos_token_id: layout.eos,
    decoder_start_token_id: layout.sot,
    eos_token_id: layout.eos,
    pad_token_id: layout.eos,
    ...forcedAndSuppressed(layout, english),
    is_multilingual: !english,
    max_initial_timestamp_index: 50,
    max_length: 448,
    no_timestamps_token_id: layout.noTimestamps,
    return_timestamps: false,
    ...multilingual,
  };
}

function lastLayerHeads(layers: number, heads: number): number[][] {
  return Array.from({ length: heads }, (_, h) => [layers - 1, h]);
}
