import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
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

export interface FusedEncoder {
  session: ort.InferenceSession;
  layers: number;
}

/**
 * The model's encoder with its self-attention fused (fuseEncoderAttention), from the same file
 * transformers.js loaded (the local model directory, else its download cache), checked against
 * `original` on one window of synthetic audio. Null when the file is not on disk here, the export's
 * attention is laid out in a way the fusion does not recognise, or the check fails: the original
 * session then stays.
 */
export async function fuseEncoder(
  spec: ModelSpec,
  original: { run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> },
  heads: number,
  features: WhisperFeatureConfig,
  options: Record<string, unknown>,
): Promise<FusedEncoder | null> {
  const file = ENCODER_FILE[spec.dtype];
  const candidates = [env.allowLocalModels && env.localModelPath ? join(env.localModelPath, spec.id, file) : null, env.cacheDir ? join(env.cacheDir, spec.id, file) : null];
  const path = candidates.find((p): p is string => p !== null && existsSync(p));
  if (!path) return null;
  const { model, fused } = fuseEncoderAttention(await readFile(path), heads);
  if (fused === 0) return null;
  let session: ort.InferenceSession | null = null;
  try {
    session = await ort.InferenceSession.create(model, options as ort.InferenceSession.SessionOptions);
    const input = { input_features: new ort.Tensor("float32", whisperFeatures(probeAudio(), features), [1, ...featureDims(features)]) };
    const expected = (await original.run(input)).last_hidden_state!.data as Float32Array;
    const actual = (await session.run(input)).last_hidden_state!.data as Float32Array;
    let difference = 0;
    let magnitude = 0;
    for (let i = 0; i < expected.length; i++) {
      difference += Math.abs(expected[i]! - actual[i]!);
      magnitude += Math.abs(expected[i]!);
    }
    if (actual.length === expected.length && difference <= TOLERANCE * magnitude) return { session, layers: fused };
  } catch {
    // A layout recognised wrongly can also make shapes that do not fit: the export stays then too.
  }
  await session?.release();
  return null;
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
