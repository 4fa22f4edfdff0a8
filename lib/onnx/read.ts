/**
 * Just enough protobuf decoding to read an ONNX model: its float initializers (a ModelProto's
 * graph.initializer), so a published model's weights can be laid out in a graph of our own, and its
 * fields as encoded, so a graph can be rewritten around them (fuse-attention.ts).
 */

export interface Field {
  field: number;
  /** The whole field, tag included. */
  raw: Uint8Array;
  /** A varint's value, or a length-delimited field's bytes (a view into the model's buffer); 0 for fixed-width fields. */
  value: bigint | Uint8Array;
}

/** A protobuf message's fields in order, each with its encoded bytes so it can be copied as it is. */
export function* fields(bytes: Uint8Array): Generator<Field> {
  let at = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = bytes[at++];
      if (byte === undefined) throw new Error("ONNX model: truncated varint");
      result |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return result;
    }
  };
  while (at < bytes.length) {
    const start = at;
    const tag = Number(varint());
    const field = tag >> 3;
    let value: bigint | Uint8Array = 0n;
    switch (tag & 7) {
      case 0:
        value = varint();
        break;
      case 1:
        at += 8;
        break;
      case 2: {
        const length = Number(varint());
        if (at + length > bytes.length) throw new Error("ONNX model: truncated field");
        value = bytes.subarray(at, at + length);
        at += length;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        throw new Error(`ONNX model: unsupported wire type ${tag & 7}`);
    }
    yield { field, raw: bytes.subarray(start, at), value };
  }
}

function message(fieldsOf: Uint8Array, number: number): Uint8Array | undefined {
  for (const f of fields(fieldsOf)) if (f.field === number && f.value instanceof Uint8Array) return f.value;
  return undefined;
}

export interface FloatInitializer {
  dims: number[];
  data: Float32Array;
}

const FLOAT = 1n;

/** The graph's float initializers by name (raw_data or float_data); other types are skipped. */
export function floatInitializers(model: Uint8Array): Map<string, FloatInitializer> {
  const graph = message(model, 7);
  if (!graph) throw new Error("ONNX model: no graph");
  const out = new Map<string, FloatInitializer>();
  for (const f of fields(graph)) {
    if (f.field !== 5 || !(f.value instanceof Uint8Array)) continue;
    const dims: number[] = [];
    let type = 0n;
    let name = "";
    let raw: Uint8Array | undefined;
    for (const t of fields(f.value)) {
      if (t.field === 1) {
        if (t.value instanceof Uint8Array) for (const d of fields(packedAsFields(t.value))) dims.push(Number(d.value));
        else dims.push(Number(t.value));
      } else if (t.field === 2) type = t.value as bigint;
      else if (t.field === 8) name = new TextDecoder().decode(t.value as Uint8Array);
      else if ((t.field === 9 || t.field === 4) && t.value instanceof Uint8Array) raw = t.value;
    }
    if (type !== FLOAT || !raw) continue;
    // A copy: the view may not be 4-byte aligned within the file's buffer.
    out.set(name, { dims, data: new Float32Array(Uint8Array.from(raw).buffer) });
  }
  return out;
}

/**
 * The files the graph's initializers are stored in (TensorProto.external_data's "location"), relative
 * to the model file: a model over 2 GB keeps its weights beside it, which a copy of the graph
 * written elsewhere must find again.
 */
export function externalDataFiles(model: Uint8Array): string[] {
  const graph = message(model, 7);
  if (!graph) throw new Error("ONNX model: no graph");
  const files = new Set<string>();
  for (const f of fields(graph)) {
    if (f.field !== 5 || !(f.value instanceof Uint8Array)) continue;
    for (const t of fields(f.value)) {
      if (t.field !== 13 || !(t.value instanceof Uint8Array)) continue;
      const entry = new Map<number, string>();
      for (const e of fields(t.value)) if (e.value instanceof Uint8Array) entry.set(e.field, new TextDecoder().decode(e.value));
      if (entry.get(1) === "location" && entry.has(2)) files.add(entry.get(2)!);
    }
  }
  return [...files];
}

/** Packed varints re-tagged as field 1 varints, so the one decoder above reads them. */
function packedAsFields(packed: Uint8Array): Uint8Array {
  const out: number[] = [];
  let start = 0;
  for (let i = 0; i < packed.length; i++) {
    if (packed[i]! < 0x80) {
      out.push(0x08, ...packed.subarray(start, i + 1));
      start = i + 1;
    }
  }
  return Uint8Array.from(out);
}
