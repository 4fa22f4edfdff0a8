import { WhisperTimeStampLogitsProcessor } from "@huggingface/transformers";

/** The generation_config.json fields Whisper's decoding rules read. */
export interface WhisperGenerationConfig {
  decoder_start_token_id: number;
  eos_token_id: number | number[];
  no_timestamps_token_id: number;
  suppress_tokens?: number[] | null;
  begin_suppress_tokens?: number[] | null;
  is_multilingual?: boolean;
  lang_to_id?: Record<string, number>;
  task_to_id?: Record<string, number>;
  max_length?: number;
  alignment_heads?: [number, number][];
}

export interface Pick {
  token: number;
  /** log-probability of the token under the processed distribution. */
  logprob: number;
}

/**
 * Whisper's decoding rules for one row, as transformers.js's generate() applies them for the ASR
 * pipeline with timestamps (so that at batch 1 the engine returns the stock pipeline's tokens):
 * suppress_tokens always; begin_suppress_tokens and "timestamps only" on the first generated token;
 * <|notimestamps|> never; timestamps in pairs except right before end-of-text; and a timestamp
 * whenever the timestamps together are more likely than the best text token. One of openai's rules
 * come first, which generate() lacks (whisper.cpp and faster-whisper keep them): timestamps never go
 * back, nor close a segment at its own start, so segments come out in order; and the first timestamp
 * is at most 1.0 s (max_initial_timestamp; generate() reads the option but checks it where it can
 * never apply). Where they do not bind, the tokens are the stock pipeline's.
 *
 * The last rule is decided on logits rather than log-probabilities (the softmax normaliser cancels:
 * logsumexp(timestamp logits) against max(text logits)), which avoids a log_softmax over the whole
 * vocabulary each step. When the two sides are within float32 rounding of each other, the library's
 * own processor decides, so the result is the library's in every case.
 */
/**
 * openai's max_initial_timestamp (1.0 s) in timestamp steps of 0.02 s. Not the configs'
 * max_initial_timestamp_index (1 in the hub's generation_config.json), which would pin every first
 * segment to 0.00-0.02 s; openai, faster-whisper and whisper.cpp all use 1.0 s.
 */
const MAX_INITIAL_TIMESTAMP_INDEX = 50;

export class WhisperRules {
  readonly eos: number;
  readonly sot: number;
  readonly noTimestamps: number;
  readonly timestampBegin: number;
  readonly maxLength: number;
  /**
   * openai's sample_len (n_text_ctx // 2): the tokens one decode samples at most, besides the context
   * limit. A decode that loops (Whisper on music or noise) stops halfway through the context, at every
   * temperature it falls back to; generate() would run it to max_length.
   */
  readonly sampleLength: number;
  private readonly suppress: Int32Array;
  private readonly beginSuppress: Int32Array;
  private readonly reference: WhisperTimeStampLogitsProcessor;
  /** Steps decided by the library's processor because the fast comparison was too close to call. */
  deferred = 0;

  constructor(config: WhisperGenerationConfig) {
    this.eos = Array.isArray(config.eos_token_id) ? config.eos_token_id[0]! : config.eos_token_id;
    this.sot = config.decoder_start_token_id;
    this.noTimestamps = config.no_timestamps_token_id;
    this.timestampBegin = this.noTimestamps + 1;
    this.maxLength = config.max_length ?? 448;
    this.sampleLength = Math.floor(this.maxLength / 2);
    this.suppress = Int32Array.from(config.suppress_tokens ?? []);
    this.beginSuppress = Int32Array.from(config.begin_suppress_tokens ?? []);
    this.reference = new WhisperTimeStampLogitsProcessor(config as never, []);
  }

  /**
   * Masks `logits` (one row's vocabulary, modified in place) for the next token after `generated`,
   * the tokens this row has produced after its initial tokens.
   */
  apply(logits: Float32Array, generated: readonly number[]): void {
    for (const id of this.suppress) logits[id] = -Infinity;
    logits[this.noTimestamps] = -Infinity;
    const n = generated.length;
    const tsBegin = this.timestampBegin;
    if (n === 0) {
      for (const id of this.beginSuppress) logits[id] = -Infinity;
      logits.fill(-Infinity, 0, tsBegin);
      logits.fill(-Infinity, tsBegin + MAX_INITIAL_TIMESTAMP_INDEX + 1);
      return;
    }
    const lastWasTimestamp = generated[n - 1]! >= tsBegin;
    const penultimateWasTimestamp = n < 2 || generated[n - 2]! >= tsBegin;
    this.forbidGoingBack(logits, generated, lastWasTimestamp && !penultimateWasTimestamp);
    if (lastWasTimestamp) {
      if (penultimateWasTimestamp) logits.fill(-Infinity, tsBegin);
      else logits.fill(-Infinity, 0, this.eos);
    }

    let maxText = -Infinity;
    let maxTs = -Infinity;
    let sum = 0;
    for (let j = 0; j < tsBegin; j++) {
      const v = logits[j]!;
      sum += v;
      maxText = v > maxText ? v : maxText;
    }
    for (let j = tsBegin; j < logits.length; j++) {
      const v = logits[j]!;
      sum += v;
      maxTs = v > maxTs ? v : maxTs;
    }
    // NaN or +inf anywhere: the library's arithmetic decides.
    if (sum !== sum || maxText === Infinity || maxTs === Infinity) return this.defer(logits, generated);
    if (maxTs === -Infinity || maxText === -Infinity) return;
    let mass = 0;
    for (let j = tsBegin; j < logits.length; j++) mass += Math.exp(logits[j]! - maxTs);
    const margin = 1e-4 + 2 ** -22 * Math.abs(maxText - Math.max(maxText, maxTs));
    const lead = maxTs + Math.log(mass) - maxText;
    if (lead > margin) logits.fill(-Infinity, 0, tsBegin);
    else if (lead >= -margin) this.defer(logits, generated);
  }

  /**
   * openai's monotonic rule: no timestamp before the last one; and none equal to it either, except
   * right after a segment's closing timestamp, where the next segment may open at the same time.
   */
  private forbidGoingBack(logits: Float32Array, generated: readonly number[], justClosed: boolean): void {
    for (let i = generated.length - 1; i >= 0; i--) {
      const token = generated[i]!;
      if (token < this.timestampBegin) continue;
      logits.fill(-Infinity, this.timestampBegin, justClosed ? token : token + 1);
      return;
    }
  }

  private defer(logits: Float32Array, generated: readonly number[]): void {
    this.deferred++;
    const ref = this.reference as unknown as { begin_index: number; _call(ids: bigint[][], logits: unknown): unknown };
    // The library counts from the sequence start; only the part after begin_index matters to it.
    ref.begin_index = 1;
    ref._call([[0n, ...generated.map(BigInt)]], [{ data: logits }]);
  }

  /** Greedy choice: the first maximum, as the library's sampler takes it, with its log-probability. */
  static greedy(logits: Float32Array): Pick {
    let best = 0;
    let max = -Infinity;
    for (let j = 0; j < logits.length; j++) {
      if (logits[j]! > max) {
        max = logits[j]!;
        best = j;
      }
    }
    return { token: best, logprob: -Math.log(sumExp(logits, max, 1)) };
  }

  /**
   * Sampling at a temperature: a token drawn from softmax(logits / temperature) with `random` (a
   * seeded generator, so a rerun draws the same), and its log-probability under the untempered
   * distribution, as Whisper reports it.
   */
  static sample(logits: Float32Array, temperature: number, random: () => number): Pick {
    if (temperature <= 0) return WhisperRules.greedy(logits);
    let max = -Infinity;
    for (let j = 0; j < logits.length; j++) if (logits[j]! > max) max = logits[j]!;
    const floor = max - 30 * temperature;
    const tempered = sumExp(logits, max, temperature);
    let target = random() * tempered;
    let token = -1;
    for (let j = 0; j < logits.length; j++) {
      const v = logits[j]!;
      if (v <= floor) continue;
      token = j;
      target -= Math.exp((v - max) / temperature);
      if (target <= 0) break;
    }
    const plain = temperature === 1 ? tempered : sumExp(logits, max, 1);
    return { token, logprob: logits[token]! - max - Math.log(plain) };
  }

  /** Whether a decode of `generated` tokens after `initial` ones has reached the length limit. */
  atLimit(initial: number, generated: number): boolean {
    return generated >= this.sampleLength || initial + generated >= this.maxLength;
  }

  isTimestamp(token: number): boolean {
    return token >= this.timestampBegin;
  }
}

const POW2_BIAS = 1100;
/** 2^k for k from -1100 to 0, past where doubles reach zero: exp2's integer part. */
const POW2 = Float64Array.from({ length: POW2_BIAS + 1 }, (_, i) => 2 ** (i - POW2_BIAS));
/** Taylor coefficients of 2^f = e^(f ln 2), f in [-0.5, 0.5]: relative error below 1e-8. */
const [E0, E1, E2, E3, E4, E5, E6, E7] = [1, 1, 2, 6, 24, 120, 720, 5040].map((factorial, i) => Math.LN2 ** i / factorial) as [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
];

/**
 * Sum of exp((logits[j] - max) / temperature) over the whole vocabulary, `max` being the largest
 * logit. Every decoder step of every row needs it (the token's log-probability), and Math.exp was
 * half of a step's JavaScript: 0.48 ms per row for 51,865 logits, most of them within 30 of the
 * maximum on generated weights. exp2 by a power-of-two table and a polynomial takes 0.19 ms, within
 * 1e-8 of Math.exp (float32 logits carry 6e-8).
 */
export function sumExp(logits: Float32Array, max: number, temperature: number): number {
  const scale = Math.LOG2E / temperature;
  let sum = 0;
  for (let j = 0; j < logits.length; j++) {
    // -Infinity (masked) and anything 1100 octaves down count as 0, as exp underflows to.
    let t = (logits[j]! - max) * scale;
    if (!(t > -POW2_BIAS)) t = -POW2_BIAS;
    // Truncation of t - 0.5 (t <= 0) rounds to nearest: f is within half an octave.
    const k = (t - 0.5) | 0;
    const f = t - k;
    sum += POW2[k + POW2_BIAS]! * (E0 + f * (E1 + f * (E2 + f * (E3 + f * (E4 + f * (E5 + f * (E6 + f * E7)))))));
  }
  return sum;
}
