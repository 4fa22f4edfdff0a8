/** A pause is at least 10 dB quieter than the median stretch around it. */
const PAUSE_RATIO = 0.1;

/**
 * Where to end a window that more audio follows: the middle of the quietest stretch in its last
 * `searchSeconds`, if that stretch is a pause; the whole window if nothing there is. A window that
 * ends in a pause does not cut a word at the seam, so it can be transcribed without waiting for the
 * window before it (faster-whisper's batched pipeline and WhisperX cut long audio at voice-activity
 * pauses for the same reason).
 */
export function quietCut(samples: Float32Array, sampleRate: number, searchSeconds = 5, stretchSeconds = 0.2): number {
  const frame = Math.max(1, Math.round(sampleRate / 100));
  const stretchFrames = Math.max(1, Math.round((stretchSeconds * sampleRate) / frame));
  const searchStart = Math.max(0, samples.length - Math.round(searchSeconds * sampleRate));
  const frames = Math.floor((samples.length - searchStart) / frame);
  if (frames < stretchFrames) return samples.length;
  const energy = new Float64Array(frames);
  for (let f = 0; f < frames; f++) {
    let sum = 0;
    for (let i = searchStart + f * frame, end = i + frame; i < end; i++) sum += samples[i]! * samples[i]!;
    energy[f] = sum;
  }
  const stretches = new Float64Array(frames - stretchFrames + 1);
  let sum = 0;
  for (let f = 0; f < frames; f++) {
    sum += energy[f]! - (f >= stretchFrames ? energy[f - stretchFrames]! : 0);
    if (f >= stretchFrames - 1) stretches[f - stretchFrames + 1] = sum;
  }
  let bestStart = 0;
  // Ties go to the later stretch: the longer window, fewer windows in all.
  for (let s = 1; s < stretches.length; s++) if (stretches[s]! <= stretches[bestStart]!) bestStart = s;
  const median = Float64Array.from(stretches).sort()[stretches.length >> 1]!;
  if (stretches[bestStart]! > PAUSE_RATIO * median) return samples.length;
  return searchStart + Math.round((bestStart + stretchFrames / 2) * frame);
}
