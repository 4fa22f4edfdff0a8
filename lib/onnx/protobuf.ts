import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
/**
 * Just enough protobuf encoding to write ONNX models. Messages are kept as lists of byte chunks so a
 * multi-hundred-megabyte weight tensor is referenced, never copied, on its way to disk.
 */
export class Message {
  readonly parts: Uint8Array[] = [];
  length = 0;

  /** The encoded message in one buffer. */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  /** Writes the encoded message to a file chunk by chunk, never holding it in one buffer. */
  async writeFile(path: string): Promise<void> {
    await pipeline(Readable.from(this.parts), createWriteStream(path));
  }

  private push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  private tag(field: number, wireType: number): void {
    this.push(varint(BigInt((field << 3) | wireType)));
  }

  /** Bytes already encoded as fields (copied from another message as they are). */
  raw(bytes: Uint8Array): this {
    this.push(bytes);
    return this;
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.push(varint(BigInt(value)));
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.push(varint(BigInt(value.length)));
    this.push(value);
    return this;
  }

  message(field: number, value: Message): this {
    this.tag(field, 2);
    this.push(varint(BigInt(value.length)));
    for (const p of value.parts) this.push(p);
    return this;
  }

  packedInts(field: number, values: readonly (number | bigint)[]): this {
    const body = new Message();
    for (const v of values) body.push(varint(BigInt(v)));
    return this.message(field, body);
  }

  packedFloats(field: number, values: readonly number[]): this {
    const b = new Uint8Array(values.length * 4);
    const view = new DataView(b.buffer);
    values.forEach((v, i) => view.setFloat32(i * 4, v, true));
    return this.bytes(field, b);
  }
}

/** Base-128 varint; negative int64 values take ten bytes in two's complement, as protobuf requires. */
function varint(value: bigint): Uint8Array {
  let v = BigInt.asUintN(64, value);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}
