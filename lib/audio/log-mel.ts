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
const S3 = Math.sqrt(3) / 2;

/** One combining pass: every block of p sub-transforms of length m becomes one transform of p * m. */
interface Pass {
  p: number;
  m: number;
  /** Twiddles W_(p·m)^(q·k) at [q * m + k]. */
  twRe: Float64Array;
  twIm: Float64Array;
}

/**
 * Complex FFT of a length whose prime factors are 2, 3 or 5: mixed-radix Cooley-Tukey, decimation
 * in time, iterative (the input gathered in the decomposition's order, then one pass per radix, one
 * loop per radix): the recursive form of the same arithmetic took 2.3x the time for 200 points.
 */
export class ComplexFft {
  readonly size: number;
  /** Position j of the first pass's input holds input sample order[j]. */
  readonly order: Int32Array;
  /** Smallest sub-transforms first. */
  private readonly passes: Pass[] = [];

  constructor(size: number) {
    this.size = size;
    const radices: number[] = [];
    let n = size;
    for (const p of [4, 2, 3, 5]) {
      while (n % p === 0) {
        radices.push(p);
        n /= p;
      }
    }
    if (n !== 1 || size < 1) throw new RangeError(`FFT size ${size} has prime factors other than 2, 3 and 5`);
    // Splitting a transform of length L over stride s into p interleaved ones of length L / p puts
    // the q-th at offset q * L / p: the input index of each position, digit by digit.
    this.order = new Int32Array(size);
    let length = size;
    let stride = 1;
    let blocks = 1;
    for (const p of radices) {
      const sub = length / p;
      for (let b = blocks - 1; b >= 0; b--) {
        for (let q = p - 1; q >= 0; q--) {
          for (let j = 0; j < sub; j++) this.order[b * length + q * sub + j] = this.order[b * length]! + q * stride;
        }
      }
      length = sub;
      stride *= p;
      blocks *= p;
    }
    let m = 1;
    for (const p of radices.reverse()) {
      const pass: Pass = { p, m, twRe: new Float64Array(p * m), twIm: new Float64Array(p * m) };
      for (let q = 0; q < p; q++) {
        for (let k = 0; k < m; k++) {
          pass.twRe[q * m + k] = Math.cos((2 * Math.PI * q * k) / (p * m));
          pass.twIm[q * m + k] = -Math.sin((2 * Math.PI * q * k) / (p * m));
        }
      }
      this.passes.push(pass);
      m *= p;
    }
  }

  /** out = DFT(in); `in` and `out` must not overlap. */
  transform(inRe: Float64Array, inIm: Float64Array, outRe: Float64Array, outIm: Float64Array): void {
    for (let j = 0; j < this.size; j++) {
      outRe[j] = inRe[this.order[j]!]!;
      outIm[j] = inIm[this.order[j]!]!;
    }
    this.combine(outRe, outIm);
  }

  /** The transform of input already gathered into `order`, in place. */
  combine(re: Float64Array, im: Float64Array): void {
    for (const pass of this.passes) {
      twiddle(re, im, this.size, pass);
      if (pass.p === 4) radix4(re, im, this.size, pass.m);
      else if (pass.p === 2) radix2(re, im, this.size, pass.m);
      else if (pass.p === 5) radix5(re, im, this.size, pass.m);
      else radix3(re, im, this.size, pass.m);
    }
  }
}

// A pass multiplies the q-th sub-transform of each block by its twiddles, then combines the p of
// them, in place, into X[base + k + s * m].

function twiddle(re: Float64Array, im: Float64Array, n: number, { p, m, twRe, twIm }: Pass): void {
  // W^0 = 1: the first sub-transform and every sub-transform's first value stay as they are.
  for (let base = 0; base < n; base += p * m) {
    for (let q = 1; q < p; q++) {
      for (let j = q * m + 1; j < (q + 1) * m; j++) {
        const i = base + j;
        const c = twRe[j]!;
        const d = twIm[j]!;
        const r = re[i]!;
        re[i] = r * c - im[i]! * d;
        im[i] = r * d + im[i]! * c;
      }
    }
  }
}

function radix2(re: Float64Array, im: Float64Array, n: number, m: number): void {
  for (let base = 0; base < n; base += 2 * m) {
    for (let k = 0; k < m; k++) {
      const i0 = base + k;
      const i1 = i0 + m;
      const t1r = re[i1]!;
      const t1i = im[i1]!;
      const t0r = re[i0]!;
      const t0i = im[i0]!;
      re[i0] = t0r + t1r;
      im[i0] = t0i + t1i;
      re[i1] = t0r - t1r;
      im[i1] = t0i - t1i;
    }
  }
}

function radix3(re: Float64Array, im: Float64Array, n: number, m: number): void {
  for (let base = 0; base < n; base += 3 * m) {
    for (let k = 0; k < m; k++) {
      const i0 = base + k;
      const i1 = i0 + m;
      const i2 = i1 + m;
      const t1r = re[i1]!;
      const t1i = im[i1]!;
      const t2r = re[i2]!;
      const t2i = im[i2]!;
      const t0r = re[i0]!;
      const t0i = im[i0]!;
      const ar = t1r + t2r;
      const ai = t1i + t2i;
      // -i sin(2 pi / 3) (t1 - t2)
      const br = S3 * (t1i - t2i);
      const bi = -S3 * (t1r - t2r);
      re[i0] = t0r + ar;
      im[i0] = t0i + ai;
      re[i1] = t0r - ar / 2 + br;
      im[i1] = t0i - ai / 2 + bi;
      re[i2] = t0r - ar / 2 - br;
      im[i2] = t0i - ai / 2 - bi;
    }
  }
}

function radix4(re: Float64Array, im: Float64Array, n: number, m: number): void {
  for (let base = 0; base < n; base += 4 * m) {
    for (let k = 0; k < m; k++) {
      const i0 = base + k;
      const i1 = i0 + m;
      const i2 = i1 + m;
      const i3 = i2 + m;
      const t1r = re[i1]!;
      const t1i = im[i1]!;
      const t2r = re[i2]!;
      const t2i = im[i2]!;
      const t3r = re[i3]!;
      const t3i = im[i3]!;
      const t0r = re[i0]!;
      const t0i = im[i0]!;
      const aRe = t0r + t2r;
      const aIm = t0i + t2i;
      const bRe = t0r - t2r;
      const bIm = t0i - t2i;
      const cRe = t1r + t3r;
      const cIm = t1i + t3i;
      // -i (t1 - t3)
      const dRe = t1i - t3i;
      const dIm = t3r - t1r;
      re[i0] = aRe + cRe;
      im[i0] = aIm + cIm;
      re[i1] = bRe + dRe;
      im[i1] = bIm + dIm;
      re[i2] = aRe - cRe;
      im[i2] = aIm - cIm;
      re[i3] = bRe - dRe;
      im[i3] = bIm - dIm;
    }
  }
}

function radix5(re: Float64Array, im: Float64Array, n: number, m: number): void {
  for (let base = 0; base < n; base += 5 * m) {
    for (let k = 0; k < m; k++) {
      const i0 = base + k;
      const i1 = i0 + m;
      const i2 = i1 + m;
      const i3 = i2 + m;
      const i4 = i3 + m;
      const t1r = re[i1]!;
      const t1i = im[i1]!;
      const t2r = re[i2]!;
      const t2i = im[i2]!;
      const t3r = re[i3]!;
      const t3i = im[i3]!;
      const t4r = re[i4]!;
      const t4i = im[i4]!;
      const t0r = re[i0]!;
      const t0i = im[i0]!;
      const a1Re = t1r + t4r;
      const a1Im = t1i + t4i;
      const a2Re = t2r + t3r;
      const a2Im = t2i + t3i;
      const b1Re = t1r - t4r;
      const b1Im = t1i - t4i;
      const b2Re = t2r - t3r;
      const b2Im = t2i - t3i;
      const r1Re = t0r + C1 * a1Re + C2 * a2Re;
      const r1Im = t0i + C1 * a1Im + C2 * a2Im;
      const r2Re = t0r + C2 * a1Re + C1 * a2Re;
      const r2Im = t0i + C2 * a1Im + C1 * a2Im;
      const i1Re = S1 * b1Re + S2 * b2Re;
      const i1Im = S1 * b1Im + S2 * b2Im;
      const i2Re = S2 * b1Re - S1 * b2Re;
      const i2Im = S2 * b1Im - S1 * b2Im;
      re[i0] = t0r + a1Re + a2Re;
      im[i0] = t0i + a1Im + a2Im;
      re[i1] = r1Re + i1Im;
      im[i1] = r1Im - i1Re;
      re[i4] = r1Re - i1Im;
      im[i4] = r1Im + i1Re;
      re[i2] = r2Re + i2Im;
      im[i2] = r2Im - i2Re;
      re[i3] = r2Re - i2Im;
      im[i3] = r2Im + i2Re;
    }
  }
}

/** Power spectrum |X[k]|² for k = 0..n/2 of a real frame of even length n, through an n/2-point complex FFT. */
export class RealPowerSpectrum {
  readonly bins: number;
  private readonly half: ComplexFft;
  private readonly fRe: Float64Array;
  private readonly fIm: Float64Array;
  private readonly wCos: Float64Array;
  private readonly wSin: Float64Array;

  constructor(readonly size: number) {
    if (size % 2 !== 0) throw new RangeError("the real FFT needs an even length");
    const h = size / 2;
    this.half = new ComplexFft(h);
    this.bins = h + 1;
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
    const order = this.half.order;
    for (let j = 0; j < order.length; j++) {
      this.fRe[j] = frame[2 * order[j]!]!;
      this.fIm[j] = frame[2 * order[j]! + 1]!;
    }
    this.power(out, offset);
  }

  /**
   * compute() of waveform[start + j] * window[j] for j < size (inside the waveform), read straight
   * into the transform's order: a 30 s window's frames spent a third of their time being copied.
   */
  computeWindowed(waveform: Float32Array, start: number, window: Float64Array, out: Float32Array, offset: number): void {
    const order = this.half.order;
    for (let j = 0; j < order.length; j++) {
      const i = 2 * order[j]!;
      this.fRe[j] = waveform[start + i]! * window[i]!;
      this.fIm[j] = waveform[start + i + 1]! * window[i + 1]!;
    }
    this.power(out, offset);
  }

  private power(out: Float32Array, offset: number): void {
    const h = this.size / 2;
    this.half.combine(this.fRe, this.fIm);
    // X[k] = E[k] + W^k O[k], with E and O the transforms of the even and odd samples, recovered
    // from Z = E + iO by its conjugate symmetry.
    for (let k = 0; k <= h; k++) {
      const a = k === h ? 0 : k;
      const b = k === 0 ? 0 : h - k;
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
      spectrum.computeWindowed(waveform, offset - pad, options.window, power, t * bins);
    } else {
      for (let j = 0; j < frameLength; j++) frame[j] = at(offset + j) * options.window[j]!;
      spectrum.compute(frame, power, t * bins);
    }
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
