import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeToPcm, FfmpegFailure, PCM_SAMPLE_RATE, runFfmpeg } from "../../lib/audio/ffmpeg.ts";
import { concatAudioFiles, encodeWav, synthesize, writeAudioFile } from "./synth.ts";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "slotscribe-synth-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function file(name: string): string {
  return path.join(dir, name);
}

async function decode(input: string): Promise<Float32Array> {
  const chunks: Float32Array[] = [];
  for await (const chunk of decodeToPcm(input)) chunks.push(chunk);
  return Float32Array.from(chunks.flatMap((chunk) => Array.from(chunk)));
}

function upwardCrossingsPerSecond(samples: Float32Array, sampleRate = PCM_SAMPLE_RATE): number {
  let crossings = 0;
  for (let i = 1; i < samples.length; i++) if (samples[i - 1]! < 0 && samples[i]! >= 0) crossings++;
  return crossings / (samples.length / sampleRate);
}

function peak(samples: Float32Array): number {
  return samples.reduce((max, sample) => Math.max(max, Math.abs(sample)), 0);
}

/** ffmpeg's description of a file's streams; given no output, ffmpeg prints it and fails. */
async function describeStreams(input: string): Promise<string> {
  const err = await runFfmpeg(["-nostdin", "-hide_banner", "-i", input]).catch((e: unknown) => e);
  if (!(err instanceof FfmpegFailure)) throw new Error("expected ffmpeg to complain about the missing output");
  return err.stderr;
}

describe("synthesize", () => {
  it("lays parts end to end at 16 kHz by default", () => {
    const audio = synthesize([{ tone: 440, seconds: 0.5 }, { silence: 0.25 }, { tone: 880, seconds: 0.25 }]);
    expect(audio).toHaveLength(16_000);
    expect(peak(audio.subarray(8_000, 12_000))).toBe(0);
    expect(upwardCrossingsPerSecond(audio.subarray(0, 8_000))).toBeCloseTo(440, -1);
    expect(upwardCrossingsPerSecond(audio.subarray(12_000))).toBeCloseTo(880, -1);
  });

  it("uses amplitude 0.5 unless told otherwise", () => {
    expect(peak(synthesize([{ tone: 1000, seconds: 1 }]))).toBeCloseTo(0.5, 3);
    expect(peak(synthesize([{ tone: 1000, seconds: 1, amplitude: 0.1 }]))).toBeCloseTo(0.1, 3);
  });

  it("fades each tone in and out over 10 ms", () => {
    const audio = synthesize([{ tone: 1000, seconds: 1 }], { sampleRate: 48_000 });
    expect(audio).toHaveLength(48_000);
    expect(audio[0]).toBe(0);
    expect(audio[audio.length - 1]).toBeCloseTo(0, 6);
    // Halfway through the fade the envelope is 0.5.
    expect(peak(audio.subarray(0, 240))).toBeLessThanOrEqual(0.25 + 1e-6);
    expect(peak(audio.subarray(480, 960))).toBeCloseTo(0.5, 3);
  });

  it("rejects tones at or above Nyquist and negative durations", () => {
    expect(() => synthesize([{ tone: 8_000, seconds: 1 }])).toThrow(RangeError);
    expect(() => synthesize([{ silence: -1 }])).toThrow(RangeError);
    expect(() => synthesize([{ tone: 100, seconds: 1, amplitude: 2 }])).toThrow(RangeError);
  });
});

describe("encodeWav", () => {
  it("writes a canonical 16-bit PCM header and rounds, scales and clamps samples", () => {
    const wav = encodeWav([Float32Array.of(0, 1, -1, 0.5, 2)], 16_000);
    expect(wav).toHaveLength(44 + 10);
    expect(wav.toString("latin1", 0, 4)).toBe("RIFF");
    expect(wav.readUInt32LE(4)).toBe(wav.length - 8);
    expect(wav.toString("latin1", 8, 16)).toBe("WAVEfmt ");
    expect(wav.readUInt32LE(16)).toBe(16);
    expect(wav.readUInt16LE(20)).toBe(1); // PCM
    expect(wav.readUInt16LE(22)).toBe(1);
    expect(wav.readUInt32LE(24)).toBe(16_000);
    expect(wav.readUInt32LE(28)).toBe(32_000);
    expect(wav.readUInt16LE(32)).toBe(2);
    expect(wav.readUInt16LE(34)).toBe(16);
    expect(wav.toString("latin1", 36, 40)).toBe("data");
    expect(wav.readUInt32LE(40)).toBe(10);
    expect([0, 1, 2, 3, 4].map((i) => wav.readInt16LE(44 + 2 * i))).toEqual([0, 32767, -32768, 16384, 32767]);
  });

  it("interleaves two channels", () => {
    const wav = encodeWav([Float32Array.of(1, 1), Float32Array.of(-1, 0)], 8_000);
    expect(wav.readUInt16LE(22)).toBe(2);
    expect(wav.readUInt16LE(32)).toBe(4);
    expect([0, 1, 2, 3].map((i) => wav.readInt16LE(44 + 2 * i))).toEqual([32767, -32768, 32767, 0]);
  });

  it("writes 32-bit float WAV with the extended fmt and fact chunks", () => {
    const wav = encodeWav([Float32Array.of(0.25, -0.75)], 16_000, 32);
    expect(wav.readUInt32LE(16)).toBe(18);
    expect(wav.readUInt16LE(20)).toBe(3); // IEEE float
    expect(wav.readUInt16LE(34)).toBe(32);
    expect(wav.toString("latin1", 38, 42)).toBe("fact");
    expect(wav.readUInt32LE(46)).toBe(2);
    expect(wav.toString("latin1", 50, 54)).toBe("data");
    expect(wav.readUInt32LE(54)).toBe(8);
    expect([wav.readFloatLE(58), wav.readFloatLE(62)]).toEqual([0.25, -0.75]);
  });

  it("rejects zero, three, or unequal channels", () => {
    expect(() => encodeWav([], 16_000)).toThrow(RangeError);
    const c = new Float32Array(2);
    expect(() => encodeWav([c, c, c], 16_000)).toThrow(RangeError);
    expect(() => encodeWav([c, new Float32Array(3)], 16_000)).toThrow(RangeError);
  });
});

describe("writeAudioFile", () => {
  it("picks the format from the extension, or from the option", async () => {
    await writeAudioFile(file("a.flac"), [{ tone: 1000, seconds: 0.5 }]);
    expect(await describeStreams(file("a.flac"))).toMatch(/Input #0, flac/);
    await writeAudioFile(file("b.upload"), [{ tone: 1000, seconds: 0.5 }], { format: "mp3" });
    expect(await describeStreams(file("b.upload"))).toMatch(/Input #0, mp3/);
    await writeAudioFile(file("c.upload"), [{ tone: 1000, seconds: 0.5 }]);
    expect((await readFile(file("c.upload"))).toString("latin1", 0, 4)).toBe("RIFF");
  });

  it("gives mp4 and mov a video track alongside the audio", async () => {
    for (const format of ["mp4", "mov"] as const) {
      const output = file(`clip.${format}`);
      await writeAudioFile(output, [{ tone: 1000, seconds: 1 }]);
      const streams = await describeStreams(output);
      expect(streams).toMatch(/Video: mpeg4/);
      expect(streams).toMatch(/Audio: aac/);
    }
  });

  it("writes stereo with the tone in both channels or in the left one only", async () => {
    await writeAudioFile(file("both.wav"), [{ tone: 1000, seconds: 0.5 }], { channels: 2 });
    await writeAudioFile(file("left.wav"), [{ tone: 1000, seconds: 0.5 }], { stereoLeftOnly: true });
    for (const name of ["both.wav", "left.wav"]) expect(await describeStreams(file(name))).toMatch(/stereo/);
    const rightChannel = async (name: string) => {
      const right = file(`${name}.right.wav`);
      await runFfmpeg(["-nostdin", "-loglevel", "error", "-i", file(name), "-af", "pan=mono|c0=c1", "-y", right]);
      return peak(await decode(right));
    };
    expect(await rightChannel("both.wav")).toBeCloseTo(0.5, 2);
    expect(await rightChannel("left.wav")).toBe(0);
  });

  it("writes 32-bit float WAV on request", async () => {
    await writeAudioFile(file("float.wav"), [{ tone: 1000, seconds: 0.1 }], { bitDepth: 32 });
    expect((await readFile(file("float.wav"))).readUInt16LE(20)).toBe(3);
  });
});

describe("concatAudioFiles", () => {
  it("joins inputs of different formats, rates and channel counts in order", async () => {
    await writeAudioFile(file("first.wav"), [{ tone: 500, seconds: 1 }]);
    await writeAudioFile(file("second.ogg"), [{ tone: 1000, seconds: 1 }], { sampleRate: 44_100, channels: 2 });
    await concatAudioFiles([file("first.wav"), file("second.ogg"), file("first.wav")], file("joined.wav"));
    const samples = await decode(file("joined.wav"));
    expect(Math.abs(samples.length / PCM_SAMPLE_RATE - 3)).toBeLessThan(0.1);
    expect(upwardCrossingsPerSecond(samples.subarray(1_600, 14_400))).toBeCloseTo(500, -1);
    expect(upwardCrossingsPerSecond(samples.subarray(17_600, 30_400))).toBeCloseTo(1000, -1);
    expect(upwardCrossingsPerSecond(samples.subarray(33_600, 46_400))).toBeCloseTo(500, -1);
  });

  it("needs at least one input", async () => {
    await expect(concatAudioFiles([], file("nothing.wav"))).rejects.toThrow(RangeError);
  });
});
