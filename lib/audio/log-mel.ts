/**
 * Whisper's log-mel features, computed as transformers.js's WhisperFeatureExtractor computes them
 * (reflect-padded 400-sample frames every 160 samples, periodic Hann window, power spectrum, Slaney
 * mel filters, log10 clamped 8 below the maximum, then (x + 4) / 4), with a faster FFT.
 *
 * The library's FFT handles a length that is not a power of two with Bluestein's algorithm, three
 * 1024-point complex transforms for each 400-point frame; 3000 frames of a window took ~250 ms, a
 * fifth of a tiny model's whole window. A mixed-radix transform of the 400 real samples as 200
 * complex ones does the same in a few percent of that. Both work in float64 and store float32, so
 * the features agree to float32 rounding (lib/audio/log-mel.test.ts compares them).
 */

const C1 = Math.cos((2 * Math.PI) / 5);
const C2 = Math.cos((4 * Math.PI) / 5);
const S1 = Math.sin((2 * Math.PI) / 5);
const S2 = Math.sin((4 * Math.PI) / 5);

interface Level {
  /** Radix of this level and length of each of its sub-transforms. */
  p: number;
  m: number;
  /** Twiddles W_n^(q·k) at [q * m + k], n = p * m. */
  twRe: Float64Array;
  twIm: Float64Array;
  /** The p-point DFT matrix, [q * p + s]. */
  dftRe: Float64Array;
  dftIm: Float64Array;
}

/** Complex FFT of a length whose prime factors are 2, 3 or 5 (recursive mixed-radix Cooley-Tukey). */
export class ComplexFft {
  readonly size: number;
  private readonly levels: Level[] = [];
  private readonly tRe = new Float64Array(5);
  private readonly tIm = new Float64Array(5);

  constructor(size: number) {
    this.size = size;
    let n = size;
    for (const p of [4, 2, 3, 5]) {
      while (n % p === 0) {
        const m = n / p;
        const level: Level = { p, m, twRe: new Float64Array(n), twIm: new Float64Array(n), dftRe: new Float64Array(p * p), dftIm: new Float64Array(p * p) };
        for (let q = 0; q < p; q++) {
          for (let k = 0; k < m; k++) {
            level.twRe[q * m + k] = Math.cos((2 * Math.PI * q * k) / n);
            level.twIm[q * m + k] = -Math.sin((2 * Math.PI * q * k) / n);
          }
          for (let t = 0; t < p; t++) {
            level.dftRe[q * p + t] = Math.cos((2 * Math.PI * ((q * t) % p)) / p);
            level.dftIm[q * p + t] = -Math.sin((2 * Math.PI * ((q * t) % p)) / p);
          }
        }
        this.levels.push(level);
        n = m;
      }
    }
    if (n !== 1 || size < 1) throw new RangeError(`FFT size ${size} has prime factors other than 2, 3 and 5`);
  }

  /** out = DFT(in); `in` and `out` must not overlap. */
  transform(inRe: Float64Array, inIm: Float64Array, outRe: Float64Array, outIm: Float64Array): void {
    if (this.size === 1) {
      outRe[0] = inRe[0]!;
      outIm[0] = inIm[0]!;
      return;
    }
    this.step(0, inRe, inIm, 0, 1, outRe, outIm, 0);
  }

  private step(depth: number, inRe: Float64Array, inIm: Float64Array, inOff: number, stride: number, outRe: Float64Array, outIm: Float64Array, outOff: number): void {
    const { p, m, twRe, twIm, dftRe, dftIm } = this.levels[depth]!;
    if (m === 1) {
      for (let q = 0; q < p; q++) {
        outRe[outOff + q] = inRe[inOff + q * stride]!;
        outIm[outOff + q] = inIm[inOff + q * stride]!;
      }
    } else {
      for (let q = 0; q < p; q++) this.step(depth + 1, inRe, inIm, inOff + q * stride, stride * p, outRe, outIm, outOff + q * m);
    }
    // out[outOff + q*m + k] holds the q-th sub-transform at k; combine into X[k + s*m], in place.
    const tRe = this.tRe;
    const tIm = this.tIm;
    for (let k = 0; k < m; k++) {
      for (let q = 0; q < p; q++) {
        const i = outOff + q * m + k;
        const c = twRe[q * m + k]!;
        const d = twIm[q * m + k]!;
        tRe[q] = outRe[i]! * c - outIm[i]! * d;
        tIm[q] = outRe[i]! * d + outIm[i]! * c;
      }
      if (p === 2) {
        outRe[outOff + k] = tRe[0]! + tRe[1]!;
        outIm[outOff + k] = tIm[0]! + tIm[1]!;
        outRe[outOff + m + k] = tRe[0]! - tRe[1]!;
        outIm[outOff + m + k] = tIm[0]! - tIm[1]!;
      } else if (p === 4) {
        const aRe = tRe[0]! + tRe[2]!;
        const aIm = tIm[0]! + tIm[2]!;
        const bRe = tRe[0]! - tRe[2]!;
        const bIm = tIm[0]! - tIm[2]!;
        const cRe = tRe[1]! + tRe[3]!;
        const cIm = tIm[1]! + tIm[3]!;
        // -i (t1 - t3)
        const dRe = tIm[1]! - tIm[3]!;
        const dIm = tRe[3]! - tRe[1]!;
        outRe[outOff + k] = aRe + cRe;
        outIm[outOff + k] = aIm + cIm;
        outRe[outOff + m + k] = bRe + dRe;
        outIm[outOff + m + k] = bIm + dIm;
        outRe[outOff + 2 * m + k] = aRe - cRe;
        outIm[outOff + 2 * m + k] = aIm - cIm;
        outRe[outOff + 3 * m + k] = bRe - dRe;
        outIm[outOff + 3 * m + k] = bIm - dIm;
      } else if (p === 5) {
        const a1Re = tRe[1]! + tRe[4]!;
        const a1Im = tIm[1]! + tIm[4]!;
        const a2Re = tRe[2]! + tRe[3]!;
        const a2Im = tIm[2]! + tIm[3]!;
        const b1Re = tRe[1]! - tRe[4]!;
        const b1Im = tIm[1]! - tIm[4]!;
        const b2Re = tRe[2]! - tRe[3]!;
        const b2Im = tIm[2]! - tIm[3]!;
        const r1Re = tRe[0]! + C1 * a1Re + C2 * a2Re;
        const r1Im = tIm[0]! + C1 * a1Im + C2 * a2Im;
        const r2Re = tRe[0]! + C2 * a1Re + C1 * a2Re;
        const r2Im = tIm[0]! + C2 * a1Im + C1 * a2Im;
        const i1Re = S1 * b1Re + S2 * b2Re;
        const i1Im = S1 * b1Im + S2 * b2Im;
        const i2Re = S2 * b1Re - S1 * b2Re;
        const i2Im = S2 * b1Im - S1 * b2Im;
        outRe[outOff + k] = tRe[0]! + a1Re + a2Re;
        outIm[outOff + k] = tIm[0]! + a1Im + a2Im;
        outRe[outOff + m + k] = r1Re + i1Im;
        outIm[outOff + m + k] = r1Im - i1Re;
        outRe[outOff + 4 * m + k] = r1Re - i1Im;
        outIm[outOff + 4 * m + k] = r1Im + i1Re;
        outRe[outOff + 2 * m + k] = r2Re + i2Im;
        outIm[outOff + 2 * m + k] = r2Im - i2Re;
        outRe[outOff + 3 * m + k] = r2Re - i2Im;
        outIm[outOff + 3 * m + k] = r2Im + i2Re;
      } else {
        for (let s = 0; s < p; s++) {
          let re = 0;
          let im = 0;
          for (let q = 0; q < p; q++) {
            const c = dftRe[q * p + s]!;
            const d = dftIm[q * p + s]!;
            re += tRe[q]! * c - tIm[q]! * d;
            im += tRe[q]! * d + tIm[q]! * c;
          }
          outRe[outOff + s * m + k] = re;
          outIm[outOff + s * m + k] = im;
        }
      }
    }
  }
}

/** Power spectrum |X[k]|² for k = 0..n/2 of a real frame of even length n, through an n/2-point complex FFT. */
export class RealPowerSpectrum {
  readonly bins: number;
  private readonly half: ComplexFft;
  private readonly zRe: Float64Array;
  private readonly zIm: Float64Array;
  private readonly fRe: Float64Array;
  private readonly fIm: Float64Array;
  private readonly wCos: Float64Array;
  private readonly wSin: Float64Array;

  constructor(readonly size: number) {
    if (size % 2 !== 0) throw new RangeError("the real FFT needs an even length");
    const h = size / 2;
    this.half = new ComplexFft(h);
    this.bins = h + 1;
    this.zRe = new Float64Array(h);
    this.zIm = new Float64Array(h);
    this.fRe = new Float64Array(h);
    this.fIm = new Float64Array(h);
    this.wCos = new Float64Array(h + 1);
    this.wSin = new Float64Array(h + 1);
    for (let k = 0; k <= h; k++) {
      this.wCos[k] = Math.cos((2 * Math.PI * k) / size);
      this.wSin[k] = -Math.sin((2 * Math.PI * k) / size);
    }
  }

  /** Writes the bins' power to `out[offset + k]`, rounded to float32 as the library stores them. */
  compute(frame: Float64Array, out: Float32Array, offset: number): void {
    const h = this.size / 2;
    for (let k = 0; k < h; k++) {
      this.zRe[k] = frame[2 * k]!;
      this.zIm[k] = frame[2 * k + 1]!;
    }
    this.half.transform(this.zRe, this.zIm, this.fRe, this.fIm);
    // X[k] = E[k] + W^k O[k], with E and O the transforms of the even and odd samples, recovered
    // from Z = E + iO by its conjugate symmetry.
    for (let k = 0; k <= h; k++) {
      const a = k % h;
      const b = (h - k) % h;
      const zr = this.fRe[a]!;
      const zi = this.fIm[a]!;
      const cr = this.fRe[b]!;
      const ci = -this.fIm[b]!;
      const er = (zr + cr) / 2;
      const ei = (zi + ci) / 2;
      const or = (zi - ci) / 2;
      const oi = -(zr - cr) / 2;
      const wr = this.wCos[k]!;
      const wi = this.wSin[k]!;
      const xr = er + (or * wr - oi * wi);
      const xi = ei + (or * wi + oi * wr);
      out[offset + k] = xr * xr + xi * xi;
    }
  }
}

export interface LogMelOptions {
  /** The analysis window, as long as a frame (the library's `feature_extractor.window`). */
  window: Float64Array;
  /** [mel bands][frequency bins] (the extractor's `config.mel_filters`). */
  melFilters: number[][];
  hopLength: number;
  /** The frames the model takes (3000 for 30 s); fewer are zero-padded, more are cut. */
  maxFrames: number;
}

/** Sparse rows of the mel filter bank: each Slaney filter covers a few dozen bins at most. */
function sparseFilters(filters: number[][]): { start: number; weights: Float32Array }[] {
  return filters.map((row) => {
    let start = row.findIndex((w) => w !== 0);
    if (start < 0) start = 0;
    let end = row.length;
    while (end > start && row[end - 1] === 0) end--;
    return { start, weights: Float32Array.from(row.slice(start, end)) };
  });
}

/** The [mel bands, maxFrames] features of `waveform`, row-major. */
export function logMelSpectrogram(waveform: Float32Array, options: LogMelOptions): Float32Array {
  const frameLength = options.window.length;
  const hop = options.hopLength;
  const pad = Math.floor(frameLength / 2);
  const w = waveform.length - 1;
  // Reflect padding, without the edge sample (numpy's "reflect").
  const at = (i: number) => {
    let j = i - pad;
    if (j < 0) j = -j;
    else if (j > w) j = 2 * w - j;
    return waveform[j]!;
  };
  const paddedLength = waveform.length + 2 * pad;
  const available = Math.floor(1 + Math.floor((paddedLength - frameLength) / hop));
  const frames = Math.min(available, options.maxFrames);
  const columns = options.maxFrames;

  const spectrum = new RealPowerSpectrum(frameLength);
  const bins = spectrum.bins;
  const power = new Float32Array(bins * frames);
  const frame = new Float64Array(frameLength);
  // The library pads a short window with zeros to 30 s before this: those frames' spectrum is zero
  // (as the transform would compute it) and is left so, a tenth of the transform's work on average.
  let lastSound = waveform.length - 1;
  while (lastSound >= 0 && waveform[lastSound] === 0) lastSound--;
  for (let t = 0; t < frames; t++) {
    const offset = t * hop;
    if (offset - pad > lastSound && offset + frameLength - pad <= waveform.length) continue;
    if (offset >= pad && offset + frameLength - pad <= waveform.length) {
      for (let j = 0; j < frameLength; j++) frame[j] = waveform[offset - pad + j]! * options.window[j]!;
    } else {
      for (let j = 0; j < frameLength; j++) frame[j] = at(offset + j) * options.window[j]!;
    }
    spectrum.compute(frame, power, t * bins);
  }

  const filters = sparseFilters(options.melFilters);
  const mels = filters.length;
  const out = new Float32Array(mels * columns).fill(1e-10);
  for (let t = 0; t < frames; t++) {
    const frameBins = t * bins;
    for (let m = 0; m < mels; m++) {
      const { start, weights } = filters[m]!;
      let sum = 0;
      for (let j = 0; j < weights.length; j++) sum += weights[j]! * power[frameBins + start + j]!;
      out[m * columns + t] = Math.max(1e-10, sum);
    }
  }
  // As the library does: the log and the normalisation cover the first frames x bands entries of
  // the row-major output, which is all of it unless the audio was shorter than maxFrames hops.
  const covered = Math.min(out.length, frames * mels);
  let logMax = -Infinity;
  for (let i = 0; i < covered; i++) out[i] = Math.log10(out[i]!);
  for (let i = 0; i < out.length; i++) if (out[i]! > logMax) logMax = out[i]!;
  const floor = logMax - 8;
  for (let i = 0; i < covered; i++) out[i] = (Math.max(out[i]!, floor) + 4) / 4;
  return out;
}

/** What a Whisper model's feature extractor computes with: its preprocessor_config.json, resolved. */
export interface WhisperFeatureConfig {
  /** The analysis window (periodic Hann over n_fft samples). */
  window: Float64Array;
  /** [mel bands][frequency bins]. */
  melFilters: number[][];
  hopLength: number;
  /** Samples in a window (30 s): shorter audio is zero-padded to it, longer is cut. */
  windowSamples: number;
  /** Frames the model takes (3000). */
  maxFrames: number;
}

export function framesOf(samples: number, config: WhisperFeatureConfig): number {
  return Math.min(Math.floor(samples / config.hopLength), config.maxFrames);
}

/**
 * A window's encoder input, [mel bands, frames] row-major, as WhisperFeatureExtractor computes it
 * (zero-padded or cut to 30 s, then the log-mel spectrogram), without the library: so that it can
 * run on a thread that has no model loaded.
 */
export function whisperFeatures(audio: Float32Array, config: WhisperFeatureConfig): Float32Array {
  let waveform = audio.subarray(0, config.windowSamples);
  if (waveform.length < config.windowSamples) {
    waveform = new Float32Array(config.windowSamples);
    waveform.set(audio);
  }
  return logMelSpectrogram(waveform, { window: config.window, melFilters: config.melFilters, hopLength: config.hopLength, maxFrames: framesOf(waveform.length, config) });
}

/** The shape of whisperFeatures' output, [mel bands, frames]. */
export function featureDims(config: WhisperFeatureConfig): [number, number] {
  return [config.melFilters.length, framesOf(config.windowSamples, config)];
}
