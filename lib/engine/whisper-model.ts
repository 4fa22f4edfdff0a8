import { pipeline, type AutomaticSpeechRecognitionPipeline } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { featureDims, whisperFeatures, type WhisperFeatureConfig } from "../audio/log-mel.ts";
import { useFastLogMel, whisperFeatureConfig } from "./feature-extractor.ts";
import { encoderSession } from "./fused-encoder.ts";
import { GreedyPicker } from "./greedy-picker.ts";
import { releaseBuffer } from "../buffer-release.ts";
import type { ModelInfo, ModelSpec } from "./protocol.ts";
import { WhisperRules, type WhisperGenerationConfig } from "./whisper-rules.ts";

/** The part of an onnxruntime session the decoder uses (transformers.js keeps the sessions it creates). */
interface Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** `fetches`: every output wanted by name, each null or a tensor onnxruntime writes that output into. */
  run(feeds: Record<string, ort.Tensor>, fetches?: Record<string, ort.Tensor | null>): Promise<Record<string, ort.Tensor>>;
}

/**
 * onnxruntime session options for every model.
 * - Sequential execution on all of the instance's cores as intra-op threads: one thread runs every
 *   ONNX call (onnxruntime-node's run() is a synchronous native call), so each call should use the
 *   whole machine, and Whisper's graphs are chains an inter-op pool would not speed up.
 * - No spinning: the decoder runs small steps with JavaScript in between (logit rules, batching), and
 *   spinning pool threads would take the cores that JavaScript and ffmpeg need.
 * - No CPU memory arena: the arena keeps the high-water mark of every run (the encoder's attention
 *   scores, [1, heads, 1500, 1500] floats per layer, plus its power-of-two growth) for the life of the
 *   process, ~250 MiB for tiny; without it the encoder's buffers are returned after each run.
 */
export function sessionOptions(threads: number): Record<string, unknown> {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: false,
    logSeverityLevel: 3,
    extra: {
      session: {
        intra_op: { allow_spinning: "0" },
        inter_op: { allow_spinning: "0" },
      },
    },
  };
}

/** Frees a tensor's memory now (see buffer-release.ts): it must be the only user of its buffer, and no one may read it any more. */
function releaseTensor(t: ort.Tensor): void {
  releaseBuffer((t.data as Float32Array).buffer);
}

/** One layer's past tensors, by the merged decoder's input names. */
interface KvName {
  past: string;
  present: string;
  /** Cross-attention K/V: computed on the first step only and kept for the rest. */
  cross: boolean;
}

/** Per-call state of a group of rows decoded together: everything the merged decoder reads back. */
export interface BatchState {
  rows: number;
  /** The rows' encoder outputs, [rows, frames, d_model]. */
  encoderStates: ort.Tensor;
  /** Past key/values by input name, [rows, heads, length, head_dim]. */
  past: Map<string, ort.Tensor>;
  /** Tokens each row has in its cache. */
  position: number;
}

/**
 * The alignment heads' cross-attention of one decoder call: `(row, position, frames)` gives that
 * row's attention at that input position over the first `frames` encoder positions, head-major.
 */
export type AttentionAt = (row: number, position: number, frames: number) => Float32Array;

/**
 * A Whisper model loaded once: the feature extractor, the encoder and the merged decoder sessions,
 * the tokenizer and the decoding rules, from the published ONNX export layout (encoder_model,
 * decoder_model_merged with past_key_values and use_cache_branch). transformers.js loads the files
 * (hub or local directory, dtype variants, tokenizer and configs); the decoding loop is ours, so that
 * any number of windows share one copy through batched calls.
 */
export class WhisperModel {
  readonly rules: WhisperRules;
  readonly vocabSize: number;
  readonly frames: number;
  readonly dModel: number;
  readonly multilingual: boolean;
  /** Language token id to its code ("en"). */
  readonly languages: Map<number, string>;
  /** <|startofprev|>, which opens a prompt, and <|nocaptions|>, whose probability says "no speech". */
  readonly startOfPrev: number;
  readonly noSpeech: number;
  /** generation_config's alignment_heads, [layer, head], when the decoder outputs their cross-attention. */
  readonly alignmentHeads: readonly [number, number][];
  private readonly kv: KvName[];
  private readonly heads: number;
  private readonly headDim: number;

  private constructor(
    /** The stock pipeline the parts came from (profilers instrument its sessions). */
    readonly asr: AutomaticSpeechRecognitionPipeline,
    private readonly encoder: Session,
    private readonly decoder: Session,
    readonly generation: WhisperGenerationConfig,
    readonly info: ModelInfo,
    /** What its features are computed with, so they can be computed on another thread (whisperFeatures). */
    readonly featureConfig: WhisperFeatureConfig,
    /** Greedy choices (token and log-probability) from masked logits, in onnxruntime. */
    readonly picker: GreedyPicker,
  ) {
    const config = asr.model.config as unknown as { d_model: number; decoder_attention_heads: number; vocab_size: number; max_source_positions: number };
    this.rules = new WhisperRules(generation);
    this.vocabSize = config.vocab_size;
    this.frames = config.max_source_positions;
    this.dModel = config.d_model;
    this.heads = config.decoder_attention_heads;
    this.headDim = config.d_model / config.decoder_attention_heads;
    this.multilingual = Boolean(generation.is_multilingual);
    this.languages = new Map(Object.entries(generation.lang_to_id ?? {}).map(([token, id]) => [id, token.slice(2, -2)]));
    this.startOfPrev = asr.tokenizer.convert_tokens_to_ids("<|startofprev|>");
    this.noSpeech = noSpeechToken(asr.tokenizer, generation.no_timestamps_token_id);
    this.kv = decoder.inputNames
      .filter((name) => name.startsWith("past_key_values."))
      .map((past) => ({ past, present: past.replace("past_key_values", "present"), cross: past.includes(".encoder.") }));
    const heads = generation.alignment_heads ?? [];
    const exported = heads.length > 0 && heads.every(([layer]) => decoder.outputNames.includes(`cross_attentions.${layer}`));
    this.alignmentHeads = exported ? heads : [];
  }

  /** Whether words can be timed: the decoder is an export with cross-attention outputs (the hub's `_timestamped` ones). */
  get wordTimestamps(): boolean {
    return this.alignmentHeads.length > 0;
  }

  static async load(spec: ModelSpec, threads: number, sessionOverrides: Record<string, unknown> = {}, tempDir?: string): Promise<WhisperModel> {
    const before = process.memoryUsage().rss;
    const asr = await pipeline("automatic-speech-recognition", spec.id, {
      dtype: spec.dtype,
      device: "cpu",
      session_options: { ...sessionOptions(threads), ...sessionOverrides },
    });
    const extractor = (asr.processor as unknown as { feature_extractor: unknown }).feature_extractor;
    const featureConfig = whisperFeatureConfig(extractor);
    if (!featureConfig) throw new Error(`model ${spec.id} has no Whisper feature extractor (preprocessor_config.json)`);
    useFastLogMel(extractor);
    const sessions = (asr.model as unknown as { sessions: Record<string, Session & { release(): Promise<void> }> }).sessions;
    const decoder = sessions.decoder_model_merged;
    if (!sessions.model || !decoder) throw new Error(`model ${spec.id} lacks encoder_model or decoder_model_merged (sessions: ${Object.keys(sessions).join(", ")})`);
    const config = asr.model.config as unknown as { encoder_attention_heads: number };
    const replaced = await encoderSession(spec, sessions.model, config.encoder_attention_heads, featureConfig, { ...sessionOptions(threads), ...sessionOverrides }, tempDir);
    // The pipeline's own calls (profilers) use it too.
    if (replaced) sessions.model = replaced.session;
    const encoder = sessions.model;
    for (const name of ["input_ids", "encoder_hidden_states", "use_cache_branch"]) {
      if (!decoder.inputNames.includes(name)) throw new Error(`model ${spec.id}: decoder_model_merged has no input ${name}; only merged decoders with a KV cache are supported`);
    }
    const generation = (asr.model as unknown as { generation_config: WhisperGenerationConfig }).generation_config;
    const info = {
      multilingual: Boolean(generation.is_multilingual),
      footprintBytes: Math.max(0, process.memoryUsage().rss - before),
      wordTimestamps: false,
      rowStateBytes: 0,
      fusedAttentionLayers: replaced?.layers ?? 0,
      ...(replaced?.refused ? { fusedAttentionRefused: replaced.refused } : {}),
    };
    const picker = await GreedyPicker.create({ ...sessionOptions(threads), ...sessionOverrides });
    const model = new WhisperModel(asr, encoder, decoder, generation, info, featureConfig, picker);
    info.wordTimestamps = model.wordTimestamps;
    info.rowStateBytes = model.rowBytes(model.rules.maxLength);
    return model;
  }

  /**
   * The encoder's output for one window, [frames, d_model], from its samples (up to 30 s at 16 kHz),
   * or from their features when computed already (whisperFeatures with featureConfig).
   */
  async encode(samples: Float32Array, features: Float32Array = whisperFeatures(samples, this.featureConfig)): Promise<Float32Array> {
    const input_features = new ort.Tensor("float32", features, [1, ...featureDims(this.featureConfig)]);
    const out = await this.encoder.run({ input_features });
    releaseTensor(input_features);
    return out.last_hidden_state!.data as Float32Array;
  }

  decode(tokens: number[]): string {
    // The tokenizer refuses an empty list; a window may decode no text at all.
    return tokens.length === 0 ? "" : this.asr.tokenizer.decode(tokens, { skip_special_tokens: false });
  }

  encodeText(text: string): number[] {
    return Array.from(this.asr.tokenizer.encode(text, { add_special_tokens: false }));
  }

  /**
   * The initial tokens of a window: [<|startofprev|> prompt...] <|startoftranscript|> [<|lang|> <|task|>].
   * A prompt keeps its last tokens up to half the text context, as Whisper does.
   */
  initTokens(language: string | null, task: "transcribe" | "translate", prompt?: string): { tokens: number[]; sotIndex: number } {
    const prefix = prompt?.trim() ? [this.startOfPrev, ...this.encodeText(` ${prompt.trim()}`).slice(-(Math.floor(this.rules.maxLength / 2) - 1))] : [];
    if (!this.multilingual) return { tokens: [...prefix, this.rules.sot], sotIndex: prefix.length };
    const lang = this.generation.lang_to_id?.[`<|${language ?? "en"}|>`];
    const taskId = this.generation.task_to_id?.[task];
    if (lang === undefined) throw new Error(`the model has no language token for ${language}`);
    if (taskId === undefined) throw new Error(`the model has no task token for ${task}`);
    return { tokens: [...prefix, this.rules.sot, lang, taskId], sotIndex: prefix.length };
  }

  /** Bytes of state one row keeps while it decodes at `position` (cross and self K/V, encoder output). */
  rowBytes(position: number): number {
    const cross = this.kv.filter((k) => k.cross).length * this.heads * this.frames * this.headDim;
    const self = this.kv.filter((k) => !k.cross).length * this.heads * position * this.headDim;
    return 4 * (cross + self + this.frames * this.dModel + this.vocabSize);
  }

  /**
   * The first decoder call of a group of rows: their initial tokens (all of one length) over their
   * encoder outputs. Returns the last position's logits per row, the logits right after
   * <|startoftranscript|> (at `sotIndex`, where Whisper reads the no-speech probability), the
   * alignment heads' attention and the group's cache. `sameAs[i]`, when below i, names an earlier row
   * with the same encoder output and tokens (the beams or samples of one window): its results are
   * copied instead of computed again.
   */
  async prefill(
    encoded: Float32Array[],
    tokens: number[][],
    sotIndex = tokens[0]!.length - 1,
    sameAs: readonly number[] = [],
  ): Promise<{ logits: Float32Array[]; sotLogits: Float32Array[]; attention: AttentionAt; state: BatchState }> {
    const rows = encoded.length;
    const size = this.frames * this.dModel;
    const states = new Float32Array(rows * size);
    encoded.forEach((e, i) => states.set(e, i * size));
    // The group's cache, [rows, heads, length, head_dim] a tensor: onnxruntime writes each row's
    // straight into its part. Returned like any other output, a row's cross-attention K/V (tiny: 18
    // MB) would be written into a buffer of onnxruntime's and copied into these besides
    // onnxruntime-node's own copy.
    const positions = tokens[0]!.length;
    const past = new Map(
      this.kv.map((k) => {
        const length = k.cross ? this.frames : positions;
        return [k.past, new ort.Tensor("float32", new Float32Array(rows * this.heads * length * this.headDim), [rows, this.heads, length, this.headDim])];
      }),
    );
    const logits: Float32Array[] = [];
    const sotLogits: Float32Array[] = [];
    const attentions: AttentionAt[] = [];
    // One row at a time: a first call over the whole group would hold every row's K/V twice at its
    // peak (onnxruntime-node copies every output into a buffer of its own, even one it wrote into
    // ours), 37 MB a row for tiny; row by row, one row's copy at most.
    for (let i = 0; i < rows; i++) {
      const same = sameAs[i] ?? i;
      if (same < i) {
        for (const group of past.values()) {
          const data = group.data as Float32Array;
          const rowSize = data.length / rows;
          data.copyWithin(i * rowSize, same * rowSize, (same + 1) * rowSize);
        }
        // Copies: each row's logits are masked in place by its own rules.
        logits.push(logits[same]!.slice());
        sotLogits.push(sotLogits[same]!);
        attentions.push(attentions[same]!);
        continue;
      }
      const row: BatchState = {
        rows: 1,
        encoderStates: new ort.Tensor("float32", states.subarray(i * size, (i + 1) * size), [1, this.frames, this.dModel]),
        past: new Map(this.kv.map((k) => [k.past, new ort.Tensor("float32", new Float32Array(0), [1, this.heads, 0, this.headDim])])),
        position: 0,
      };
      const into = new Map(
        [...past].map(([name, group]) => {
          const data = group.data as Float32Array;
          const rowSize = data.length / rows;
          return [name, new ort.Tensor("float32", data.subarray(i * rowSize, (i + 1) * rowSize), [1, ...group.dims.slice(1)])];
        }),
      );
      const ids = BigInt64Array.from(tokens[i]!.map(BigInt));
      const out = await this.run(row, new ort.Tensor("int64", ids, [1, ids.length]), false, into);
      logits.push(out.logits[0]!);
      sotLogits.push(out.at(sotIndex)[0]!);
      attentions.push(out.attention);
      // onnxruntime-node's copies of what is already in the group's tensors.
      for (const t of row.past.values()) releaseTensor(t);
    }
    const state: BatchState = { rows, encoderStates: new ort.Tensor("float32", states, [rows, this.frames, this.dModel]), past, position: positions };
    return { logits, sotLogits, attention: (row, position, frames) => attentions[row]!(0, position, frames), state };
  }

  /** One step for every row of the group: each row's last token in, its next logits (and attention, at position 0) out. */
  async step(state: BatchState, lastTokens: number[]): Promise<{ logits: Float32Array[]; attention: AttentionAt }> {
    const ids = BigInt64Array.from(lastTokens.map(BigInt));
    const { logits, attention } = await this.run(state, new ort.Tensor("int64", ids, [state.rows, 1]), true);
    return { logits, attention };
  }

  /**
   * Runs the decoder; `logits` are each row's last position, `at(i)` each row's position i. Outputs
   * named in `into` (by their past input's name) are written into its tensors.
   */
  private async run(
    state: BatchState,
    inputIds: ort.Tensor,
    cached: boolean,
    into?: ReadonlyMap<string, ort.Tensor>,
  ): Promise<{ logits: Float32Array[]; at: (position: number) => Float32Array[]; attention: AttentionAt }> {
    const feeds: Record<string, ort.Tensor> = {
      input_ids: inputIds,
      encoder_hidden_states: state.encoderStates,
      use_cache_branch: new ort.Tensor("bool", Uint8Array.from([cached ? 1 : 0]), [1]),
    };
    for (const [name, tensor] of state.past) feeds[name] = tensor;
    let fetches: Record<string, ort.Tensor | null> | undefined;
    if (into) {
      fetches = Object.fromEntries(this.decoder.outputNames.map((name) => [name, null]));
      for (const k of this.kv) if (into.has(k.past)) fetches[k.present] = into.get(k.past)!;
    }
    const out = await this.decoder.run(feeds, fetches);
    for (const k of this.kv) {
      // Later steps return no cross-attention K/V (or the same again): the first step's are kept.
      if (!cached || !k.cross) {
        const old = state.past.get(k.past);
        state.past.set(k.past, out[k.present]!);
        if (old) releaseTensor(old);
      }
    }
    state.position += inputIds.dims[1]!;
    const seq = out.logits!.dims[1]!;
    const data = out.logits!.data as Float32Array;
    const V = this.vocabSize;
    const at = (position: number) => Array.from({ length: state.rows }, (_, r) => data.subarray((r * seq + position) * V, (r * seq + position + 1) * V));
    const heads = this.alignmentHeads;
    const attention: AttentionAt = (row, position, frames) => {
      const rows = new Float32Array(heads.length * frames);
      heads.forEach(([layer, head], i) => {
        const t = out[`cross_attentions.${layer}`]!;
        const [, H, S, F] = t.dims as [number, number, number, number];
        const offset = ((row * H + head) * S + position) * F;
        rows.set((t.data as Float32Array).subarray(offset, offset + frames), i * frames);
      });
      return rows;
    };
    return { logits: at(seq - 1), at, attention };
  }

  /** Softmax probability of one token in a row of raw logits. */
  static probability(logits: Float32Array, token: number): number {
    let max = -Infinity;
    for (let j = 0; j < logits.length; j++) if (logits[j]! > max) max = logits[j]!;
    let sum = 0;
    for (let j = 0; j < logits.length; j++) if (logits[j]! > max - 30) sum += Math.exp(logits[j]! - max);
    return Math.exp(logits[token]! - max) / sum;
  }

  /**
   * Row i of a group's self-attention cache becomes row sources[i]'s (beam search keeps the best
   * continuations, whichever beam they came from). The cross-attention K/V and encoder states stay:
   * a row may only take another's cache if both decode the same window, whose are the same.
   */
  reorderRows(state: BatchState, sources: readonly number[]): void {
    if (sources.every((s, i) => s === i)) return;
    for (const k of this.kv) {
      if (k.cross) continue;
      const t = state.past.get(k.past)!;
      const data = t.data as Float32Array;
      const size = data.length / state.rows;
      const moved = new Float32Array(data.length);
      sources.forEach((s, i) => moved.set(data.subarray(s * size, (s + 1) * size), i * size));
      state.past.set(k.past, new ort.Tensor("float32", moved, t.dims));
      releaseTensor(t);
    }
  }

  /**
   * One group of `a`'s rows then `b`'s, both at the same position; both are freed. Tensor by tensor,
   * so that at any moment at most one tensor's rows are held twice.
   */
  static mergeStates(a: BatchState, b: BatchState): BatchState {
    if (a.position !== b.position) throw new Error(`cannot merge groups at positions ${a.position} and ${b.position}`);
    const join = (x: ort.Tensor, y: ort.Tensor): ort.Tensor => {
      const xd = x.data as Float32Array;
      const yd = y.data as Float32Array;
      // Read before the release: a view of a freed buffer has length 0.
      const split = xd.length;
      const data = new Float32Array(split + yd.length);
      data.set(xd);
      releaseTensor(x);
      data.set(yd, split);
      releaseTensor(y);
      return new ort.Tensor("float32", data, [a.rows + b.rows, ...x.dims.slice(1)]);
    };
    const past = new Map([...a.past].map(([name, t]) => [name, join(t, b.past.get(name)!)]));
    return { rows: a.rows + b.rows, encoderStates: join(a.encoderStates, b.encoderStates), past, position: a.position };
  }

  /** Frees a group's state once no row of it decodes any more. */
  static releaseState(state: BatchState): void {
    releaseTensor(state.encoderStates);
    for (const t of state.past.values()) releaseTensor(t);
  }

  /**
   * Keeps only the given rows (indices into the group, in order) of a group's state, moving them
   * down in place: new buffers would hold the group twice at a moment when memory is at its peak.
   * Once the rows left fill half their buffer or less, they move to one their size and the old one
   * is freed: otherwise a group whose rows but one had finished held every row's cross-attention
   * K/V and encoder output for as long as that one decoded (tiny: 21 MB a row), beside the new
   * groups started on the rows it gave up, past what the slot plan counts.
   */
  static keepRows(state: BatchState, keep: number[]): void {
    const compact = (t: ort.Tensor): ort.Tensor => {
      const data = t.data as Float32Array;
      const size = data.length / state.rows;
      keep.forEach((r, i) => {
        if (r !== i) data.copyWithin(i * size, r * size, (r + 1) * size);
      });
      const kept = data.subarray(0, keep.length * size);
      const dims = [keep.length, ...t.dims.slice(1)];
      if (2 * kept.byteLength > data.buffer.byteLength) return new ort.Tensor("float32", kept, dims);
      const moved = kept.slice();
      releaseBuffer(data.buffer);
      return new ort.Tensor("float32", moved, dims);
    };
    state.encoderStates = compact(state.encoderStates);
    for (const [name, t] of state.past) state.past.set(name, compact(t));
    state.rows = keep.length;
  }
}

/**
 * The token whose probability after the start token says "no speech": <|nocaptions|>, which the
 * large-v3 tokenizers (turbo's too) call <|nospeech|>; every Whisper vocabulary has it right before
 * <|notimestamps|>.
 */
export function noSpeechToken(tokenizer: { convert_tokens_to_ids(tokens: string[]): (number | undefined)[] }, noTimestamps: number): number {
  const [noCaptions, noSpeech] = tokenizer.convert_tokens_to_ids(["<|nocaptions|>", "<|nospeech|>"]);
  return noCaptions ?? noSpeech ?? noTimestamps - 1;
}
