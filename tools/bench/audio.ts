import { existsSync, readdirSync, readFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { runFfmpeg } from "../../lib/audio/ffmpeg.ts";
import { concatAudioFiles, writeAudioFile } from "../audio/synth.ts";
import { sharedDir } from "../models/generate.ts";
import type { Clip } from "./http.ts";

// Audio: real speech from ../shared/audio concatenated to length, else synthesized tones.

function wavSeconds(path: string): number {
  const buf = readFileSync(path);
  let at = 12;
  let rate = 16000;
  let blockAlign = 2;
  while (at + 8 <= buf.length) {
    const id = buf.toString("latin1", at, at + 4);
    const size = buf.readUInt32LE(at + 4);
    if (id === "fmt ") {
      rate = buf.readUInt32LE(at + 12);
      blockAlign = buf.readUInt16LE(at + 20);
    } else if (id === "data") return size / blockAlign / rate;
    at += 8 + size + (size % 2);
  }
  throw new Error(`${path}: no data chunk`);
}

export interface AudioSet {
  source: string;
  clips: Record<"speed" | "concurrent" | "window" | "long" | "short", Clip>;
  /**
   * The concurrent clip as an mp3, as most clients of an OpenAI-style API upload: each request then
   * has an ffmpeg decoding it, which the WAV clips (read without ffmpeg) never start.
   */
  concurrentMp3: Clip;
}

export async function prepareAudio(tmp: string, log: (l: string) => void): Promise<AudioSet> {
  // The same files in the quick run: the long file is cancelled once the clips behind it are
  // measured, so its length costs nothing (at 300 s tiny finished it, in 1.9 s, before a clip sent
  // behind it had returned); 60 s concurrent clips are the length the memory targets name
  // (with 30 s ones the naive server's copies were smaller: 0.34x its memory against 0.30x).
  // window: one fully voiced 30 s window, for the memory-per-slot peaks.
  const lengths = { speed: 300, concurrent: 60, window: 30, long: 600, short: 5 };
  const audioDir = join(sharedDir(), "audio");
  const speech: { path: string; seconds: number }[] = [];
  for (const set of ["ljspeech-coqui", "librispeech-mini", "jfk"]) {
    const dir = join(audioDir, set);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)
      .filter((n) => n.endsWith(".wav"))
      .sort())
      speech.push({ path: join(dir, f), seconds: wavSeconds(join(dir, f)) });
  }
  const clips = {} as AudioSet["clips"];
  const source = speech.length
    ? `real speech: ${speech.length} clips from ${audioDir} (ljspeech-coqui, librispeech-mini, jfk), concatenated in a cycle and cut to length`
    : "synthesized tones (no ../shared/audio): 440/600/1000 Hz, 9.5 s tones with 0.5 s gaps";
  for (const [name, secs] of Object.entries(lengths) as [keyof AudioSet["clips"], number][]) {
    const path = join(tmp, `${name}-${secs}s.wav`);
    if (speech.length) {
      const inputs: string[] = [];
      // Different starting clips for different files; the 5 s clip starts on a clip longer than 5 s.
      let i =
        name === "short"
          ? Math.max(
              0,
              speech.findIndex((s) => s.seconds > 6),
            )
          : name === "concurrent" || name === "window"
            ? 7 % speech.length
            : 0;
      for (let total = 0; total < secs + 1; i++) {
        const s = speech[i % speech.length]!;
        inputs.push(s.path);
        total += s.seconds;
      }
      const joined = join(tmp, `${name}-joined.wav`);
      await concatAudioFiles(inputs, joined);
      await runFfmpeg([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        `file:${joined}`,
        "-t",
        String(secs),
        "-ac",
        "1",
        "-ar",
        "16000",
        "-c:a",
        "pcm_s16le",
        "-y",
        `file:${path}`,
      ]);
      await rm(joined, { force: true });
    } else {
      const parts = [];
      for (let t = 0, k = 0; t < secs; t += 10, k++) {
        parts.push({ tone: [440, 600, 1000][k % 3]!, seconds: Math.min(9.5, secs - t) });
        if (secs - t > 9.5) parts.push({ silence: Math.min(0.5, secs - t - 9.5) });
      }
      await writeAudioFile(path, parts);
    }
    clips[name] = { name, path, seconds: wavSeconds(path), bytes: await readFile(path) };
    log(`audio ${name}: ${clips[name].seconds.toFixed(1)} s`);
  }
  const concurrent = clips.concurrent;
  const mp3Path = concurrent.path.replace(/\.wav$/, ".mp3");
  await runFfmpeg(["-nostdin", "-hide_banner", "-loglevel", "error", "-i", `file:${concurrent.path}`, "-c:a", "libmp3lame", "-b:a", "64k", "-y", `file:${mp3Path}`]);
  const concurrentMp3 = { name: "concurrent-mp3", path: mp3Path, seconds: concurrent.seconds, bytes: await readFile(mp3Path) };
  log(`audio concurrent as mp3: ${(concurrentMp3.bytes.length / 1024).toFixed(0)} KiB`);
  return { source, clips, concurrentMp3 };
}
