import { mulberry32 } from "../../lib/random.ts";
/**
 * Deterministic test and benchmark audio: pure tones and silence, written as WAV or transcoded by
 * ffmpeg into the containers clients upload. Pure tones make decoding checkable (a 1 kHz tone
 * must still cross zero 2000 times a second) and give the generated "micro" Whisper model
 * something to name.
 */
import { extname, resolve } from "node:path";
import { writeFile } from "node:fs/promises";
import { PCM_SAMPLE_RATE, runFfmpeg } from "../../lib/audio/ffmpeg.ts";

export type SynthPart = { tone: number; seconds: number; amplitude?: number } | { silence: number };

export type AudioFileFormat = "wav" | "mp3" | "m4a" | "ogg" | "opus" | "flac" | "webm" | "mp4" | "mov";

export interface WriteAudioOptions {
  /** Default 16000. */
  sampleRate?: number;
  /** Default 1. Stereo duplicates the signal into both channels unless `stereoLeftOnly`. */
  channels?: 1 | 2;
  /** Stereo with the signal in the left channel and silence in the right. */
  stereoLeftOnly?: boolean;
  /** Default: from the file's extension, else wav. */
  format?: AudioFileFormat;
  /** Sample format of WAV output (and of the WAV handed to ffmpeg); default 16. */
  bitDepth?: 16 | 32;
  ffmpegPath?: string;
}

const FADE_SECONDS = 0.01;
const DEFAULT_AMPLITUDE = 0.5;

const FORMATS: readonly AudioFileFormat[] = ["wav", "mp3", "m4a", "ogg", "opus", "flac", "webm", "mp4", "mov"];

const ENCODER_ARGS: Record<Exclude<AudioFileFormat, "wav">, string[]> = {
  mp3: ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
  m4a: ["-c:a", "aac", "-b:a", "64k", "-f", "mp4"],
  ogg: ["-c:a", "libvorbis", "-f", "ogg"],
  opus: ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
  flac: ["-c:a", "flac", "-f", "flac"],
  webm: ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
  // The native mpeg4 encoder is in every ffmpeg build, unlike libx264.
  mp4: ["-c:a", "aac", "-b:a", "64k", "-c:v", "mpeg4", "-f", "mp4"],
  mov: ["-c:a", "aac", "-b:a", "64k", "-c:v", "mpeg4", "-f", "mov"],
};

/** Mono audio made of the parts in order; each tone fades in and out over 10 ms to avoid clicks. */
export function synthesize(parts: SynthPart[], opts: { sampleRate?: number } = {}): Float32Array {
  const sampleRate = opts.sampleRate ?? PCM_SAMPLE_RATE;
  if (!Number.isInteger(sampleRate) || sampleRate <= 0) {
    throw new RangeError(`sampleRate must be a positive integer, got ${sampleRate}`);
  }
  const lengths = parts.map((part) => {
    const seconds = "silence" in part ? part.silence : part.seconds;
    if (!Number.isFinite(seconds) || seconds < 0) {
      throw new RangeError(`part durations must be non-negative seconds, got ${seconds}`);
    }
    return Math.round(seconds * sampleRate);
  });
  const out = new Float32Array(lengths.reduce((sum, n) => sum + n, 0));
  let offset = 0;
  parts.forEach((part, index) => {
    const length = lengths[index]!;
    if (!("silence" in part)) writeTone(out.subarray(offset, offset + length), part, sampleRate);
    offset += length;
  });
  return out;
}

function writeTone(target: Float32Array, part: { tone: number; amplitude?: number }, sampleRate: number): void {
  const amplitude = part.amplitude ?? DEFAULT_AMPLITUDE;
  if (!(part.tone > 0 && part.tone < sampleRate / 2)) {
    throw new RangeError(`tone must be between 0 and ${sampleRate / 2} Hz (Nyquist), got ${part.tone}`);
  }
  if (!(amplitude >= 0 && amplitude <= 1)) {
    throw new RangeError(`amplitude must be between 0 and 1, got ${amplitude}`);
  }
  const fade = Math.max(1, Math.min(Math.round(FADE_SECONDS * sampleRate), Math.floor(target.length / 2)));
  const step = (2 * Math.PI * part.tone) / sampleRate;
  for (let i = 0; i < target.length; i++) {
    const envelope = Math.min(1, i / fade, (target.length - 1 - i) / fade);
    target[i] = amplitude * envelope * Math.sin(step * i);
  }
}

/** A RIFF/WAVE file of 1 or 2 equally long channels: PCM 16-bit, or 32-bit IEEE float. */
export function encodeWav(channels: Float32Array[], sampleRate: number, bitDepth: 16 | 32 = 16): Buffer {
  const frames = channels[0]?.length ?? 0;
  if (channels.length < 1 || channels.length > 2) {
    throw new RangeError(`encodeWav takes 1 or 2 channels, got ${channels.length}`);
  }
  if (channels.some((channel) => channel.length !== frames)) {
    throw new RangeError("encodeWav channels must have the same length");
  }
  const float = bitDepth === 32;
  const bytesPerSample = bitDepth / 8;
  const blockAlign = channels.length * bytesPerSample;
  const dataBytes = frames * blockAlign;
  // Non-PCM WAVE (float) needs the extended fmt chunk (cbSize) and a fact chunk.
  const fmtBytes = float ? 18 : 16;
  const factBytes = float ? 12 : 0;
  const headerBytes = 12 + 8 + fmtBytes + factBytes + 8;
  const wav = Buffer.alloc(headerBytes + dataBytes);

  let at = wav.write("RIFF", 0, "latin1");
  at = wav.writeUInt32LE(wav.length - 8, at);
  at += wav.write("WAVE", at, "latin1");
  at += wav.write("fmt ", at, "latin1");
  at = wav.writeUInt32LE(fmtBytes, at);
  at = wav.writeUInt16LE(float ? 3 : 1, at);
  at = wav.writeUInt16LE(channels.length, at);
  at = wav.writeUInt32LE(sampleRate, at);
  at = wav.writeUInt32LE(sampleRate * blockAlign, at);
  at = wav.writeUInt16LE(blockAlign, at);
  at = wav.writeUInt16LE(bitDepth, at);
  if (float) {
    at = wav.writeUInt16LE(0, at);
    at += wav.write("fact", at, "latin1");
    at = wav.writeUInt32LE(4, at);
    at = wav.writeUInt32LE(frames, at);
  }
  at += wav.write("data", at, "latin1");
  at = wav.writeUInt32LE(dataBytes, at);

  for (let frame = 0; frame < frames; frame++) {
    for (const channel of channels) {
      const sample = Math.max(-1, Math.min(1, channel[frame]!));
      at = float ? wav.writeFloatLE(sample, at) : wav.writeInt16LE(Math.round(sample < 0 ? sample * 0x8000 : sample * 0x7fff), at);
    }
  }
  return wav;
}

/**
 * Writes synthesized audio to `path`: WAV directly, any other format through ffmpeg (fed the
 * WAV on stdin). mp4 and mov also get a small black video track, like a screen recording.
 */
export async function writeAudioFile(path: string, parts: SynthPart[], opts: WriteAudioOptions = {}): Promise<void> {
  const sampleRate = opts.sampleRate ?? PCM_SAMPLE_RATE;
  const format = opts.format ?? formatFromExtension(path);
  const mono = synthesize(parts, { sampleRate });
  const channels = opts.stereoLeftOnly ? [mono, new Float32Array(mono.length)] : opts.channels === 2 ? [mono, mono] : [mono];
  const wav = encodeWav(channels, sampleRate, opts.bitDepth);
  if (format === "wav") {
    await writeFile(path, wav);
    return;
  }
  const seconds = mono.length / sampleRate;
  const video = format === "mp4" || format === "mov" ? ["-f", "lavfi", "-i", `color=c=black:s=64x64:r=5:d=${seconds}`] : [];
  await runFfmpeg(
    [
      "-nostdin",
      "-hide_banner",
      "-loglevel",
      "error",
      "-f",
      "wav",
      "-i",
      "pipe:0",
      ...video,
      "-map",
      "0:a",
      ...(video.length ? ["-map", "1:v", "-shortest"] : []),
      ...ENCODER_ARGS[format],
      "-y",
      `file:${resolve(path)}`,
    ],
    { stdin: wav, ffmpegPath: opts.ffmpegPath },
  );
}

/** Joins audio files end to end (any formats and rates; the output takes the first input's). */
export async function concatAudioFiles(inputs: string[], output: string, opts: { ffmpegPath?: string } = {}): Promise<void> {
  if (inputs.length === 0) throw new RangeError("concatAudioFiles needs at least one input");
  const streams = inputs.map((_, index) => `[${index}:a:0]`).join("");
  await runFfmpeg(
    [
      "-nostdin",
      "-hide_banner",
      "-loglevel",
      "error",
      ...inputs.flatMap((input) => ["-i", `file:${resolve(input)}`]),
      "-filter_complex",
      `${streams}concat=n=${inputs.length}:v=0:a=1`,
      "-y",
      `file:${resolve(output)}`,
    ],
    opts,
  );
}

function formatFromExtension(path: string): AudioFileFormat {
  const extension = extname(path).slice(1).toLowerCase();
  return FORMATS.find((format) => format === extension) ?? "wav";
}

export type NoiseColor = "white" | "pink" | "brown";

/**
 * Seeded noise at about `rms` (default -20 dBFS): what a speech detector must not take for speech.
 * Pink is Paul Kellet's economy filter over white noise (-3 dB/octave); brown is leaky integrated
 * white noise (-6 dB/octave). Each is scaled to the requested level over its whole length.
 */
export function noise(color: NoiseColor, seconds: number, opts: { rms?: number; seed?: number; sampleRate?: number } = {}): Float32Array {
  const out = new Float32Array(Math.round(seconds * (opts.sampleRate ?? PCM_SAMPLE_RATE)));
  const random = mulberry32(opts.seed ?? 1);
  let b0 = 0;
  let b1 = 0;
  let b2 = 0;
  let brown = 0;
  for (let i = 0; i < out.length; i++) {
    const white = random() * 2 - 1;
    if (color === "white") out[i] = white;
    else if (color === "pink") {
      b0 = 0.99765 * b0 + white * 0.099046;
      b1 = 0.963 * b1 + white * 0.2965164;
      b2 = 0.57 * b2 + white * 1.0526913;
      out[i] = b0 + b1 + b2 + white * 0.1848;
    } else out[i] = brown = 0.998 * brown + white * 0.05;
  }
  return scaleToRms(out, opts.rms ?? 0.1);
}

/**
 * Music-like audio: a progression of triads (each note with decaying harmonics), one chord a second
 * with a soft attack and release, at about `rms`. Tonal and rhythmic, like a jingle under a podcast.
 */
export function chords(seconds: number, opts: { rms?: number; sampleRate?: number } = {}): Float32Array {
  const sampleRate = opts.sampleRate ?? PCM_SAMPLE_RATE;
  const out = new Float32Array(Math.round(seconds * sampleRate));
  // C, A minor, F, G major, from C4 up, as MIDI notes.
  const progression = [
    [60, 64, 67],
    [57, 60, 64],
    [53, 57, 60],
    [55, 59, 62],
  ];
  const chordSamples = sampleRate;
  for (let i = 0; i < out.length; i++) {
    const chord = progression[Math.floor(i / chordSamples) % progression.length]!;
    const t = (i % chordSamples) / sampleRate;
    const envelope = Math.min(1, t / 0.02) * Math.exp(-1.5 * t);
    let sum = 0;
    for (const note of chord) {
      const hz = 440 * 2 ** ((note - 69) / 12);
      for (let h = 1; h <= 4; h++) sum += Math.sin((2 * Math.PI * hz * h * i) / sampleRate) / h;
    }
    out[i] = envelope * sum;
  }
  return scaleToRms(out, opts.rms ?? 0.1);
}

function scaleToRms(samples: Float32Array, rms: number): Float32Array {
  let sum = 0;
  for (const s of samples) sum += s * s;
  const scale = sum > 0 ? rms / Math.sqrt(sum / samples.length) : 0;
  for (let i = 0; i < samples.length; i++) samples[i] = Math.max(-1, Math.min(1, samples[i]! * scale));
  return samples;
}
