import { floatTensor, Graph, int64Tensor } from "../../lib/onnx/graph.ts";
import { Ops } from "../../lib/onnx/ops.ts";
import { applyLinear, linearWeight, type LinearWeight, type WeightSource } from "./weights.ts";

/** The config.json fields that fix a Whisper graph's shapes. */
export interface WhisperDims {
  d_model: number;
  encoder_layers: number;
  encoder_attention_heads: number;
  encoder_ffn_dim: number;
  decoder_layers: number;
  decoder_attention_heads: number;
  decoder_ffn_dim: number;
  vocab_size: number;
  num_mel_bins: number;
  max_source_positions: number;
  max_target_positions: number;
}

/** Token ids the decoder's length control needs. */
export interface ControlTokens {
  eos: number;
  timestampBegin: number;
}

const NEG = -1e4;
/**
 * Random weights give nearly flat logits (every token about -10 in log-probability) whose best token
 * barely moves from step to step: Whisper's checks would reject every window as unsure and repetitive.
 * A trained model is confident and its text varies, so each position's text token gets this much more.
 */
const TEXT_LEAD = 20;
const FORCE = 3e4;

/**
 * Marks each encoder frame as voiced or not and writes the mark into channel 0 of the encoder output.
 * The decoder reads it to decide how many tokens a window deserves, so generated models emit about as
 * many tokens as real speech would, and none for silence. Frames are voiced when their loudest mel
 * band is within 56 dB (1.4 in Whisper's normalised log-mel units) of the window's loudest, in a
 * window that is not silent altogether. At 20 dB the quieter half of speech (soft consonants, the
 * ends of words) counted as unvoiced: the bench's 300 s of read speech gave 39 text tokens a window,
 * where Whisper writes about 100 for 30 s of such speech; at 56 dB it gives 81 (windows average 27 s).
 */
export function voicedFlags(o: Ops, features: string): string {
  const perFrame = o.reduce("ReduceMax", features, [1], false);
  const pairs = o.reshape(perFrame, [0, -1, 2]);
  const perPosition = o.reduce("ReduceMax", pairs, [2], false);
  const windowMax = o.reduce("ReduceMax", perPosition, [1], true);
  const loud = o.g.op("Greater", [perPosition, o.sub(windowMax, o.f(1.4))]);
  const notSilent = o.g.op("Greater", [windowMax, o.f(-0.5)]);
  return o.unsqueeze(o.cast(o.g.op("And", [loud, notSilent]), "float"), [2]);
}

export interface VoicedSummary {
  /** [B] fraction of voiced positions. */
  fraction: string;
  /** [B] bool, true when no position is voiced. */
  silent: string;
  /** [B] int64 index of the first and last voiced position (0..1499). */
  first: string;
  last: string;
}

/**
 * The timestamp position where the voiced part ends. The spectrogram's 25 ms frames smear an edge
 * into the next 20 ms position, so the last voiced position is taken as the end itself; audio voiced
 * through the window's final position ends at 30.00.
 */
export function voicedEnd(o: Ops, last: string, positions: number): string {
  const throughEnd = o.g.op("Equal", [last, o.scalarI64(positions - 1)]);
  return o.where(throughEnd, o.scalarI64(positions), last);
}

function summarizeVoiced(o: Ops, encoderStates: string): VoicedSummary {
  const flags = o.squeeze(o.slice(encoderStates, [0], [1], [2]), [2]);
  const fraction = o.reduce("ReduceMean", flags, [1], false);
  return {
    fraction,
    silent: o.g.op("Equal", [fraction, o.f(0)]),
    first: o.g.op("ArgMax", [flags], { axis: { i: 1 }, keepdims: { i: 0 } }),
    last: o.g.op("ArgMax", [flags], { axis: { i: 1 }, keepdims: { i: 0 }, select_last_index: { i: 1 } }),
  };
}

function sinusoids(length: number, channels: number): Float32Array {
  const out = new Float32Array(length * channels);
  const half = channels / 2;
  const increment = Math.log(10000) / (half - 1);
  for (let t = 0; t < length; t++) {
    for (let i = 0; i < half; i++) {
      const angle = t * Math.exp(-increment * i);
      out[t * channels + i] = Math.sin(angle);
      out[t * channels + half + i] = Math.cos(angle);
    }
  }
  return out;
}

/**
 * Where a graph's parameters live. The decoder builds its layer stack twice, once per branch of the
 * use_cache_branch If node (as the published merged exports do); both branches read the same
 * initializers from the outer graph by name, so every weight is stored once.
 */
class Params {
  private readonly made = new Map<string, unknown>();

  constructor(
    readonly g: Graph,
    readonly w: WeightSource,
    readonly quantized: boolean,
  ) {}

  private once<T>(name: string, make: () => T): T {
    if (!this.made.has(name)) this.made.set(name, make());
    return this.made.get(name) as T;
  }

  weight(name: string, rows: number, cols: number): LinearWeight {
    return this.once(name, () => linearWeight(this.g, name, this.w.random(name, rows * cols), [rows, cols], this.quantized));
  }

  bias(name: string, size: number): string {
    return this.once(name, () => this.g.init(name, floatTensor([size], this.w.random(name, size))));
  }

  filled(name: string, size: number, value: number): string {
    return this.once(name, () => this.g.init(name, floatTensor([size], this.w.filled(size, value))));
  }
}

class Layers {
  constructor(
    readonly o: Ops,
    readonly p: Params,
  ) {}

  get g(): Graph {
    return this.o.g;
  }

  linear(x: string, name: string, rows: number, cols: number, withBias = true): string {
    const y = applyLinear(this.g, x, this.p.weight(`${name}.weight`, rows, cols));
    return withBias ? this.o.add(y, this.p.bias(`${name}.bias`, cols)) : y;
  }

  layerNorm(x: string, name: string, size: number): string {
    return this.o.layerNorm(x, this.p.filled(`${name}.weight`, size, 1), this.p.filled(`${name}.bias`, size, 0));
  }

  /** [B, T, d] -> [B, H, T, d/H] */
  heads(x: string, heads: number, headDim: number): string {
    return this.o.transpose(this.o.reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
  }

  /** [B, H, T, d/H] -> [B, T, d] */
  merge(x: string, d: number): string {
    return this.o.reshape(this.o.transpose(x, [0, 2, 1, 3]), [0, 0, d]);
  }

  /**
   * The query projection scaled by 1/sqrt(head_dim) before it is split into heads, as Whisper does
   * (q_proj(x) * scaling) and its published exports contain. Scaling next to the score MatMul instead
   * lets onnxruntime fold it into the MatMul's alpha, which takes the decoder's one-row cross-attention
   * MatMuls off MLAS's unpacked M=1 kernels.
   */
  query(x: string, name: string, d: number, heads: number, headDim: number): string {
    return this.heads(this.o.mul(this.linear(x, name, d, d), this.o.f(1 / Math.sqrt(headDim))), heads, headDim);
  }

  /** softmax(q k^T + mask) v for a query already scaled by query(). */
  attend(q: string, k: string, v: string, mask?: string): string {
    return this.attention(q, k, v, mask).output;
  }

  /** attend(), also giving the attention weights, [B, H, T, S]. */
  attention(q: string, k: string, v: string, mask?: string): { output: string; weights: string } {
    const o = this.o;
    const scores = o.matmul(q, o.transpose(k, [0, 1, 3, 2]));
    const weights = o.softmax(mask ? o.add(scores, mask) : scores);
    return { output: o.matmul(weights, v), weights };
  }

  feedForward(x: string, name: string, d: number, ffn: number): string {
    const h = this.layerNorm(x, `${name}.final_layer_norm`, d);
    const up = this.o.gelu(this.linear(h, `${name}.fc1`, d, ffn));
    return this.o.add(x, this.linear(up, `${name}.fc2`, ffn, d));
  }
}

/** The Whisper encoder (two convolutions, sinusoidal positions, pre-norm transformer layers). */
export function buildEncoder(dims: WhisperDims, weights: WeightSource, quantized: boolean): Graph {
  const g = new Graph("whisper_encoder");
  const o = new Ops(g);
  const P = new Params(g, weights, quantized);
  const L = new Layers(o, P);
  const d = dims.d_model;
  const heads = dims.encoder_attention_heads;
  const headDim = d / heads;
  const features = g.input("input_features", "float", ["batch_size", dims.num_mel_bins, 2 * dims.max_source_positions]);

  const conv = (x: string, name: string, inCh: number, stride: number) =>
    o.gelu(
      g.op("Conv", [x, g.init(`${name}.weight`, floatTensor([d, inCh, 3], weights.random(`${name}.weight`, d * inCh * 3))), P.bias(`${name}.bias`, d)], {
        kernel_shape: { ints: [3] },
        pads: { ints: [1, 1] },
        strides: { ints: [stride] },
      }),
    );
  let x = conv(conv(features, "encoder.conv1", dims.num_mel_bins, 1), "encoder.conv2", d, 2);
  x = o.transpose(x, [0, 2, 1]);
  x = o.add(x, g.init("encoder.embed_positions.weight", floatTensor([dims.max_source_positions, d], sinusoids(dims.max_source_positions, d))));

  for (let i = 0; i < dims.encoder_layers; i++) {
    const p = `encoder.layers.${i}`;
    const h = L.layerNorm(x, `${p}.self_attn_layer_norm`, d);
    const q = L.query(h, `${p}.self_attn.q_proj`, d, heads, headDim);
    const k = L.heads(L.linear(h, `${p}.self_attn.k_proj`, d, d, false), heads, headDim);
    const v = L.heads(L.linear(h, `${p}.self_attn.v_proj`, d, d), heads, headDim);
    x = o.add(x, L.linear(L.merge(L.attend(q, k, v), d), `${p}.self_attn.out_proj`, d, d));
    x = L.feedForward(x, p, d, dims.encoder_ffn_dim);
  }
  x = L.layerNorm(x, "encoder.layer_norm", d);

  const hidden = o.slice(x, [1], [d], [2]);
  g.op("Concat", [voicedFlags(o, features), hidden], { axis: { i: 2 } }, "last_hidden_state");
  g.output("last_hidden_state", "float", ["batch_size", dims.max_source_positions, d]);
  return g;
}

export interface DecoderIO {
  g: Graph;
  o: Ops;
  inputIds: string;
  encoderStates: string;
  useCacheBranch: string;
  pastDecoder: { key: string; value: string }[];
  pastEncoder: { key: string; value: string }[];
}

/** The inputs and outputs transformers.js expects of decoder_model_merged.onnx. */
export function decoderInterface(layers: number, heads: number, headDim: number, d: number): DecoderIO {
  const g = new Graph("whisper_decoder_merged");
  const inputIds = g.input("input_ids", "int64", ["batch_size", "decoder_sequence_length"]);
  const encoderStates = g.input("encoder_hidden_states", "float", ["batch_size", "encoder_sequence_length", d]);
  const pastDecoder = [];
  const pastEncoder = [];
  for (let i = 0; i < layers; i++) {
    const past = (kind: string, part: string, len: string) => g.input(`past_key_values.${i}.${kind}.${part}`, "float", ["batch_size", heads, len, headDim]);
    pastDecoder.push({ key: past("decoder", "key", "past_decoder_sequence_length"), value: past("decoder", "value", "past_decoder_sequence_length") });
    pastEncoder.push({ key: past("encoder", "key", "encoder_sequence_length_out"), value: past("encoder", "value", "encoder_sequence_length_out") });
  }
  const useCacheBranch = g.input("use_cache_branch", "bool", [1]);
  return { g, o: new Ops(g), inputIds, encoderStates, useCacheBranch, pastDecoder, pastEncoder };
}

/**
 * `crossAttentions`: also the cross-attention weights of every layer, as the hub's `_timestamped`
 * exports output them (cross_attentions.{layer}, [batch, heads, tokens, encoder positions]) for
 * word alignment.
 */
export function declareDecoderOutputs(io: DecoderIO, layers: number, heads: number, headDim: number, vocab: number, crossAttentions = false): void {
  io.g.output("logits", "float", ["batch_size", "decoder_sequence_length", vocab]);
  for (let i = 0; i < layers; i++) {
    for (const part of ["key", "value"]) {
      io.g.output(`present.${i}.decoder.${part}`, "float", ["batch_size", heads, "past_decoder_sequence_length + 1", headDim]);
      io.g.output(`present.${i}.encoder.${part}`, "float", ["batch_size", heads, "encoder_sequence_length_out", headDim]);
    }
  }
  for (let i = 0; i < layers && crossAttentions; i++) {
    io.g.output(`cross_attentions.${i}`, "float", ["batch_size", heads, "decoder_sequence_length", "encoder_sequence_length_out"]);
  }
}

/**
 * Cross-attention keys and values are computed from the encoder output on the first step only; later
 * steps pass the cached ones through. One If node over all layers. The micro model uses this; the
 * faithful decoder puts its whole layer stack in the branches instead (see decoderLayers).
 */
export function crossAttentionCache(io: DecoderIO, compute: (g: Graph) => { key: string; value: string }[]): void {
  const names = io.pastEncoder.flatMap((_, i) => [`present.${i}.encoder.key`, `present.${i}.encoder.value`]);
  const withPast = io.g.subgraph("use_cache_branch_true");
  for (const past of io.pastEncoder) {
    withPast.output(withPast.op("Identity", [past.key]), "float", null);
    withPast.output(withPast.op("Identity", [past.value]), "float", null);
  }
  const fresh = io.g.subgraph("use_cache_branch_false");
  for (const kv of compute(fresh)) {
    fresh.output(kv.key, "float", null);
    fresh.output(kv.value, "float", null);
  }
  io.g.node("If", [io.useCacheBranch], { then_branch: { g: withPast }, else_branch: { g: fresh } }, names);
}

/** Absolute positions of the current query tokens: past length .. past length + seq - 1. */
function queryPositions(io: DecoderIO): { positions: string; pastLength: string; total: string } {
  const o = io.o;
  const pastLength = o.squeeze(o.dim(io.pastDecoder[0]!.key, 2), [0]);
  const total = o.add(pastLength, o.squeeze(o.dim(io.inputIds, 1), [0]));
  return { positions: io.g.op("Range", [pastLength, total, o.scalarI64(1)]), pastLength, total };
}

export interface DecoderOptions {
  /** Tokens per 30 s of fully voiced audio before end-of-text is forced. */
  tokensPerWindow: number;
  control: ControlTokens;
  /** Output every layer's cross-attention weights (the `_timestamped` variant). */
  crossAttentions?: boolean;
}

interface Branch {
  withPast: boolean;
  layers: Layers;
}

/**
 * The decoder layer stack inside an If on use_cache_branch, built once per branch as in the published
 * merged exports (optimum's merge_decoders). The first step (no past) computes the cross-attention
 * keys and values from the encoder output and returns them as present.*.encoder.*; later steps read
 * them straight from past_key_values.*.encoder.* and return empty [0, heads, 1, head_dim] constants
 * in their place, which transformers.js ignores (it keeps the past ones). Passing the 1500-row cross
 * cache through instead would copy it into every step's outputs.
 */
function decoderLayers(
  io: DecoderIO,
  P: Params,
  dims: WhisperDims,
  crossKV: (branch: Branch, layer: number) => { key: string; value: string },
  embedded: string,
  causalMask: string,
  crossAttentions: boolean,
): string {
  const d = dims.d_model;
  const heads = dims.decoder_attention_heads;
  const headDim = d / heads;
  const hiddenName = "decoder_hidden_states";
  const outputs: string[] = [hiddenName];
  for (let i = 0; i < dims.decoder_layers; i++) {
    outputs.push(`present.${i}.decoder.key`, `present.${i}.decoder.value`, `present.${i}.encoder.key`, `present.${i}.encoder.value`);
  }
  for (let i = 0; i < dims.decoder_layers && crossAttentions; i++) outputs.push(`cross_attentions.${i}`);

  const build = (withPast: boolean) => {
    const bg = io.g.subgraph(withPast ? "use_cache_branch_true" : "use_cache_branch_false");
    const L = new Layers(new Ops(bg), P);
    const o = L.o;
    const branch = { withPast, layers: L };
    const presents: string[] = [];
    const weights: string[] = [];
    let x = embedded;
    for (let i = 0; i < dims.decoder_layers; i++) {
      const p = `decoder.layers.${i}`;
      let h = L.layerNorm(x, `${p}.self_attn_layer_norm`, d);
      const q = L.query(h, `${p}.self_attn.q_proj`, d, heads, headDim);
      const k = bg.op("Concat", [io.pastDecoder[i]!.key, L.heads(L.linear(h, `${p}.self_attn.k_proj`, d, d, false), heads, headDim)], { axis: { i: 2 } });
      const v = bg.op("Concat", [io.pastDecoder[i]!.value, L.heads(L.linear(h, `${p}.self_attn.v_proj`, d, d), heads, headDim)], { axis: { i: 2 } });
      x = o.add(x, L.linear(L.merge(L.attend(q, k, v, causalMask), d), `${p}.self_attn.out_proj`, d, d));

      const cross = crossKV(branch, i);
      h = L.layerNorm(x, `${p}.encoder_attn_layer_norm`, d);
      const cq = L.query(h, `${p}.encoder_attn.q_proj`, d, heads, headDim);
      const attended = L.attention(cq, cross.key, cross.value);
      weights.push(attended.weights);
      x = o.add(x, L.linear(L.merge(attended.output, d), `${p}.encoder_attn.out_proj`, d, d));
      x = L.feedForward(x, p, d, dims.decoder_ffn_dim);

      if (withPast) {
        const empty = () => bg.op("Constant", [], { value: { t: { type: "float", dims: [0, heads, 1, headDim], raw: new Uint8Array(0) } } });
        presents.push(k, v, empty(), empty());
      } else {
        presents.push(k, v, cross.key, cross.value);
      }
    }
    for (const name of [x, ...presents, ...(crossAttentions ? weights : [])]) bg.output(name, "float", null);
    return bg;
  };

  io.g.node("If", [io.useCacheBranch], { then_branch: { g: build(true) }, else_branch: { g: build(false) } }, outputs);
  return hiddenName;
}

/**
 * The Whisper decoder with self-attention KV cache, cross-attention over the encoder output and tied
 * output projection. Its random logits are steered only in which token ends the text, and when:
 * timestamps stay out of the text, a window opens with <|0.00|>, and after about
 * tokensPerWindow x (voiced fraction) tokens it closes with the last voiced time and end-of-text.
 */
export function buildDecoder(dims: WhisperDims, weights: WeightSource, quantized: boolean, options: DecoderOptions): Graph {
  const d = dims.d_model;
  const heads = dims.decoder_attention_heads;
  const headDim = d / heads;
  const io = decoderInterface(dims.decoder_layers, heads, headDim, d);
  const { g, o } = io;
  const P = new Params(g, weights, quantized);
  const L = new Layers(o, P);

  const { positions, total } = queryPositions(io);
  const table = linearWeight(g, "decoder.embed_tokens.weight", weights.random("decoder.embed_tokens.weight", dims.vocab_size * d), [dims.vocab_size, d], quantized);
  const embedded = o.add(
    embedTokens(g, table, io.inputIds),
    g.op("Gather", [
      g.init("decoder.embed_positions.weight", floatTensor([dims.max_target_positions, d], weights.random("decoder.embed_positions.weight", dims.max_target_positions * d))),
      positions,
    ]),
  );

  const keyPositions = g.op("Range", [o.scalarI64(0), total, o.scalarI64(1)]);
  const future = g.op("Greater", [o.unsqueeze(keyPositions, [0]), o.unsqueeze(positions, [1])]);
  const causalMask = o.where(future, o.f(NEG), o.f(0));

  const hidden = decoderLayers(
    io,
    P,
    dims,
    (branch, i) => {
      if (branch.withPast) return { key: io.pastEncoder[i]!.key, value: io.pastEncoder[i]!.value };
      const BL = branch.layers;
      const p = `decoder.layers.${i}.encoder_attn`;
      return {
        key: BL.heads(BL.linear(io.encoderStates, `${p}.k_proj`, d, d, false), heads, headDim),
        value: BL.heads(BL.linear(io.encoderStates, `${p}.v_proj`, d, d), heads, headDim),
      };
    },
    embedded,
    causalMask,
    options.crossAttentions ?? false,
  );
  const x = L.layerNorm(hidden, "decoder.layer_norm", d);

  const rawLogits = tiedProjection(io, x, table, d, dims.vocab_size);

  lengthControlLogits(io, positions, dims, options, rawLogits, "logits");
  declareDecoderOutputs(io, dims.decoder_layers, heads, headDim, dims.vocab_size, options.crossAttentions);
  return g;
}

/** Token embedding lookup; int8 variants store the table quantized, as quantize_dynamic does for Gather. */
function embedTokens(g: Graph, table: LinearWeight, ids: string): string {
  if (table.kind === "fp32") return g.op("Gather", [table.w, ids]);
  return g.op("DequantizeLinear", [g.op("Gather", [table.w, ids]), table.scale, table.zeroPoint]);
}

/**
 * The output projection tied to the token embedding, as the current published exports store it: one
 * [vocab, d] table serves the lookup and, transposed inside the product, the logits. A Gemm with
 * transB (QGemm for int8) reads the table as it is; a Transpose node would be folded into a second,
 * transposed copy when the session loads.
 */
function tiedProjection(io: DecoderIO, x: string, table: LinearWeight, d: number, vocab: number): string {
  const { g, o } = io;
  const rows = o.reshape(x, [-1, d]);
  let logits: string;
  if (table.kind === "fp32") {
    logits = g.op("Gemm", [rows, table.w], { transB: { i: 1 } });
  } else {
    const [xq, xScale, xZero] = g.node("DynamicQuantizeLinear", [rows], {}, 3) as [string, string, string];
    logits = g.node("QGemm", [xq, xScale, xZero, table.w, table.scale, table.zeroPoint], { transB: { i: 1 } }, 1, "com.microsoft")[0]!;
  }
  const shape = g.op("Concat", [o.slice(g.op("Shape", [x]), [0], [2], [0]), o.i64([vocab])], { axis: { i: 0 } });
  return g.op("Reshape", [logits, shape]);
}

/**
 * logits = raw logits + a fixed bias (timestamps held down), plus FORCE on one token where the
 * length control says so: the closing timestamp on the step the budget runs out, end-of-text after
 * it (or at once on silence); before that, TEXT_LEAD on a text token that varies with the position.
 * The three entries are added with one ScatterElements rather than as dense one-hot [B, S, V]
 * tensors, so the control costs two vocabulary-sized passes per step instead of about ten; the
 * published exports have none of this, so it should stay negligible next to the model.
 */
function lengthControlLogits(io: DecoderIO, positions: string, dims: WhisperDims, options: DecoderOptions, rawLogits: string, name: string): void {
  const { g, o } = io;
  const { eos, timestampBegin } = options.control;
  const V = dims.vocab_size;
  const voiced = summarizeVoiced(o, io.encoderStates);

  const base = new Float32Array(V);
  base.fill(NEG, timestampBegin + 1);
  base[timestampBegin] = NEG / 2;

  // The first generated token sits at position 1 to 4 depending on the prompt; 3 is the middle ground.
  const budget = o.add(o.f(3), g.op("Ceil", [o.mul(voiced.fraction, o.f(options.tokensPerWindow))]));
  const pos = o.unsqueeze(o.cast(positions, "float"), [0]);
  const limit = o.unsqueeze(budget, [1]);
  const silent = o.unsqueeze(voiced.silent, [1]);
  const closing = g.op("And", [g.op("Equal", [pos, limit]), g.op("Not", [silent])]);
  const ended = g.op("Or", [g.op("Greater", [pos, limit]), silent]);
  const endTime = o.add(o.scalarI64(timestampBegin), voicedEnd(o, voiced.last, dims.max_source_positions));

  // [B, S, 2] indices (closing timestamp, end-of-text) and the amounts to add there (FORCE or 0).
  const column = g.op("Concat", [o.dim(closing, 0), o.dim(closing, 1), o.i64([1])], { axis: { i: 0 } });
  // A different ordinary word at each position (7919 is prime, so positions never repeat one).
  const textToken = o.add(g.op("Mod", [o.mul(positions, o.scalarI64(7919)), o.scalarI64(eos - 1000)]), o.scalarI64(1000));
  const indices = g.op(
    "Concat",
    [
      g.op("Expand", [o.unsqueeze(endTime, [1, 2]), column]),
      g.op("Expand", [g.init("eos_index", int64Tensor([1, 1, 1], [eos])), column]),
      g.op("Expand", [o.unsqueeze(textToken, [0, 2]), column]),
    ],
    { axis: { i: 2 } },
  );
  const force = (flag: string, amount = FORCE) => o.unsqueeze(o.mul(o.cast(flag, "float"), o.f(amount)), [2]);
  const speaking = g.op("Not", [g.op("Or", [closing, ended])]);
  const updates = g.op("Concat", [force(closing), force(ended), force(speaking, TEXT_LEAD)], { axis: { i: 2 } });
  const biased = o.add(rawLogits, g.init("timestamp_bias", floatTensor([V], base)));
  g.op("ScatterElements", [biased, indices, updates], { axis: { i: 2 }, reduction: { s: "add" } }, name);
}
