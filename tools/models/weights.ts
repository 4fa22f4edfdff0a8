import { mulberry32 } from "../../lib/random.ts";
import { floatTensor, int8Tensor, type Graph } from "../../lib/onnx/graph.ts";

/**
 * Deterministic random weights: each tensor's values depend only on the model seed and the tensor's
 * name, so the same arguments always give the same bytes whatever order tensors are built in.
 */
export class WeightSource {
  private readonly cache = new Map<string, Float32Array>();

  constructor(private readonly seed: string) {}

  /** Uniform values with the given standard deviation (the published init_std is 0.02). */
  random(name: string, size: number, std = 0.02): Float32Array {
    const cached = this.cache.get(name);
    if (cached) return cached;
    const next = mulberry32(fnv1a(`${this.seed}/${name}`));
    const half = std * Math.sqrt(3);
    const out = new Float32Array(size);
    for (let i = 0; i < size; i++) out[i] = (next() * 2 - 1) * half;
    this.cache.set(name, out);
    return out;
  }

  filled(size: number, value: number): Float32Array {
    return new Float32Array(size).fill(value);
  }
}

/** A weight matrix for `x @ W`, as plain fp32 or as int8 with a per-tensor scale. */
export function linearWeight(g: Graph, name: string, data: Float32Array, dims: [number, number], quantized: boolean): LinearWeight {
  if (!quantized) return { kind: "fp32", w: g.init(name, floatTensor(dims, data)) };
  let maxAbs = 0;
  for (const v of data) maxAbs = Math.max(maxAbs, Math.abs(v));
  const scale = maxAbs / 127 || 1;
  const q = new Int8Array(data.length);
  for (let i = 0; i < data.length; i++) q[i] = Math.max(-127, Math.min(127, Math.round(data[i]! / scale)));
  return {
    kind: "int8",
    w: g.init(`${name}_quantized`, int8Tensor(dims, q)),
    scale: g.init(`${name}_scale`, floatTensor([], new Float32Array([scale]))),
    zeroPoint: g.init(`${name}_zero_point`, int8Tensor([], new Int8Array([0]))),
  };
}

export type LinearWeight = { kind: "fp32"; w: string } | { kind: "int8"; w: string; scale: string; zeroPoint: string };

/**
 * x @ W, quantized the way onnxruntime's quantize_dynamic writes the published *_quantized files:
 * activations quantized to uint8 at run time, int8 weights, an integer matmul, then one rescale.
 */
export function applyLinear(g: Graph, x: string, weight: LinearWeight): string {
  if (weight.kind === "fp32") return g.op("MatMul", [x, weight.w]);
  const [xq, xScale, xZero] = g.node("DynamicQuantizeLinear", [x], {}, 3) as [string, string, string];
  const acc = g.op("MatMulInteger", [xq, weight.w, xZero, weight.zeroPoint]);
  const accF = g.op("Cast", [acc], { to: { i: 1 } });
  return g.op("Mul", [accF, g.op("Mul", [xScale, weight.scale])]);
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
