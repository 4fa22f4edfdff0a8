/**
 * Silero VAD v5's 16 kHz network, rebuilt from the package's own weights to take a whole run of
 * chunks in one call. The published graph takes one chunk a call and computes its STFT and its four
 * convolutions with Conv, products with 1-4 output columns per chunk, far too small to keep the core
 * busy. Here the STFT and every convolution are one matrix product over all the chunks' frames (they
 * depend only on each chunk's own samples), and the LSTM then runs through the chunks in order (the
 * ONNX LSTM operator, whose input projection is again one product): one call gives what the
 * published graph gives called chunk by chunk, up to summation order; the test compares them on real
 * speech and noise.
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
 * The sequence graph's ONNX bytes from the package's model file. Inputs `input` [chunks, 576] (each
 * chunk's 512 samples after the 64 before them) and `state` [2, 1, 128] (the LSTM's h and c before
 * the first chunk); outputs `output` [chunks, 1] (each chunk's speech probability) and `stateN`
 * (after the last), as the package's graph called once a chunk, without its sample-rate input (16 kHz only).
 */
export function sileroSequenceModel(packageModel: Uint8Array): Uint8Array {
  const w = floatInitializers(packageModel);
  const g = new Graph("silero_vad_16k_sequence");
  const o = new Ops(g);
  const param = (prefix: string, dims: number[], data: Float32Array) => g.init(prefix, floatTensor(dims, data));
  const slice = (x: string, start: number, end: number, axis: number, step = 1) => g.op("Slice", [x, o.i64([start]), o.i64([end]), o.i64([axis]), o.i64([step])]);
  const affine = (x: string, m: string, b: string) => o.add(o.matmul(x, m), b);
  const relu = (x: string) => g.op("Relu", [x]);

  const input = g.input("input", "float", ["chunks", SILERO_INPUT]);
  const state = g.input("state", "float", [2, 1, SILERO_STATE]);

  // STFT: frame t is samples [128t, 128t + 256) of the padded input, i.e. hops t and t + 1 side by side.
  const padded = g.op("Pad", [input, o.i64([0, 0, 0, STFT_PAD])], { mode: { s: "reflect" } });
  const hops = o.reshape(padded, [0, FRAMES + 1, HOP]);
  const frames = g.op("Concat", [slice(hops, 0, FRAMES, 1), slice(hops, 1, FRAMES + 1, 1)], { axis: { i: 2 } });
  const basis = weight(w, "model.stft.forward_basis_buffer", [2 * BINS, 1, 2 * HOP]);
  const spectrum = o.matmul(frames, param("stft_basis", [2 * HOP, 2 * BINS], transposed(basis, 2 * BINS, 2 * HOP)));
  const square = (x: string) => o.mul(x, x);
  const magnitude = g.op("Sqrt", [o.add(square(slice(spectrum, 0, BINS, 2)), square(slice(spectrum, BINS, 2 * BINS, 2)))]);

  // The encoder's kernel-3, padding-1 convolutions on [chunks, time, channels]: zero-pad time by one each
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

  // The LSTM over the chunks in order, as one sequence of batch 1: ONNX's gate order is (input,
  // output, forget, cell), PyTorch's (input, forget, cell, output).
  const H = SILERO_STATE;
  const gateOrder = [0, 3, 1, 2];
  const onnxGates = (m: Float32Array) => {
    const rows = m.length / (4 * H);
    const r = new Float32Array(m.length);
    gateOrder.forEach((from, to) => r.set(m.subarray(from * H * rows, (from + 1) * H * rows), to * H * rows));
    return r;
  };
  const bias = new Float32Array(8 * H);
  bias.set(onnxGates(weight(w, "model.decoder.rnn.bias_ih", [4 * H])));
  bias.set(onnxGates(weight(w, "model.decoder.rnn.bias_hh", [4 * H])), 4 * H);
  const [h, c] = [0, 1].map((k) => o.unsqueeze(g.op("Gather", [state, o.scalarI64(k)], { axis: { i: 0 } }), [0]));
  const [sequence, hN, cN] = g.node(
    "LSTM",
    [
      o.unsqueeze(e3, [1]),
      param("lstm_w", [1, 4 * H, H], onnxGates(weight(w, "model.decoder.rnn.weight_ih", [4 * H, H]))),
      param("lstm_r", [1, 4 * H, H], onnxGates(weight(w, "model.decoder.rnn.weight_hh", [4 * H, H]))),
      param("lstm_b", [1, 8 * H], bias),
      "",
      h!,
      c!,
    ],
    { hidden_size: { i: H } },
    3,
  ) as [string, string, string];

  const head = affine(
    relu(o.reshape(sequence, [-1, H])),
    param("head", [H, 1], weight(w, "model.decoder.decoder.2.weight", [1, H, 1])),
    param("head_bias", [1], weight(w, "model.decoder.decoder.2.bias", [1])),
  );
  g.op("Sigmoid", [head], {}, "output");
  g.op("Concat", [hN, cN], { axis: { i: 0 } }, "stateN");
  g.output("output", "float", ["chunks", 1]);
  g.output("stateN", "float", [2, 1, H]);
  return modelBytes(g, { producer: "slotscribe", opset: 17 });
}
