/**
 * Silero VAD v5's 16 kHz network, rebuilt from the package's own weights as a graph of matrix
 * products over the whole batch. The published graph computes its STFT and its four convolutions
 * with Conv, which onnxruntime runs one stream at a time: each stream's convolutions are products
 * with 4, 2 or 1 output columns, far too small to keep the core busy, so 32 streams cost 32 times
 * one (29 us a chunk at any batch). Here every convolution is one product of (streams x time) rows,
 * which is what makes batching streams pay. Same weights, same arithmetic up to summation order:
 * the test compares it with the package's graph on real speech and noise.
 */
import { floatTensor, Graph, modelBytes } from "../onnx/graph.ts";
import { Ops } from "../onnx/ops.ts";
import { floatInitializers, type FloatInitializer } from "../onnx/read.ts";

/** Samples a step takes: 64 of context and the 512-sample chunk. */
export const SILERO_INPUT = 576;
export const SILERO_STATE = 128;
/** Reflection padding at the end of the input, so 4 STFT frames of 256 samples at hop 128 fit. */
const STFT_PAD = 64;
const HOP = 128;
const FRAMES = (SILERO_INPUT + STFT_PAD - 2 * HOP) / HOP + 1;
const BINS = 129;

type Weights = Map<string, FloatInitializer>;

function weight(w: Weights, name: string, dims: number[]): Float32Array {
  const t = w.get(name);
  if (!t || t.dims.join() !== dims.join()) {
    throw new Error(`Silero VAD model: ${name} is ${t ? `[${t.dims.join(", ")}]` : "missing"}, expected [${dims.join(", ")}]`);
  }
  return t.data;
}

/**
 * A Conv1d weight [out, in, 3] as the matrix that multiplies time-major columns of the taps `taps`
 * laid side by side: row (tap index within `taps`) * in + channel, column out.
 */
function convMatrix(w: Float32Array, out: number, inputs: number, taps: number[]): Float32Array {
  const m = new Float32Array(taps.length * inputs * out);
  taps.forEach((k, t) => {
    for (let c = 0; c < inputs; c++) for (let o = 0; o < out; o++) m[(t * inputs + c) * out + o] = w[(o * inputs + c) * 3 + k]!;
  });
  return m;
}

function transposed(w: Float32Array, rows: number, cols: number): Float32Array {
  const m = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) m[c * rows + r] = w[r * cols + c]!;
  return m;
}

/**
 * The batched graph's ONNX bytes from the package's model file. Inputs `input` [B, 576] and `state`
 * [2, B, 128] (the LSTM's h and c), outputs `output` [B, 1] (speech probability) and `stateN`, as
 * the package's graph without its sample-rate input (16 kHz only).
 */
export function batchedSileroModel(packageModel: Uint8Array): Uint8Array {
  const w = floatInitializers(packageModel);
  const g = new Graph("silero_vad_16k_batched");
  const o = new Ops(g);
  const param = (prefix: string, dims: number[], data: Float32Array) => g.init(prefix, floatTensor(dims, data));
  const slice = (x: string, start: number, end: number, axis: number, step = 1) => g.op("Slice", [x, o.i64([start]), o.i64([end]), o.i64([axis]), o.i64([step])]);
  const affine = (x: string, m: string, b: string) => o.add(o.matmul(x, m), b);
  const relu = (x: string) => g.op("Relu", [x]);

  const input = g.input("input", "float", ["batch", SILERO_INPUT]);
  const state = g.input("state", "float", [2, "batch", SILERO_STATE]);

  // STFT: frame t is samples [128t, 128t + 256) of the padded input, i.e. hops t and t + 1 side by side.
  const padded = g.op("Pad", [input, o.i64([0, 0, 0, STFT_PAD])], { mode: { s: "reflect" } });
  const hops = o.reshape(padded, [0, FRAMES + 1, HOP]);
  const frames = g.op("Concat", [slice(hops, 0, FRAMES, 1), slice(hops, 1, FRAMES + 1, 1)], { axis: { i: 2 } });
  const basis = weight(w, "model.stft.forward_basis_buffer", [2 * BINS, 1, 2 * HOP]);
  const spectrum = o.matmul(frames, param("stft_basis", [2 * HOP, 2 * BINS], transposed(basis, 2 * BINS, 2 * HOP)));
  const square = (x: string) => o.mul(x, x);
  const magnitude = g.op("Sqrt", [o.add(square(slice(spectrum, 0, BINS, 2)), square(slice(spectrum, BINS, 2 * BINS, 2)))]);

  // The encoder's kernel-3, padding-1 convolutions on [B, time, channels]: zero-pad time by one each
  // side, lay the taps' time slices side by side, one product.
  const conv = (x: string, layer: number, inputs: number, out: number, time: number, stride: number) => {
    const k = weight(w, `model.encoder.${layer}.reparam_conv.weight`, [out, inputs, 3]);
    const b = weight(w, `model.encoder.${layer}.reparam_conv.bias`, [out]);
    const m = param(`encoder${layer}`, [3 * inputs, out], convMatrix(k, out, inputs, [0, 1, 2]));
    const xp = g.op("Pad", [x, o.i64([0, 1, 0, 0, 1, 0])]);
    const outTime = Math.floor((time - 1) / stride) + 1;
    const taps = [0, 1, 2].map((tap) => slice(xp, tap, tap + stride * (outTime - 1) + 1, 1, stride));
    return relu(affine(g.op("Concat", taps, { axis: { i: 2 } }), m, param(`encoder${layer}_bias`, [out], b)));
  };
  const e0 = conv(magnitude, 0, BINS, 128, FRAMES, 1);
  const e1 = conv(e0, 1, 128, 64, FRAMES, 2);
  // Layer 2 (stride 2 over 2 steps) has one output step: its first tap meets only padding.
  const k2 = weight(w, "model.encoder.2.reparam_conv.weight", [64, 64, 3]);
  const e2 = relu(
    affine(
      o.reshape(e1, [0, 2 * 64]),
      param("encoder2", [2 * 64, 64], convMatrix(k2, 64, 64, [1, 2])),
      param("encoder2_bias", [64], weight(w, "model.encoder.2.reparam_conv.bias", [64])),
    ),
  );
  // Layer 3 over one step: only the middle tap meets data.
  const k3 = weight(w, "model.encoder.3.reparam_conv.weight", [128, 64, 3]);
  const e3 = relu(affine(e2, param("encoder3", [64, 128], convMatrix(k3, 128, 64, [1])), param("encoder3_bias", [128], weight(w, "model.encoder.3.reparam_conv.bias", [128]))));

  // LSTM cell, PyTorch's gate order (input, forget, cell, output) in one product of [x, h].
  const H = SILERO_STATE;
  const wih = weight(w, "model.decoder.rnn.weight_ih", [4 * H, H]);
  const whh = weight(w, "model.decoder.rnn.weight_hh", [4 * H, H]);
  const gatesMatrix = new Float32Array(2 * H * 4 * H);
  gatesMatrix.set(transposed(wih, 4 * H, H));
  gatesMatrix.set(transposed(whh, 4 * H, H), H * 4 * H);
  const bih = weight(w, "model.decoder.rnn.bias_ih", [4 * H]);
  const bhh = weight(w, "model.decoder.rnn.bias_hh", [4 * H]);
  const h = g.op("Gather", [state, o.scalarI64(0)], { axis: { i: 0 } });
  const c = g.op("Gather", [state, o.scalarI64(1)], { axis: { i: 0 } });
  const gates = affine(
    g.op("Concat", [e3, h], { axis: { i: 1 } }),
    param("lstm", [2 * H, 4 * H], gatesMatrix),
    param(
      "lstm_bias",
      [4 * H],
      bih.map((v, i) => v + bhh[i]!),
    ),
  );
  const [i, f, cell, out] = g.node("Split", [gates], { axis: { i: 1 } }, 4) as [string, string, string, string];
  const sigmoid = (x: string) => g.op("Sigmoid", [x]);
  const c1 = o.add(o.mul(sigmoid(f), c), o.mul(sigmoid(i), g.op("Tanh", [cell])));
  const h1 = o.mul(sigmoid(out), g.op("Tanh", [c1]));

  const head = affine(
    relu(h1),
    param("head", [H, 1], weight(w, "model.decoder.decoder.2.weight", [1, H, 1])),
    param("head_bias", [1], weight(w, "model.decoder.decoder.2.bias", [1])),
  );
  g.op("Sigmoid", [head], {}, "output");
  g.op("Concat", [o.unsqueeze(h1, [0]), o.unsqueeze(c1, [0])], { axis: { i: 0 } }, "stateN");
  g.output("output", "float", ["batch", 1]);
  g.output("stateN", "float", [2, "batch", H]);
  return modelBytes(g, { producer: "slotscribe", opset: 17 });
}
