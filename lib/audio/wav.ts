/**
 * WAV files already in Whisper's format (16 kHz, mono, 16-bit integer or 32-bit float PCM), read
 * without ffmpeg. For them ffmpeg only converts each sample (s16 to float is x / 32768, float passes
 * through), so the samples here are bit for bit ffmpeg's; anything else (other rates, channels,
 * codecs, chunks laid out unusually) goes to ffmpeg. An ffmpeg decoder per request cost ~20 MiB
 * (PSS) and ~50 ms before its first samples, on top of the launcher relaying its output.
 */
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";

/** Whisper's input rate; every decoded stream is mono at this rate. */
export const PCM_SAMPLE_RATE = 16_000;

export interface PlainWav {
  /** Byte offset of the samples in the file. */
  offset: number;
  /** Bytes of whole samples: the data chunk's, or up to the end of a file cut short. */
  bytes: number;
  encoding: "s16" | "f32";
}

const HEADER_BYTES = 4096;
const PCM = 1;
const FLOAT = 3;
const EXTENSIBLE = 0xfffe;

/** The sample layout of `path` when it is a WAV in Whisper's format with samples in it, else null. */
export async function plainWav(path: string): Promise<PlainWav | null> {
  const file = await open(path, "r");
  try {
    const { size } = await file.stat();
    const head = Buffer.alloc(Math.min(HEADER_BYTES, size));
    await file.read(head, 0, head.length, 0);
    if (head.length < 12 || head.toString("latin1", 0, 4) !== "RIFF" || head.toString("latin1", 8, 12) !== "WAVE") return null;
    let encoding: PlainWav["encoding"] | null = null;
    for (let at = 12; at + 8 <= head.length; ) {
      const id = head.toString("latin1", at, at + 4);
      const length = head.readUInt32LE(at + 4);
      const body = at + 8;
      if (id === "fmt ") {
        // Shorter than PCMWAVEFORMAT's 16 bytes (WAVEFORMAT's 14, with no bit depth): left to ffmpeg.
        if (length < 16 || body + 16 > head.length) return null;
        encoding = formatOf(head.subarray(body, Math.min(head.length, body + length)));
        if (!encoding) return null;
      } else if (id === "data") {
        if (!encoding) return null;
        const width = encoding === "s16" ? 2 : 4;
        const available = Math.min(length, size - body);
        const bytes = available - (available % width);
        return bytes > 0 ? { offset: body, bytes, encoding } : null;
      }
      // Chunks are padded to an even length.
      at = body + length + (length % 2);
    }
    return null;
  } finally {
    await file.close();
  }
}

function formatOf(fmt: Buffer): PlainWav["encoding"] | null {
  let format = fmt.readUInt16LE(0);
  const channels = fmt.readUInt16LE(2);
  const rate = fmt.readUInt32LE(4);
  const blockAlign = fmt.readUInt16LE(12);
  const bits = fmt.readUInt16LE(14);
  // WAVE_FORMAT_EXTENSIBLE names the real format in the first two bytes of its subformat GUID.
  if (format === EXTENSIBLE) format = fmt.length >= 26 ? fmt.readUInt16LE(24) : 0;
  if (channels !== 1 || rate !== PCM_SAMPLE_RATE) return null;
  if (format === PCM && bits === 16 && blockAlign === 2) return "s16";
  if (format === FLOAT && bits === 32 && blockAlign === 4) return "f32";
  return null;
}

/** The file's samples as float, in chunks of up to 64 KiB of the file. */
export async function* wavSamples(path: string, wav: PlainWav): AsyncGenerator<Float32Array> {
  const width = wav.encoding === "s16" ? 2 : 4;
  const chunks = createReadStream(path, { start: wav.offset, end: wav.offset + wav.bytes - 1, highWaterMark: 64 * 1024 });
  for await (const bytes of wholeSamples(chunks, width)) {
    const samples = new Float32Array(bytes.length / width);
    if (wav.encoding === "s16") for (let i = 0; i < samples.length; i++) samples[i] = bytes.readInt16LE(i * 2) / 32768;
    else for (let i = 0; i < samples.length; i++) samples[i] = bytes.readFloatLE(i * 4);
    yield samples;
  }
}

/**
 * A byte stream regrouped into runs of whole samples of `width` bytes, whatever boundaries it
 * arrives in (a file read or a pipe splits samples anywhere); a run is the incoming chunk itself when
 * it holds whole samples only.
 */
export async function* wholeSamples(chunks: AsyncIterable<Uint8Array>, width: number): AsyncGenerator<Buffer> {
  let carry: Buffer | null = null;
  for await (const chunk of chunks) {
    const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const bytes: Buffer = carry ? Buffer.concat([carry, data]) : data;
    const usable: number = bytes.length - (bytes.length % width);
    carry = usable < bytes.length ? bytes.subarray(usable) : null;
    if (usable > 0) yield bytes.subarray(0, usable);
  }
}
