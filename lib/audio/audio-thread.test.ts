import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Tensor, WhisperFeatureExtractor } from "@huggingface/transformers";
import { readPcm } from "./ffmpeg.ts";
import { useFastLogMel, whisperFeatureConfig } from "../engine/feature-extractor.ts";
import { featureDims } from "./log-mel.ts";
import { initialCarry, runSilero, type SileroCarry } from "./silero-vad.ts";
import { noise } from "../../tools/audio/synth.ts";
import { AudioThread } from "./audio-thread.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const jfkPath = join(sharedDir, "audio", "jfk", "jfk.wav");
const RATE = 16_000;

/** A file's probabilities block by block, through `run`, carrying the state as the windows do. */
async function probabilities(run: typeof runSilero, samples: Float32Array, blockSeconds: number): Promise<number[]> {
  let carry: SileroCarry = initialCarry();
  const out: number[] = [];
  for (let at = 0; at < samples.length; at += blockSeconds * RATE) {
    const result = await run(samples.subarray(at, at + blockSeconds * RATE), carry);
    carry = result.carry;
    out.push(...result.probs);
  }
  return out;
}

const thread = new AudioThread();
afterAll(() => thread.close());

describe("Silero on its own thread", () => {
  it.skipIf(!existsSync(jfkPath))("gives the probabilities the model gives in this thread, each file's blocks with its own state", async () => {
    const speech = await readPcm(jfkPath);
    const hiss = noise("white", 11, { rms: 0.1, seed: 4 });
    const [alone, noiseAlone] = [await probabilities(runSilero, speech, 4), await probabilities(runSilero, hiss, 4)];
    // Two files at once: their blocks interleave on the one thread.
    const [both, noiseBoth] = await Promise.all([probabilities(thread.run, speech, 4), probabilities(thread.run, hiss, 4)]);
    expect(both).toHaveLength(alone.length);
    for (let i = 0; i < alone.length; i++) expect(both[i]).toBeCloseTo(alone[i]!, 5);
    for (let i = 0; i < noiseAlone.length; i++) expect(noiseBoth[i]).toBeCloseTo(noiseAlone[i]!, 5);
    expect(Math.max(...both)).toBeGreaterThan(0.9);
    expect(Math.max(...noiseBoth)).toBeLessThan(0.5);
  });

  it("finishes the blocks sent before close(), and starts again on the next block", async () => {
    const block = noise("pink", 20, { seed: 5 });
    const pending = thread.run(block, initialCarry());
    await thread.close();
    expect((await pending).probs).toHaveLength(Math.ceil(block.length / 512));
    expect((await thread.run(block.subarray(0, 512), initialCarry())).probs).toHaveLength(1);
  });
});

describe("Features on the audio thread", () => {
  it.skipIf(!existsSync(jfkPath))("are the encoder input the library's extractor gives, for a short window and a full one", async () => {
    const extractor = new WhisperFeatureExtractor({ feature_size: 80, hop_length: 160, n_fft: 400, n_samples: 480000, nb_max_frames: 3000, sampling_rate: 16000 });
    const config = whisperFeatureConfig(extractor)!;
    useFastLogMel(extractor);
    const speech = await readPcm(jfkPath);
    const full = new Float32Array(32 * RATE);
    for (let at = 0; at < full.length; at += speech.length) full.set(speech.subarray(0, full.length - at), at);
    for (const window of [speech, full]) {
      const fromThread = await thread.features(window, config);
      const { input_features } = (await extractor(window)) as { input_features: Tensor };
      expect(input_features.dims).toEqual([1, ...featureDims(config)]);
      expect(fromThread).toEqual(input_features.data);
    }
  });
});

describe("closing the audio thread", () => {
  it("keeps the process alive until the thread has exited, even when a reply arrives after close()", async () => {
    // In a process of its own: what fails here is the process ending with its event loop empty
    // (exit code 13, an unsettled top-level await) while close() still waits.
    const script = [
      `import { AudioThread } from ${JSON.stringify(join(import.meta.dirname, "audio-thread.ts"))};`,
      "const thread = new AudioThread();",
      "const config = { window: new Float64Array(400).fill(0.5), melFilters: [new Array(201).fill(0.01)], hopLength: 160, windowSamples: 480000, maxFrames: 3000 };",
      "await thread.features(new Float32Array(1600), config);",
      "const late = thread.features(new Float32Array(480000).fill(0.1), config);",
      "await thread.close();",
      "console.log('closed', (await late).length);",
    ].join("\n");
    const dir = mkdtempSync(join(tmpdir(), "audio-thread-"));
    writeFileSync(join(dir, "close.mts"), script);
    const child = spawnSync(process.execPath, ["--import", "tsx", join(dir, "close.mts")], { encoding: "utf8", timeout: 60_000 });
    rmSync(dir, { recursive: true, force: true });
    expect(child.status).toBe(0);
    expect(child.stdout.trim()).toBe("closed 3000");
  });
});
