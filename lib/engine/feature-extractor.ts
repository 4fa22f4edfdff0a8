/**
 * transformers.js's WhisperFeatureExtractor as the engine uses it: its configuration, for features
 * computed on another thread (lib/audio/log-mel.ts, which stays free of the library so the audio
 * thread does not load it), and its own feature computation switched to the fast log-mel.
 */
import { Tensor, WhisperFeatureExtractor } from "@huggingface/transformers";
import { framesOf, logMelSpectrogram, type WhisperFeatureConfig } from "../audio/log-mel.ts";

/** transformers.js's WhisperFeatureExtractor, as far as its configuration goes. */
interface WhisperExtractorInternals {
  window: Float64Array;
  config: { mel_filters: number[][]; hop_length: number; n_samples: number; nb_max_frames: number };
  _extract_fbank_features(waveform: Float32Array): Promise<Tensor>;
}

/** The configuration of a loaded model's WhisperFeatureExtractor, or null for another extractor. */
export function whisperFeatureConfig(extractor: unknown): WhisperFeatureConfig | null {
  if (!(extractor instanceof WhisperFeatureExtractor)) return null;
  const { window, config } = extractor as unknown as WhisperExtractorInternals;
  return { window, melFilters: config.mel_filters, hopLength: config.hop_length, windowSamples: config.n_samples, maxFrames: config.nb_max_frames };
}

/**
 * Makes a loaded WhisperFeatureExtractor compute its features with logMelSpectrogram. Everything
 * around it (padding to 30 s, the tensor's shape, the pipeline) stays the library's.
 */
export function useFastLogMel(extractor: unknown): boolean {
  const config = whisperFeatureConfig(extractor);
  if (!config) return false;
  (extractor as WhisperExtractorInternals)._extract_fbank_features = async (waveform) => {
    const maxFrames = framesOf(waveform.length, config);
    const features = logMelSpectrogram(waveform, { window: config.window, melFilters: config.melFilters, hopLength: config.hopLength, maxFrames });
    return new Tensor("float32", features, [config.melFilters.length, maxFrames]);
  };
  return true;
}
