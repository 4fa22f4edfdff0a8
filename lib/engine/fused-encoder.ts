import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { env } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { whisperFeatures, featureDims, type WhisperFeatureConfig } from "../audio/log-mel.ts";
import { releaseBuffer } from "../buffer-release.ts";
import { fuseEncoderAttention } from "../onnx/fuse-attention.ts";
import { externalDataFiles } from "../onnx/read.ts";
import type { ModelSpec } from "./protocol.ts";

/** The file name transformers.js loads for each dtype the service offers. */
const ENCODER_FILE: Record<ModelSpec["dtype"], string> = { q8: "onnx/encoder_model_quantized.onnx", fp32: "onnx/encoder_model.onnx" };

/**
 * How far the fused encoder's output may be from the original's, as mean |difference| over mean
 * |output|: a wrongly recognised layout scrambles heads or positions (differences the size of the
 * output itself); fp32 graphs agree to 1e-7, and q8 ones to 0.3% (dynamic quantization rounds the
 * next layer's inputs differently when attention's float sums come out in another order).
 */
const TOLERANCE = 0.02;

export interface EncoderSession {
  session: ort.InferenceSession;
  /** Self-attention layers running fused; 0 when the export's own graph runs. */
  layers: number;
  /** Why a fusion that was tried is not used (the check's figure, or onnxruntime's or the file system's error). */
  refused?: string;
}

type Releasable = { run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>; release(): Promise<void> };

/**
 * The session to run the model's encoder with: the encoder with its self-attention fused
 * (fuseEncoderAttention), from the same file transformers.js loaded (the local model directory, else
 * its download cache), checked against `original` on one window of synthetic audio. Null when the
 * file is not on disk here or has no attention to fuse: `original` stays then. Otherwise `original`
 * is released before the fused session is created: a released session's memory stays with the
 * process as free heap (releasing small fp32's encoder returned nothing to the system), so built
 * beside it the fused weights came on top (small fp32: 2313 MiB resident after load against 1777
 * unfused), and built after it they reuse most of it (2070-2154 MiB, and the rest absorbs the
 * encoder's and the rows' transients: the probe's peak with five rows is the same as unfused). A
 * fusion that fails the check, or that onnxruntime refuses, gives the export's own graph back,
 * built from its file.
 */
export async function encoderSession(
  spec: ModelSpec,
  original: Releasable,
  heads: number,
  features: WhisperFeatureConfig,
  options: Record<string, unknown>,
  tempDir: string = tmpdir(),
): Promise<EncoderSession | null> {
  const file = ENCODER_FILE[spec.dtype];
  const candidates = [env.allowLocalModels && env.localModelPath ? join(env.localModelPath, spec.id, file) : null, env.cacheDir ? join(env.cacheDir, spec.id, file) : null];
  const path = candidates.find((p): p is string => p !== null && existsSync(p));
  if (!path) return null;
  const bytes = await readFile(path);
  // The file's bytes (small fp32: 336 MB) would otherwise wait for the thread's next full collection.
  const releaseBytes = () => {
    if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) releaseBuffer(bytes.buffer);
  };
  const rewritten = fuseEncoderAttention(bytes, heads);
  if (!rewritten) {
    releaseBytes();
    return null;
  }
  // Exports over 2 GB keep their weights in files beside the graph.
  const external = externalDataFiles(bytes);
  const input = () => ({ input_features: new ort.Tensor("float32", whisperFeatures(probeAudio(), features), [1, ...featureDims(features)]) });
  const expected = (await original.run(input())).last_hidden_state!.data as Float32Array;
  await original.release();
  const sessionOptions = options as ort.InferenceSession.SessionOptions;
  let dir: string | null = null;
  let session: ort.InferenceSession | null = null;
  let refused: string;
  try {
    if (external.length > 0) {
      // The graph alone is small then; onnxruntime reads the weights from the export's directory.
      const extra = { ...(options.extra as Record<string, Record<string, unknown>> | undefined) };
      extra.session = { ...extra.session, model_external_initializers_file_folder_path: dirname(path) };
      const graph = rewritten.model.toBytes();
      session = await ort.InferenceSession.create(graph, { ...sessionOptions, extra });
      releaseBuffer(graph.buffer);
    } else {
      // From a file: onnxruntime building a session from a buffer held the weights once more (+290
      // MiB resident for small fp32), on top of the buffer itself.
      dir = await mkdtemp(join(tempDir, "slotscribe-encoder-"));
      await rewritten.model.writeFile(join(dir, "encoder.onnx"));
      session = await ort.InferenceSession.create(join(dir, "encoder.onnx"), sessionOptions);
    }
    const actual = (await session.run(input())).last_hidden_state!.data as Float32Array;
    let difference = 0;
    let magnitude = 0;
    for (let i = 0; i < expected.length; i++) {
      difference += Math.abs(expected[i]! - actual[i]!);
      magnitude += Math.abs(expected[i]!);
    }
    if (actual.length === expected.length && difference <= TOLERANCE * magnitude) return { session, layers: rewritten.fused };
    refused =
      actual.length === expected.length
        ? `its output differs from the export's by ${((100 * difference) / magnitude).toFixed(1)}% of its magnitude`
        : `its output has ${actual.length} values, the export's ${expected.length}`;
  } catch (err) {
    // A layout recognised wrongly can also make shapes that do not fit; no writable temporary
    // directory, or a full one, fails the write: the export runs then.
    refused = (err as Error).message.slice(0, 300);
  } finally {
    // The rewritten graph's chunks are views of the file's bytes: both are done with now.
    releaseBytes();
    if (dir) await rm(dir, { recursive: true, force: true });
  }
  await session?.release();
  return { session: await ort.InferenceSession.create(path, sessionOptions), layers: 0, refused };
}

/** 30 s of a gliding tone over a noise floor, the same every time: attention varies over the whole window. */
function probeAudio(): Float32Array {
  const samples = new Float32Array(30 * 16000);
  let seed = 1;
  for (let i = 0; i < samples.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    const t = i / 16000;
    samples[i] = 0.3 * Math.sin(2 * Math.PI * (200 * t + 20 * t * t)) + 0.02 * (seed / 2 ** 32 - 0.5);
  }
  return samples;
}
