import { LogitsProcessor, LogitsProcessorList, type Tensor, WhisperTimeStampLogitsProcessor } from "@huggingface/transformers";

/**
 * WhisperTimeStampLogitsProcessor with the same decisions for a fraction of the work. The library's
 * version runs a log_softmax over the whole vocabulary (51865 entries, with a callback per entry and
 * two fresh arrays) on every step only to ask whether the timestamp tokens together outweigh the best
 * text token. That comparison does not depend on the softmax normaliser: logsumexp(timestamp logits)
 * against max(text logits). This computes it directly (one pass for the maxima, exp over the 1501
 * timestamp logits only). When the two sides are within 1e-4 (the library's float32 rounding of the
 * log-probabilities is below ~4e-6 there), or a logit is NaN or +inf, it defers to the library's
 * own processor, so the result is the library's in every case.
 */
export class LeanTimestampLogitsProcessor extends LogitsProcessor {
  private readonly reference: WhisperTimeStampLogitsProcessor;
  /** Steps decided by the library's processor because the fast comparison was too close to call. */
  deferred = 0;

  constructor(reference: WhisperTimeStampLogitsProcessor) {
    super();
    this.reference = reference;
  }

  /** The seek loop in WhisperForConditionalGeneration resets `begin_index` on every processor that has one. */
  get begin_index(): number {
    return (this.reference as unknown as { begin_index: number }).begin_index;
  }

  set begin_index(value: number) {
    (this.reference as unknown as { begin_index: number }).begin_index = value;
  }

  override _call(input_ids: bigint[][], logits: Tensor): Tensor {
    const ref = this.reference as unknown as { eos_token_id: number; no_timestamps_token_id: number; timestamp_begin: number };
    const eos = ref.eos_token_id;
    const tsBegin = ref.timestamp_begin;
    const begin = this.begin_index;
    const decisions: Float32Array[] = [];
    for (let i = 0; i < input_ids.length; ++i) {
      const ids = input_ids[i]!;
      const data = (logits as unknown as Tensor[])[i]!.data as Float32Array;
      data[ref.no_timestamps_token_id] = -Infinity;
      if (ids.length === begin) {
        data.fill(-Infinity, 0, tsBegin);
        continue;
      }
      // Timestamps come in pairs, except directly before end-of-text (same masks as the library).
      const seqLength = ids.slice(begin).length;
      const lastWasTimestamp = seqLength >= 1 && ids[ids.length - 1]! >= tsBegin;
      const penultimateWasTimestamp = seqLength < 2 || ids[ids.length - 2]! >= tsBegin;
      if (lastWasTimestamp) {
        if (penultimateWasTimestamp) data.fill(-Infinity, tsBegin);
        else data.fill(-Infinity, 0, eos);
      }

      // Branch-free maxima; the running sum only turns NaN if a logit is NaN (or +inf meets -inf,
      // and +inf is sent to the library anyway).
      let maxText = -Infinity;
      let maxTs = -Infinity;
      let sum = 0;
      for (let j = 0; j < tsBegin; j++) {
        const v = data[j]!;
        sum += v;
        maxText = v > maxText ? v : maxText;
      }
      for (let j = tsBegin; j < data.length; j++) {
        const v = data[j]!;
        sum += v;
        maxTs = v > maxTs ? v : maxTs;
      }
      if (sum !== sum || maxText === Infinity || maxTs === Infinity) return this.reference._call(input_ids, logits);
      // All timestamps masked: their log-probability is -inf (or NaN), never above the text's.
      if (maxTs === -Infinity) continue;
      // All text masked: filling it again changes nothing.
      if (maxText === -Infinity) continue;
      let mass = 0;
      for (let j = tsBegin; j < data.length; j++) mass += Math.exp(data[j]! - maxTs);
      const margin = 1e-4 + 2 ** -22 * Math.abs(maxText - Math.max(maxText, maxTs));
      const lead = maxTs + Math.log(mass) - maxText;
      if (lead > margin) decisions.push(data);
      else if (lead >= -margin) {
        this.deferred++;
        return this.reference._call(input_ids, logits);
      }
    }
    for (const data of decisions) data.fill(-Infinity, 0, tsBegin);
    return logits;
  }
}

/** A processor list that swaps the library's timestamp processor for the lean one as generate() adds it. */
export class LeanLogitsProcessorList extends LogitsProcessorList {
  override push(item: LogitsProcessor): void {
    super.push(item instanceof WhisperTimeStampLogitsProcessor ? new LeanTimestampLogitsProcessor(item) : item);
  }
}
