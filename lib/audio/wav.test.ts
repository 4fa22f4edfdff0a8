/**
 * WAVs in Whisper's format are read without ffmpeg and give ffmpeg's samples bit for bit; every other
 * WAV still goes through ffmpeg.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { decodeToPcm } from "./ffmpeg.ts";
import { plainWav } from "./wav.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const jfk = join(sharedDir, "audio", "jfk", "jfk.wav");
const work = mkdtempSync(join(tmpdir(), "wav-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** ffmpeg's own mono 16 kHz float output for `path`, as the service asked it before. */
function ffmpegSamples(path: string): Float32Array {
  const out = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-i", path, "-ac", "1", "-ar", "16000", "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"], { maxBuffer: 1 << 28 });
  expect(out.status, out.stderr?.toString()).toBe(0);
  return new Float32Array(out.stdout.buffer.slice(out.stdout.byteOffset, out.stdout.byteOffset + out.stdout.byteLength));
}

async function decoded(path: string): Promise<{ samples: Float32Array; ffmpeg: boolean }> {
  const stream = decodeToPcm(path);
  const parts: Float32Array[] = [];
  for await (const part of stream) parts.push(part);
  const samples = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (samples.set(p, at), at + p.length), 0);
  await stream.done;
  return { samples, ffmpeg: stream.pid !== undefined };
}

function convert(args: string[], name: string): string {
  const path = join(work, name);
  const out = spawnSync("ffmpeg", ["-nostdin", "-v", "error", "-y", "-i", jfk, ...args, path]);
  expect(out.status, out.stderr?.toString()).toBe(0);
  return path;
}

describe("WAVs in Whisper's format", () => {
  it("are read without ffmpeg, with ffmpeg's samples bit for bit: 16-bit, float, and ffmpeg's own files with a LIST chunk", async () => {
    for (const path of [jfk, convert(["-c:a", "pcm_f32le"], "float.wav"), convert(["-c:a", "pcm_s16le"], "listed.wav")]) {
      expect(await plainWav(path), path).not.toBeNull();
      const { samples, ffmpeg } = await decoded(path);
      expect(ffmpeg, path).toBe(false);
      expect(Buffer.from(samples.buffer).equals(Buffer.from(ffmpegSamples(path).buffer)), path).toBe(true);
    }
    expect(readFileSync(join(work, "listed.wav")).includes("LIST")).toBe(true);
  });

  it("give the samples up to where a file cut short ends, as ffmpeg does", async () => {
    const whole = readFileSync(jfk);
    const cut = join(work, "cut.wav");
    writeFileSync(cut, whole.subarray(0, Math.floor(whole.length / 2) + 1));
    const { samples, ffmpeg } = await decoded(cut);
    expect(ffmpeg).toBe(false);
    expect(Buffer.from(samples.buffer).equals(Buffer.from(ffmpegSamples(cut).buffer))).toBe(true);
    expect(samples.length).toBeGreaterThan(0);
  });

  it("leaves every other WAV to ffmpeg: another rate, two channels, 24-bit, or no samples", async () => {
    const others = [convert(["-ar", "44100"], "44k.wav"), convert(["-ac", "2"], "stereo.wav"), convert(["-c:a", "pcm_s24le"], "24bit.wav")];
    const header = Buffer.from(readFileSync(jfk).subarray(0, 44));
    header.writeUInt32LE(0, 40);
    const empty = join(work, "empty.wav");
    writeFileSync(empty, header);
    // A format chunk shorter than 16 bytes (WAVEFORMAT's 14, no bit depth) before 16 kHz mono samples.
    const short = Buffer.concat([Buffer.from("RIFF\0\0\0\0WAVEfmt \x0e\0\0\0", "latin1"), header.subarray(20, 34), Buffer.from("data\x04\0\0\0\0\0\0\0", "latin1")]);
    const shortFormat = join(work, "short-format.wav");
    writeFileSync(shortFormat, short);
    for (const path of [...others, empty, shortFormat]) expect(await plainWav(path), path).toBeNull();
    for (const path of others) {
      const { samples, ffmpeg } = await decoded(path);
      expect(ffmpeg, path).toBe(true);
      expect(samples.length, path).toBe(ffmpegSamples(path).length);
    }
  });
});
