import { floatTensor, int64Tensor, type Graph } from "./graph.ts";

/** Small typed helpers over Graph so model builders read like the architecture they describe. */
export class Ops {
  constructor(readonly g: Graph) {}

  f(value: number): string {
    return this.g.init("c", floatTensor([], new Float32Array([value])));
  }

  i64(values: number[]): string {
    return this.g.init("c", int64Tensor([values.length], values));
  }

  scalarI64(value: number): string {
    return this.g.init("c", int64Tensor([], [value]));
  }

  add(a: string, b: string): string {
    return this.g.op("Add", [a, b]);
  }

  sub(a: string, b: string): string {
    return this.g.op("Sub", [a, b]);
  }

  mul(a: string, b: string): string {
    return this.g.op("Mul", [a, b]);
  }

  matmul(a: string, b: string): string {
    return this.g.op("MatMul", [a, b]);
  }

  cast(x: string, to: "float" | "int64" | "bool"): string {
    return this.g.op("Cast", [x], { to: { i: { float: 1, int64: 7, bool: 9 }[to] } });
  }

  reshape(x: string, shape: number[]): string {
    return this.g.op("Reshape", [x, this.i64(shape)]);
  }

  transpose(x: string, perm: number[]): string {
    return this.g.op("Transpose", [x], { perm: { ints: perm } });
  }

  unsqueeze(x: string, axes: number[]): string {
    return this.g.op("Unsqueeze", [x, this.i64(axes)]);
  }

  squeeze(x: string, axes: number[]): string {
    return this.g.op("Squeeze", [x, this.i64(axes)]);
  }

  slice(x: string, starts: number[], ends: number[], axes: number[]): string {
    return this.g.op("Slice", [x, this.i64(starts), this.i64(ends), this.i64(axes)]);
  }

  reduce(op: "ReduceMax" | "ReduceMean" | "ReduceSum", x: string, axes: number[], keepdims: boolean): string {
    // Opset 17: ReduceSum takes axes as an input, the others as an attribute.
    if (op === "ReduceSum") return this.g.op(op, [x, this.i64(axes)], { keepdims: { i: keepdims ? 1 : 0 } });
    return this.g.op(op, [x], { axes: { ints: axes }, keepdims: { i: keepdims ? 1 : 0 } });
  }

  where(cond: string, a: string, b: string): string {
    return this.g.op("Where", [cond, a, b]);
  }

  /** Shape(x)[axis] as a 1-D int64 tensor of length 1. */
  dim(x: string, axis: number): string {
    return this.g.op("Shape", [x], { start: { i: axis }, end: { i: axis + 1 } });
  }

  /**
   * GELU in the form torch.onnx exports it, x * (erf(x / sqrt 2) + 1) * 0.5: the pattern onnxruntime's
   * GeluFusion turns into one Gelu kernel (BiasGelu after a biased MatMul).
   */
  gelu(x: string): string {
    const erf = this.g.op("Erf", [this.g.op("Div", [x, this.f(Math.SQRT2)])]);
    return this.mul(this.mul(x, this.add(erf, this.f(1))), this.f(0.5));
  }

  layerNorm(x: string, gamma: string, beta: string): string {
    return this.g.op("LayerNormalization", [x, gamma, beta], { axis: { i: -1 }, epsilon: { f: 1e-5 } });
  }

  softmax(x: string): string {
    return this.g.op("Softmax", [x], { axis: { i: -1 } });
  }
}
