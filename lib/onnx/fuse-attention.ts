/**
 * Rewrites a Whisper encoder's self-attention, exported as MatMul -> Softmax -> MatMul between
 * head-splitting Reshapes and Transposes, into onnxruntime's MultiHeadAttention contrib op. On CPU
 * that op computes attention in blocks (flash attention) instead of materialising every head's
 * 1500 x 1500 scores: those scores were most of the encoder's transient memory (85 MiB for tiny)
 * and, with the Softmax over them, more than half of its time.
 *
 * Works on the protobuf directly: every field but the graph's nodes is copied as it is (the weights
 * are referenced, not copied). The caller checks the rewritten graph's output against the original's
 * (encoderSession in lib/engine/fused-encoder.ts), because the layout chains are recognised by their
 * ops, not their shapes.
 */
import { Message } from "./protobuf.ts";
import { fields } from "./read.ts";

interface NodeInfo {
  raw: Uint8Array;
  op: string;
  domain: string;
  inputs: string[];
  outputs: string[];
}

const text = (b: Uint8Array | bigint) => (b instanceof Uint8Array ? new TextDecoder().decode(b) : "");

function parseNode(raw: Uint8Array, payload: Uint8Array): NodeInfo {
  const node: NodeInfo = { raw, op: "", domain: "", inputs: [], outputs: [] };
  for (const s of fields(payload)) {
    if (s.field === 1) node.inputs.push(text(s.value));
    else if (s.field === 2) node.outputs.push(text(s.value));
    else if (s.field === 4) node.op = text(s.value);
    else if (s.field === 7) node.domain = text(s.value);
  }
  return node;
}

const LAYOUT = new Set(["Reshape", "Transpose"]);
const MS_DOMAIN = "com.microsoft";

/**
 * The model with each encoder self-attention as one MultiHeadAttention node of `heads` heads (the
 * query is already scaled, as Whisper's exports scale q_proj's output), as chunks that reference the
 * input's weights, and how many were fused; null for a model with no such pattern.
 */
export function fuseEncoderAttention(model: Uint8Array, heads: number): { model: Message; fused: number } | null {
  const modelFields = [...fields(model)];
  const graphField = modelFields.find((s) => s.field === 7);
  if (!graphField || !(graphField.value instanceof Uint8Array)) throw new Error("ONNX model: no graph");
  const graphFields = [...fields(graphField.value)];
  const nodes = graphFields.filter((s) => s.field === 1).map((s) => parseNode(s.raw, s.value as Uint8Array));

  const producer = new Map<string, NodeInfo>();
  const consumers = new Map<string, NodeInfo[]>();
  for (const n of nodes) {
    for (const o of n.outputs) producer.set(o, n);
    for (const i of n.inputs) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  const graphOutputs = new Set(graphFields.filter((s) => s.field === 12).map((s) => outputName(s.value as Uint8Array)));
  const only = (name: string) => {
    const c = consumers.get(name) ?? [];
    return c.length === 1 && !graphOutputs.has(name) ? c[0]! : null;
  };
  /** Up a chain of layout ops used by nothing else: the tensor before it and the chain's nodes. */
  const upChain = (name: string): { source: string; chain: NodeInfo[] } => {
    const chain: NodeInfo[] = [];
    let at = name;
    for (let n = producer.get(at); n && LAYOUT.has(n.op) && only(at) !== null; n = producer.get(at)) {
      chain.push(n);
      at = n.inputs[0]!;
    }
    return { source: at, chain };
  };

  const removed = new Set<NodeInfo>();
  const replacements = new Map<NodeInfo, Message>();
  for (const softmax of nodes) {
    if (softmax.op !== "Softmax" || softmax.domain !== "") continue;
    const scores = producer.get(softmax.inputs[0]!);
    const next = only(softmax.outputs[0]!);
    if (scores?.op !== "MatMul" || only(scores.outputs[0]!) !== softmax || next?.op !== "MatMul" || next.inputs[0] !== softmax.outputs[0]) continue;
    const q = upChain(scores.inputs[0]!);
    const k = upChain(scores.inputs[1]!);
    const v = upChain(next.inputs[1]!);
    if (q.chain.length === 0 || k.chain.length === 0 || v.chain.length === 0) continue;
    const down: NodeInfo[] = [];
    let out = next.outputs[0]!;
    for (let c = only(out); c && LAYOUT.has(c.op); c = only(out)) {
      down.push(c);
      out = c.outputs[0]!;
    }
    if (down.length === 0) continue;
    const fusedNode = new Message()
      .string(1, q.source)
      .string(1, k.source)
      .string(1, v.source)
      .string(2, out)
      .string(3, `fused_attention_${replacements.size}`)
      .string(4, "MultiHeadAttention")
      .message(5, new Message().string(1, "num_heads").int(3, heads).int(20, 2))
      .message(5, new Message().string(1, "scale").float(2, 1).int(20, 1))
      .string(7, MS_DOMAIN);
    for (const n of [scores, softmax, next, ...q.chain, ...k.chain, ...v.chain, ...down]) removed.add(n);
    replacements.set(down.at(-1)!, fusedNode);
  }
  if (replacements.size === 0) return null;

  const byRaw = new Map(nodes.map((n) => [n.raw, n]));
  const graph = new Message();
  for (const s of graphFields) {
    if (s.field !== 1) {
      graph.raw(s.raw);
      continue;
    }
    const node = byRaw.get(s.raw)!;
    const replacement = replacements.get(node);
    if (replacement) graph.message(1, replacement);
    else if (!removed.has(node)) graph.raw(s.raw);
  }
  const out = new Message();
  const hasMs = modelFields.some((s) => s.field === 8 && s.value instanceof Uint8Array && [...fields(s.value)].some((f) => f.field === 1 && text(f.value) === MS_DOMAIN));
  for (const s of modelFields) {
    if (s.field === 7) out.message(7, graph);
    else out.raw(s.raw);
  }
  if (!hasMs) out.message(8, new Message().string(1, MS_DOMAIN).int(2, 1));
  return { model: out, fused: replacements.size };
}

function outputName(valueInfo: Uint8Array): string {
  for (const s of fields(valueInfo)) if (s.field === 1) return text(s.value);
  return "";
}
