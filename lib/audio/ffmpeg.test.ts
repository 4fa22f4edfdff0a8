import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DomainError } from "../errors.ts";
import { decodeToPcm, extractAudio, FfmpegFailure, PCM_SAMPLE_RATE, resolveFfmpeg, runFfmpeg, type PcmStream } from "./ffmpeg.ts";
import { encodeWav, synthesize, writeAudioFile, type AudioFileFormat } from "../../tools/audio/synth.ts";
import { isRunning, progressFfmpeg, stuckFfmpeg, stuckFfmpegPid } from "../../test/support/stuck-ffmpeg.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? path.resolve(import.meta.dirname, "../../../shared");
const jfkWav = path.join(sharedDir, "audio/jfk/jfk.wav");

let dir: string;
let ffmpegPath: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "slotscribe-ffmpeg-"));
  ffmpegPath = (await resolveFfmpeg()).path;
  // Inputs several tests share.
  for (const format of ["wav", "mp3", "m4a", "webm"] as const) await writeAudioFile(file(`tone.${format}`), tone(2));
  await writeAudioFile(file("three-seconds.ogg"), tone(3));
  await writeFile(file("ten-minutes.wav"), encodeWav([synthesize([{ silence: 600 }])], PCM_SAMPLE_RATE));
  // Not in Whisper's format, so ffmpeg decodes it (a 16 kHz mono WAV is read without it: wav.ts).
  await writeFile(file("long-44k.wav"), encodeWav([synthesize([{ silence: 600 }])], 44_100));
  await writeFile(file("empty.wav"), "");
  await writeFile(file("no-samples.wav"), encodeWav([new Float32Array(0)], PCM_SAMPLE_RATE));
  await runFfmpeg(["-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:r=5:d=1", "-c:v", "mpeg4", "-y", file("silent-film.mp4")], {
    ffmpegPath,
  });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function file(name: string): string {
  return path.join(dir, name);
}

async function collect(stream: PcmStream): Promise<Float32Array> {
  const chunks: Float32Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  const all = new Float32Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/** Upward zero crossings per second over the middle of the signal, away from fades and codec edges. */
function dominantFrequency(samples: Float32Array, sampleRate = PCM_SAMPLE_RATE): number {
  const margin = Math.floor(sampleRate * 0.1);
  let crossings = 0;
  for (let i = margin + 1; i < samples.length - margin; i++) {
    if (samples[i - 1]! < 0 && samples[i]! >= 0) crossings++;
  }
  return crossings / ((samples.length - 2 * margin - 1) / sampleRate);
}

function rms(samples: Float32Array): number {
  const margin = Math.floor(PCM_SAMPLE_RATE * 0.1);
  let sum = 0;
  for (let i = margin; i < samples.length - margin; i++) sum += samples[i]! ** 2;
  return Math.sqrt(sum / (samples.length - 2 * margin));
}

async function domainErrorFrom(promise: Promise<unknown>): Promise<DomainError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof DomainError)) throw new Error(`expected an DomainError, got ${String(err)}`);
  return err;
}

/** Deterministic bytes that are no media format (a fixed-seed LCG). */
function noiseBytes(length: number): Buffer {
  const bytes = Buffer.alloc(length);
  let state = 12345;
  for (let i = 0; i < length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    bytes[i] = state >>> 24;
  }
  return bytes;
}

const tone = (seconds: number, hz = 1000) => [{ tone: hz, seconds }];

/** ffmpeg's description of a file's streams ("Stream #0:0: Audio: mp3, 16000 Hz, mono, ..."). */
async function describeStreams(input: string): Promise<string> {
  // Given no output, ffmpeg prints what it found and exits with an error.
  const err = await runFfmpeg(["-nostdin", "-hide_banner", "-i", input], { ffmpegPath }).catch((e: unknown) => e);
  if (!(err instanceof FfmpegFailure)) throw new Error("expected ffmpeg to complain about the missing output");
  return err.stderr;
}

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe("resolveFfmpeg", () => {
  // Installed with its binary: npm may install the package without running the script that downloads it.
  const ffmpegStaticInstalled = async () => {
    const specifier = "ffmpeg-static";
    return import(specifier).then(
      (m: { default?: string | null }) => typeof m.default === "string" && existsSync(m.default),
      () => false,
    );
  };

  it("uses FFMPEG_PATH when it names an executable", async () => {
    await expect(resolveFfmpeg({ FFMPEG_PATH: ffmpegPath, PATH: "" })).resolves.toEqual({
      path: ffmpegPath,
      source: "FFMPEG_PATH",
    });
  });

  it("rejects an FFMPEG_PATH that does not exist or is not executable", async () => {
    await expect(resolveFfmpeg({ FFMPEG_PATH: file("missing-ffmpeg") })).rejects.toThrow(/FFMPEG_PATH .*missing-ffmpeg.* not an executable file/);
    const notExecutable = file("not-executable");
    await writeFile(notExecutable, "#!/bin/sh\n");
    await chmod(notExecutable, 0o644);
    await expect(resolveFfmpeg({ FFMPEG_PATH: notExecutable })).rejects.toThrow(/FFMPEG_PATH/);
  });

  it("falls back to ffmpeg-static or to ffmpeg on PATH", async () => {
    const binDir = await mkdtemp(path.join(dir, "bin-"));
    await symlink(ffmpegPath, path.join(binDir, "ffmpeg"));
    const found = await resolveFfmpeg({ PATH: `${file("nowhere")}${path.delimiter}${binDir}` });
    if (await ffmpegStaticInstalled()) {
      expect(found.source).toBe("ffmpeg-static");
    } else {
      expect(found).toEqual({ path: path.join(binDir, "ffmpeg"), source: "PATH" });
    }
  });

  it("names all three places when ffmpeg is nowhere", async (context) => {
    if (await ffmpegStaticInstalled()) context.skip();
    const emptyDir = await mkdtemp(path.join(dir, "empty-"));
    await expect(resolveFfmpeg({ PATH: emptyDir })).rejects.toThrow(/FFMPEG_PATH.*ffmpeg-static.*PATH/);
  });

  it("resolves once per configuration and process", () => {
    const env = { FFMPEG_PATH: ffmpegPath };
    expect(resolveFfmpeg(env)).toBe(resolveFfmpeg({ ...env }));
  });
});

describe("decodeToPcm", () => {
  const containers: AudioFileFormat[] = ["wav", "mp3", "m4a", "ogg", "opus", "flac", "webm", "mp4", "mov"];

  it.each(containers)("decodes %s to 16 kHz mono of the right length and pitch", async (format) => {
    const input = file(`tone.${format}`);
    await writeAudioFile(input, tone(2), { format, sampleRate: 44_100 });
    const stream = decodeToPcm(input);
    const samples = await collect(stream);
    expect(Math.abs(samples.length / PCM_SAMPLE_RATE - 2)).toBeLessThan(0.1);
    expect(dominantFrequency(samples)).toBeCloseTo(1000, -1);
    await expect(stream.done).resolves.toEqual({
      samples: samples.length,
      durationSeconds: samples.length / PCM_SAMPLE_RATE,
    });
  });

  it("gives a video's audio track and ignores the picture", async () => {
    const input = file("screen-recording.mp4");
    await writeAudioFile(input, tone(1.5, 440), { format: "mp4" });
    const samples = await collect(decodeToPcm(input));
    expect(Math.abs(samples.length / PCM_SAMPLE_RATE - 1.5)).toBeLessThan(0.1);
    expect(dominantFrequency(samples)).toBeCloseTo(440, -1);
  });

  it.each([8_000, 22_050, 44_100, 48_000])("resamples %i Hz input to 16 kHz", async (sampleRate) => {
    const input = file(`rate-${sampleRate}.wav`);
    await writeAudioFile(input, tone(2), { sampleRate });
    const samples = await collect(decodeToPcm(input));
    expect(Math.abs(samples.length - 2 * PCM_SAMPLE_RATE)).toBeLessThan(0.01 * PCM_SAMPLE_RATE);
    expect(dominantFrequency(samples)).toBeCloseTo(1000, -1);
  });

  it("decodes 32-bit float WAV exactly", async () => {
    const input = file("float.wav");
    const original = synthesize(tone(0.5));
    await writeFile(input, encodeWav([original], PCM_SAMPLE_RATE, 32));
    expect(Array.from(await collect(decodeToPcm(input)))).toEqual(Array.from(original));
  });

  it("downmixes stereo by averaging the channels", async () => {
    const both = file("stereo-both.wav");
    const leftOnly = file("stereo-left.wav");
    await writeAudioFile(both, tone(1), { channels: 2 });
    await writeAudioFile(leftOnly, tone(1), { stereoLeftOnly: true });
    const sine = 0.5 / Math.SQRT2;
    // Identical channels keep their level; a tone in one channel only comes out at half.
    expect(rms(await collect(decodeToPcm(both)))).toBeCloseTo(sine, 2);
    const left = await collect(decodeToPcm(leftOnly));
    expect(rms(left)).toBeCloseTo(sine / 2, 2);
    expect(dominantFrequency(left)).toBeCloseTo(1000, -1);
  });

  it("keeps silence and tone order through decoding", async () => {
    const input = file("gap.flac");
    await writeAudioFile(input, [{ silence: 1 }, { tone: 500, seconds: 1 }]);
    const samples = await collect(decodeToPcm(input));
    expect(rms(samples.subarray(0, PCM_SAMPLE_RATE))).toBeLessThan(1e-3);
    expect(dominantFrequency(samples.subarray(PCM_SAMPLE_RATE))).toBeCloseTo(500, -1);
  });

  it("decodes the real JFK speech clip to 11 s", async (context) => {
    if (!existsSync(jfkWav)) context.skip();
    const samples = await collect(decodeToPcm(jfkWav));
    expect(Math.abs(samples.length - 11 * PCM_SAMPLE_RATE)).toBeLessThan(0.05 * PCM_SAMPLE_RATE);
    expect(rms(samples)).toBeGreaterThan(0.01);
  });

  it("streams in chunks instead of decoding the whole file at once", async () => {
    const stream = decodeToPcm(file("long-44k.wav"));
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.done).toBe(false);
    expect(first.value.length).toBeLessThan(PCM_SAMPLE_RATE * 10);
    // Not reading leaves ffmpeg blocked on a full pipe rather than racing to the end.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(isRunning(stream.pid!)).toBe(true);
    await iterator.return!();
  });

  it.each([
    ["plain text", Buffer.from("hello, this is not audio\n".repeat(50))],
    ["JSON", Buffer.from(JSON.stringify({ file: "audio.mp3", bytes: [1, 2, 3] }))],
    ["HTML", Buffer.from("<!doctype html><html><body><h1>404</h1></body></html>\n")],
    ["random bytes", noiseBytes(64 * 1024)],
    ["an HLS playlist pointing at a local file", Buffer.from("#EXTM3U\n#EXTINF:10,\ntone.wav\n#EXT-X-ENDLIST\n")],
  ])("rejects %s as unsupported media (415) without exposing paths", async (_kind, bytes) => {
    const input = file("upload.bin");
    await writeFile(input, bytes);
    const err = await domainErrorFrom(collect(decodeToPcm(input)));
    expect(err.code).toBe("unsupported_media");
    expect(err.message).toBe("the file is not a recognised audio or video format");
    expect(err.details).toBeUndefined();
    // The server-side detail is kept for logs only.
    expect(err.cause).toBeInstanceOf(FfmpegFailure);
    expect((err.cause as FfmpegFailure).stderr).toContain(dir);
  });

  it("rejects a video without an audio track as unprocessable (422)", async () => {
    const err = await domainErrorFrom(collect(decodeToPcm(file("silent-film.mp4"))));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("the file has no audio stream");
  });

  it("rejects a 0-byte file as empty (422)", async () => {
    const stream = decodeToPcm(file("empty.wav"));
    const err = await domainErrorFrom(collect(stream));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("empty audio file");
    expect(stream.pid).toBeUndefined();
  });

  it("rejects a valid WAV with no samples as empty (422)", async () => {
    const err = await domainErrorFrom(collect(decodeToPcm(file("no-samples.wav"))));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("empty audio: the file contains no audio samples");
  });

  it("returns the decodable part of a WAV cut off mid-data", async () => {
    const whole = encodeWav([synthesize(tone(2))], PCM_SAMPLE_RATE);
    const input = file("cut.wav");
    const keptBytes = 44 + PCM_SAMPLE_RATE * 2; // header + 1 s of 16-bit samples
    await writeFile(input, whole.subarray(0, keptBytes));
    const samples = await collect(decodeToPcm(input));
    expect(Math.abs(samples.length - PCM_SAMPLE_RATE)).toBeLessThan(0.01 * PCM_SAMPLE_RATE);
  });

  it("returns the decodable part of an MP3 cut off mid-stream", async () => {
    const full = file("full.mp3");
    await writeAudioFile(full, tone(4));
    const bytes = await readFile(full);
    const input = file("cut.mp3");
    await writeFile(input, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const seconds = (await collect(decodeToPcm(input))).length / PCM_SAMPLE_RATE;
    expect(seconds).toBeGreaterThan(1.5);
    expect(seconds).toBeLessThan(2.5);
  });

  it.each([
    ["a WAV cut inside its header", async () => (await readFile(file("tone.wav"))).subarray(0, 30)],
    ["an MP3 cut inside its first frame", async () => (await readFile(file("tone.mp3"))).subarray(0, 100)],
    [
      "an MP4 whose index (moov, written last) is cut off",
      async () => {
        const bytes = await readFile(file("tone.m4a"));
        return bytes.subarray(0, Math.floor(bytes.length / 2));
      },
    ],
  ])("rejects %s as truncated or corrupt (422)", async (_kind, makeBytes) => {
    const input = file("damaged.bin");
    await writeFile(input, await makeBytes());
    const err = await domainErrorFrom(collect(decodeToPcm(input)));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("audio could not be decoded: file is truncated or corrupt");
    expect(err.message).not.toContain(dir);
  });

  it("rejects audio longer than the limit (422) and stops ffmpeg", async () => {
    const stream = decodeToPcm(file("three-seconds.ogg"), { maxDurationSeconds: 2 });
    const err = await domainErrorFrom(collect(stream));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("audio is longer than the limit of 2 s");
    expect(err.details).toEqual({ max_duration_seconds: 2 });
    await expect(stream.done).rejects.toBe(err);
    expect(isRunning(stream.pid!)).toBe(false);
  });

  it("accepts audio exactly at the limit despite codec padding", async () => {
    const input = file("two-seconds.m4a");
    await writeAudioFile(input, tone(2));
    const samples = await collect(decodeToPcm(input, { maxDurationSeconds: 2 }));
    expect(samples.length).toBeGreaterThan(1.9 * PCM_SAMPLE_RATE);
  });

  it("kills ffmpeg when aborted mid-stream and rejects with the abort reason", async () => {
    const controller = new AbortController();
    const stream = decodeToPcm(file("long-44k.wav"), { signal: controller.signal });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const reason = new DomainError("timeout", "transcription took too long");
    controller.abort(reason);
    // `done` settles (after ffmpeg has exited) even though nobody is reading.
    await expect(stream.done).rejects.toBe(reason);
    expect(isRunning(stream.pid!)).toBe(false);
    await expect(iterator.next()).rejects.toBe(reason);
  });

  it("reads a WAV in Whisper's format in chunks, and an abort rejects at once with its reason", async () => {
    const controller = new AbortController();
    const stream = decodeToPcm(file("ten-minutes.wav"), { signal: controller.signal });
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.value.length).toBeLessThan(PCM_SAMPLE_RATE * 10);
    expect(stream.pid).toBeUndefined();
    const reason = new DomainError("timeout", "transcription took too long");
    controller.abort(reason);
    await expect(stream.done).rejects.toBe(reason);
    await expect(iterator.next()).rejects.toBe(reason);
  });

  it("does not start ffmpeg when the signal is already aborted", async () => {
    const stream = decodeToPcm(file("tone.wav"), { signal: AbortSignal.abort(new Error("gone")) });
    await expect(collect(stream)).rejects.toThrow("gone");
    expect(stream.pid).toBeUndefined();
  });

  it("kills ffmpeg when the consumer stops early", async () => {
    const stream = decodeToPcm(file("long-44k.wav"));
    let received = 0;
    for await (const chunk of stream) {
      received += chunk.length;
      break;
    }
    expect(isRunning(stream.pid!)).toBe(false);
    await expect(stream.done).resolves.toEqual({ samples: received, durationSeconds: received / PCM_SAMPLE_RATE });
  });

  it.each([
    ["before its first samples", 0],
    ["after some samples", 64_000],
  ])("kills ffmpeg that gets no further with a file %s, and fails as unprocessable audio (422)", { timeout: 30_000 }, async (_when, outputBytes) => {
    const stream = decodeToPcm(file("tone.mp3"), { ffmpegPath: await stuckFfmpeg(dir, { outputBytes }), stallMs: 500 });
    const err = await domainErrorFrom(collect(stream));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("audio could not be decoded: ffmpeg got no further with the file for 0.5 s");
    expect(isRunning(stream.pid!)).toBe(false);
  });

  it("does not take a consumer that reads slowly for ffmpeg getting no further", async () => {
    const stream = decodeToPcm(file("long-44k.wav"), { stallMs: 1_000 });
    const iterator = stream[Symbol.asyncIterator]();
    let samples = (await iterator.next()).value.length;
    // ffmpeg waits on a full pipe meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) samples += next.value.length;
    expect(samples).toBe((await collect(decodeToPcm(file("long-44k.wav")))).length);
    await expect(stream.done).resolves.toMatchObject({ samples });
  });

  it("can be iterated only once", async () => {
    const stream = decodeToPcm(file("tone.wav"));
    await collect(stream);
    expect(() => stream[Symbol.asyncIterator]()).toThrow(/only once/);
  });

  it("rejects a limit that is not a positive number", () => {
    expect(() => decodeToPcm(file("tone.wav"), { maxDurationSeconds: 0 })).toThrow(RangeError);
  });
});

describe("extractAudio", () => {
  it.each(["wav", "mp3", "opus"] as const)("extracts a video's audio track as 16 kHz mono %s", async (format) => {
    const input = file("talk.mov");
    await writeAudioFile(input, tone(2), { format: "mov", channels: 2, sampleRate: 48_000 });
    const output = file(`talk-audio.${format}`);
    const { durationSeconds } = await extractAudio(input, output, format);
    expect(Math.abs(durationSeconds - 2)).toBeLessThan(0.1);
    const samples = await collect(decodeToPcm(output));
    expect(Math.abs(samples.length / PCM_SAMPLE_RATE - 2)).toBeLessThan(0.1);
    expect(dominantFrequency(samples)).toBeCloseTo(1000, -1);
    expect(await describeStreams(output)).toMatch(format === "opus" ? /Audio: opus, .*mono/ : /Audio: .*16000 Hz, mono/);
    // Decodes cleanly to the end.
    const check = await runFfmpeg(["-nostdin", "-hide_banner", "-loglevel", "error", "-i", output, "-f", "null", "-"]);
    expect(check.stderr).toBe("");
  });

  it("writes a mono 16 kHz PCM WAV", async () => {
    const output = file("extracted.wav");
    await extractAudio(file("tone.webm"), output, "wav");
    const header = await readFile(output);
    expect(header.readUInt16LE(20)).toBe(1); // PCM
    expect(header.readUInt16LE(22)).toBe(1); // channels
    expect(header.readUInt32LE(24)).toBe(PCM_SAMPLE_RATE);
  });

  it("classifies failures like decoding and leaves no output behind", async () => {
    const output = file("never.mp3");
    const noAudio = await domainErrorFrom(extractAudio(file("silent-film.mp4"), output, "mp3"));
    expect(noAudio.message).toBe("the file has no audio stream");
    const notMedia = file("notes.txt");
    await writeFile(notMedia, "meeting notes\n");
    expect((await domainErrorFrom(extractAudio(notMedia, output, "mp3"))).code).toBe("unsupported_media");
    expect((await domainErrorFrom(extractAudio(file("empty.wav"), output, "mp3"))).message).toBe("empty audio file");
    expect((await domainErrorFrom(extractAudio(file("no-samples.wav"), output, "wav"))).code).toBe("unprocessable_audio");
    expect(existsSync(output)).toBe(false);
  });

  it("rejects audio longer than the limit and removes the partial output", async () => {
    const output = file("too-long.opus");
    const err = await domainErrorFrom(extractAudio(file("three-seconds.ogg"), output, "opus", { maxDurationSeconds: 2 }));
    expect(err.message).toBe("audio is longer than the limit of 2 s");
    expect(existsSync(output)).toBe(false);
  });

  it("kills ffmpeg and rejects with the reason when aborted", async () => {
    const controller = new AbortController();
    const output = file("aborted.mp3");
    const extraction = extractAudio(file("ten-minutes.wav"), output, "mp3", { signal: controller.signal });
    // Abort once ffmpeg is writing, so it is a running process that gets killed.
    await waitFor(() => existsSync(output));
    controller.abort(new Error("client went away"));
    await expect(extraction).rejects.toThrow("client went away");
    expect(existsSync(output)).toBe(false);
  });

  it("kills ffmpeg that reports no progress at all, and fails as unprocessable audio (422)", { timeout: 30_000 }, async () => {
    const ffmpeg = await stuckFfmpeg(dir);
    const err = await domainErrorFrom(extractAudio(file("tone.webm"), file("unreported.mp3"), "mp3", { ffmpegPath: ffmpeg, stallMs: 500 }));
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("audio could not be decoded: ffmpeg got no further with the file for 0.5 s");
    expect(isRunning(await stuckFfmpegPid(ffmpeg))).toBe(false);
  });

  it("kills ffmpeg that keeps reporting the same progress, fails as unprocessable audio (422) and removes the partial output", { timeout: 30_000 }, async () => {
    const ffmpeg = await progressFfmpeg(dir);
    const output = file("stuck.mp3");
    const extraction = extractAudio(file("tone.webm"), output, "mp3", { ffmpegPath: ffmpeg, stallMs: 500 });
    await waitFor(() => existsSync(output));
    const err = await domainErrorFrom(extraction);
    expect(err.code).toBe("unprocessable_audio");
    expect(err.message).toBe("audio could not be decoded: ffmpeg got no further with the file for 0.5 s");
    expect(isRunning(await stuckFfmpegPid(ffmpeg))).toBe(false);
    expect(existsSync(output)).toBe(false);
  });

  it("lets ffmpeg whose progress keeps advancing run past the bound", { timeout: 30_000 }, async () => {
    const ffmpeg = await progressFfmpeg(dir, { advancing: true, seconds: 2.5 });
    const { durationSeconds } = await extractAudio(file("tone.webm"), file("slow.mp3"), "mp3", { ffmpegPath: ffmpeg, stallMs: 1_000 });
    expect(durationSeconds).toBeCloseTo(3.5, 6);
  });
});

describe("runFfmpeg", () => {
  it("reports a failed run with exit code and stderr for logs", async () => {
    const err = await runFfmpeg(["-nostdin", "-hide_banner", "-i", file("missing.wav"), "-f", "null", "-"]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FfmpegFailure);
    expect((err as FfmpegFailure).exitCode).not.toBe(0);
    expect((err as FfmpegFailure).stderr).toContain("missing.wav");
  });
});
