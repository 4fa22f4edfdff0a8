import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { env } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { whisperFeatures, featureDims, type WhisperFeatureConfig } from "../audio/log-mel.ts";
import { fuseEncoderAttention } from "../onnx/fuse-attention.ts";
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
}

type Releasable = { run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>; release(): Promise<void> };

/**
 * The session to run the model's encoder with: the encoder with its self-attention fused
 * (fuseEncoderAttention), from the same file transformers.js loaded (the local model directory, else
 * its download cache), checked against `original` on one window of synthetic audio. Null when the
 * file is not on disk here or has no attention to fuse: `original` stays then. Otherwise `original`
 * is released before the fused session is created: a released session's memory stays with the
 * process as free heap (measured: releasing small fp32's encoder returned nothing to the system), so
 * built beside it the fused weights held the encoder twice (+536 MiB resident for small fp32), while
 * built after it they take the same memory again. A fusion that fails the check, or that
 * onnxruntime refuses, gives the export's own graph back, built from the same bytes.
 */
export async function encoderSession(
  spec: ModelSpec,
  original: Releasable,
  heads: number,
  features: WhisperFeatureConfig,
  options: Record<string, unknown>,
): Promise<EncoderSession | null> {
  const file = ENCODER_FILE[spec.dtype];
  const candidates = [env.allowLocalModels && env.localModelPath ? join(env.localModelPath, spec.id, file) : null, env.cacheDir ? join(env.cacheDir, spec.id, file) : null];
  const path = candidates.find((p): p is string => p !== null && existsSync(p));
  if (!path) return null;
  const rewritten = fuseEncoderAttention(await readFile(path), heads);
  if (!rewritten) return null;
  const input = () => ({ input_features: new ort.Tensor("float32", whisperFeatures(probeAudio(), features), [1, ...featureDims(features)]) });
  const expected = (await original.run(input())).last_hidden_state!.data as Float32Array;
  await original.release();
  const sessionOptions = options as ort.InferenceSession.SessionOptions;
  const dir = await mkdtemp(join(tmpdir(), "slotscribe-encoder-"));
  let session: ort.InferenceSession | null = null;
  try {
    // From a file: onnxruntime building a session from a buffer held the weights once more (+290 MiB
    // resident for small fp32), on top of the buffer itself.
    await rewritten.model.writeFile(join(dir, "encoder.onnx"));
    session = await ort.InferenceSession.create(join(dir, "encoder.onnx"), sessionOptions);
    const actual = (await session.run(input())).last_hidden_state!.data as Float32Array;
    let difference = 0;
    let magnitude = 0;
    for (let i = 0; i < expected.length; i++) {
      difference += Math.abs(expected[i]! - actual[i]!);
      magnitude += Math.abs(expected[i]!);
    }
    if (actual.length === expected.length && difference <= TOLERANCE * magnitude) return { session, layers: rewritten.fused };
  } catch {
    // A layout recognised wrongly can also make shapes that do not fit; a full disk fails the write:
    // the export runs then.
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await session?.release();
  return { session: await ort.InferenceSession.create(path, sessionOptions), layers: 0 };
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
