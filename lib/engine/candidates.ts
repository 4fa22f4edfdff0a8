/**
 * Whisper's choices among several decodes of one window (decoding.py): the ranker that picks one,
 * and a beam search's step over its beams' next-token log-probabilities. Pure, so the batch decoder
 * (batch-decoder.ts) keeps only where the rows and their caches go.
 */

/** A decode of a window: its tokens after the initial ones, their log-probabilities, and what its checks and words read. */
export interface Decode {
  generated: number[];
  logprobs: number[];
  /** The alignment heads' attention at each position, for word timestamps; null when not asked. */
  attention: Float32Array[] | null;
  noSpeechProb: number;
  temperature: number;
}

const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);

/**
 * Whisper's MaximumLikelihoodRanker without a length penalty: the highest sum of log-probabilities
 * (end-of-text's included) over the tokens before end-of-text; the first of equals.
 */
export function rankCandidates(candidates: readonly Pick<Decode, "generated" | "logprobs">[], eos: number): number {
  let best = 0;
  let bestScore = -Infinity;
  candidates.forEach((c, i) => {
    const length = c.generated.at(-1) === eos ? c.generated.length - 1 : c.generated.length;
    const score = sum(c.logprobs) / Math.max(1, length);
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  });
  return best;
}

/** A decode continued by one token (copies: the row it came from may go on to another sequence). */
export function continued(decode: Decode, token: number, logprob: number): Decode {
  return {
    generated: [...decode.generated, token],
    logprobs: [...decode.logprobs, logprob],
    attention: decode.attention ? [...decode.attention] : null,
    noSpeechProb: decode.noSpeechProb,
    temperature: decode.temperature,
  };
}

/** Closes a beam the search did not finish, as Whisper does: end-of-text appended, its log-probability not counted. */
function closed(decode: Decode, eos: number): Decode {
  return { ...decode, generated: [...decode.generated, eos], logprobs: [...decode.logprobs, 0] };
}

/** The `n` largest entries' indices, largest first; of equals, the lower index first. */
export function topTokens(logits: Float32Array, n: number): number[] {
  const ids: number[] = [];
  const values: number[] = [];
  for (let j = 0; j < logits.length; j++) {
    const v = logits[j]!;
    if (ids.length === n && !(v > values[n - 1]!)) continue;
    if (ids.length < n) {
      ids.push(j);
      values.push(v);
    } else {
      ids[n - 1] = j;
      values[n - 1] = v;
    }
    for (let at = ids.length - 1; at > 0 && values[at - 1]! < v; at--) {
      [ids[at - 1], ids[at]] = [ids[at]!, ids[at - 1]!];
      [values[at - 1], values[at]] = [values[at]!, values[at - 1]!];
    }
  }
  return ids;
}

export interface Beam {
  decode: Pick<Decode, "generated" | "logprobs">;
  /** Its next-token logits, Whisper's rules applied. */
  logits: Float32Array;
  /** log(sum(exp(logits))): a token's log-probability is its logit less this. */
  logNorm: number;
}

export interface Continuation {
  /** The beam it extends (an index into the step's beams). */
  source: number;
  token: number;
  logprob: number;
}

/**
 * One step of Whisper's BeamSearchDecoder over one window's beams: each beam's `beams.length + 1`
 * likeliest next tokens, scored by the summed log-probability of the sequence they make (a sequence
 * reached from two beams counted once, as the later one); in order of score, those that end the
 * text until as many go on as there are beams. Returns the continuations that go on, best first, and
 * those that end the text before the last of them, best first.
 */
export function beamStep(beams: readonly Beam[], eos: number): { next: Continuation[]; ended: Continuation[] } {
  const size = beams.length;
  const scored = new Map<string, Continuation & { score: number }>();
  beams.forEach((beam, source) => {
    const total = sum(beam.decode.logprobs);
    const prefix = beam.decode.generated.join(",");
    for (const token of topTokens(beam.logits, size + 1)) {
      const logprob = beam.logits[token]! - beam.logNorm;
      scored.set(`${prefix}:${token}`, { source, token, logprob, score: total + logprob });
    }
  });
  // Stable, as Python's sorted: of equal scores, the first scored first.
  const ranked = [...scored.values()].sort((a, b) => (a.score === b.score ? 0 : b.score > a.score ? 1 : -1));
  const next: Continuation[] = [];
  const ended: Continuation[] = [];
  for (const { source, token, logprob } of ranked) {
    if (next.length === size) break;
    (token === eos ? ended : next).push({ source, token, logprob });
  }
  return { next, ended };
}

/** The unfinished decodes that make up a search's finished ones to `size`, most likely first. */
export function topUp(finished: Decode[], unfinished: readonly Decode[], size: number, eos: number): void {
  for (const decode of [...unfinished].sort((a, b) => sum(b.logprobs) - sum(a.logprobs))) {
    if (finished.length >= size) break;
    finished.push(closed(decode, eos));
  }
}
