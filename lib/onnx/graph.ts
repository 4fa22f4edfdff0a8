import { Message } from "./protobuf.ts";

/** ONNX TensorProto.DataType values used here. */
const DType = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9 } as const;
export type DTypeName = keyof typeof DType;

export type Dim = number | string;

export interface TensorData {
  type: DTypeName;
  dims: number[];
  /** Little-endian raw bytes, as ONNX raw_data stores them. */
  raw: Uint8Array;
}

export function floatTensor(dims: number[], data: Float32Array): TensorData {
  return { type: "float", dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export function int64Tensor(dims: number[], values: readonly number[]): TensorData {
  const data = BigInt64Array.from(values, (v) => BigInt(v));
  return { type: "int64", dims, raw: new Uint8Array(data.buffer) };
}

export function int8Tensor(dims: number[], data: Int8Array): TensorData {
  return { type: "int8", dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export type Attr = { i: number } | { f: number } | { ints: number[] } | { s: string } | { t: TensorData } | { g: Graph };

const ATTR_TYPE = { f: 1, i: 2, s: 3, t: 4, g: 5, ints: 7 } as const;

interface NodeDef {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, Attr>;
  domain: string;
}

interface ValueDef {
  name: string;
  type: DTypeName;
  dims: Dim[] | null;
}

/**
 * A graph under construction. Value names are unique across a graph and its subgraphs (If branches
 * may read outer values by name), so subgraphs share their parent's name counter.
 */
export class Graph {
  private readonly nodes: NodeDef[] = [];
  private readonly initializers: { name: string; tensor: TensorData }[] = [];
  private readonly inputs: ValueDef[] = [];
  private readonly outputs: ValueDef[] = [];
  private readonly counter: { n: number };
  private readonly children: Graph[] = [];

  constructor(
    readonly name: string,
    counter?: { n: number },
  ) {
    this.counter = counter ?? { n: 0 };
  }

  subgraph(name: string): Graph {
    const child = new Graph(name, this.counter);
    this.children.push(child);
    return child;
  }

  fresh(prefix: string): string {
    return `${prefix}_${this.counter.n++}`;
  }

  input(name: string, type: DTypeName, dims: Dim[]): string {
    this.inputs.push({ name, type, dims });
    return name;
  }

  /** dims null leaves the shape to inference (If branch outputs, whose shape is the parent's). */
  output(name: string, type: DTypeName, dims: Dim[] | null): void {
    this.outputs.push({ name, type, dims });
  }

  init(prefix: string, tensor: TensorData): string {
    const name = this.fresh(prefix);
    this.initializers.push({ name, tensor });
    return name;
  }

  /** Adds a node and returns its output names (`count` of them, or the names given). */
  node(op: string, inputs: string[], attrs: Record<string, Attr> = {}, outputs: number | string[] = 1, domain = ""): string[] {
    const names = typeof outputs === "number" ? Array.from({ length: outputs }, () => this.fresh(op.toLowerCase())) : outputs;
    this.nodes.push({ op, inputs, outputs: names, attrs, domain });
    return names;
  }

  /** Single-output node. */
  op(op: string, inputs: string[], attrs: Record<string, Attr> = {}, outputName?: string): string {
    return this.node(op, inputs, attrs, outputName ? [outputName] : 1)[0]!;
  }

  /** Elements of every initializer with more than one element, subgraphs included (scalars are constants, not parameters). */
  get parameterCount(): number {
    const own = this.initializers.reduce((sum, { tensor }) => {
      const size = tensor.dims.reduce((a, b) => a * b, 1);
      return size > 1 ? sum + size : sum;
    }, 0);
    return own + this.children.reduce((sum, child) => sum + child.parameterCount, 0);
  }

  encode(): Message {
    const g = new Message();
    for (const n of this.nodes) g.message(1, encodeNode(n));
    g.string(2, this.name);
    for (const { name, tensor } of this.initializers) g.message(5, encodeTensor(name, tensor));
    for (const v of this.inputs) g.message(11, encodeValueInfo(v));
    for (const v of this.outputs) g.message(12, encodeValueInfo(v));
    return g;
  }
}

function encodeNode(n: NodeDef): Message {
  const m = new Message();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.outputs[0]!);
  m.string(4, n.op);
  for (const [name, attr] of Object.entries(n.attrs)) m.message(5, encodeAttr(name, attr));
  if (n.domain) m.string(7, n.domain);
  return m;
}

function encodeAttr(name: string, attr: Attr): Message {
  const m = new Message().string(1, name);
  if ("f" in attr) m.float(2, attr.f).int(20, ATTR_TYPE.f);
  else if ("i" in attr) m.int(3, attr.i).int(20, ATTR_TYPE.i);
  else if ("s" in attr) m.string(4, attr.s).int(20, ATTR_TYPE.s);
  else if ("t" in attr) m.message(5, encodeTensor("", attr.t)).int(20, ATTR_TYPE.t);
  else if ("g" in attr) m.message(6, attr.g.encode()).int(20, ATTR_TYPE.g);
  else m.packedInts(8, attr.ints).int(20, ATTR_TYPE.ints);
  return m;
}

function encodeTensor(name: string, t: TensorData): Message {
  const m = new Message();
  if (t.dims.length) m.packedInts(1, t.dims);
  m.int(2, DType[t.type]);
  if (name) m.string(8, name);
  m.bytes(9, t.raw);
  return m;
}

function encodeValueInfo(v: ValueDef): Message {
  const tensorType = new Message().int(1, DType[v.type]);
  if (v.dims) {
    const shape = new Message();
    for (const d of v.dims) shape.message(1, typeof d === "number" ? new Message().int(1, d) : new Message().string(2, d));
    tensorType.message(2, shape);
  }
  return new Message().string(1, v.name).message(2, new Message().message(1, tensorType));
}

export interface ModelMeta {
  producer: string;
  opset: number;
  /** Extra opset domains, e.g. com.microsoft for contrib ops. */
  extraOpsets?: { domain: string; version: number }[];
}

function encodeModel(graph: Graph, meta: ModelMeta): Message {
  const model = new Message().int(1, 8).string(2, meta.producer).string(3, "1");
  model.message(7, graph.encode());
  model.message(8, new Message().string(1, "").int(2, meta.opset));
  for (const o of meta.extraOpsets ?? []) model.message(8, new Message().string(1, o.domain).int(2, o.version));
  return model;
}

/** The model's protobuf bytes in one buffer, for onnxruntime's InferenceSession.create. */
export function modelBytes(graph: Graph, meta: ModelMeta): Uint8Array {
  return encodeModel(graph, meta).toBytes();
}

export async function writeModel(path: string, graph: Graph, meta: ModelMeta): Promise<number> {
  const model = encodeModel(graph, meta);
  await model.writeFile(path);
  return model.length;
}
