import * as ort from "onnxruntime-node";
import { Graph, modelBytes } from "../onnx/graph.ts";
import { Ops } from "../onnx/ops.ts";
import { type Pick, WhisperRules } from "./whisper-rules.ts";

/**
 * Greedy decoding's choice for rows whose logits Whisper's rules have masked, in onnxruntime: each
 * row's first maximum and its log-probability.
 *
 * Every row of every step needs both, and in JavaScript they were a pass over the vocabulary with an
 * exp per entry: 0.5-1.3 ms a row on this machine, as much as the row's share of the decoder call
 * itself. onnxruntime's vectorised Exp and reductions, on the same intra-op threads, take about
 * 0.15 ms a row, the call included. ArgMax keeps the first maximum, as the library's sampler does;
 * the log-probability of the maximum is -log(sum(exp(logits - max))), in float32 (within 1e-6 of
 * the double-precision sum).
 */
export class GreedyPicker {
  private scratch = new Float32Array(0);

  private constructor(private readonly session: ort.InferenceSession) {}

  static async create(options: Record<string, unknown>): Promise<GreedyPicker> {
    const g = new Graph("greedy_picker");
    const o = new Ops(g);
    const logits = g.input("logits", "float", ["rows", "vocab"]);
    g.op("ArgMax", [logits], { axis: { i: 1 }, keepdims: { i: 0 }, select_last_index: { i: 0 } }, "token");
    const max = o.reduce("ReduceMax", logits, [1], true);
    const sum = o.reduce("ReduceSum", g.op("Exp", [o.sub(logits, max)]), [1], false);
    g.op("Log", [sum], {}, "log_sum");
    g.output("token", "int64", ["rows"]);
    g.output("log_sum", "float", ["rows"]);
    const bytes = modelBytes(g, { producer: "slotscribe", opset: 17 });
    return new GreedyPicker(await ort.InferenceSession.create(bytes, options as ort.InferenceSession.SessionOptions));
  }

  /**
   * The picks for rows of masked logits, one call a row: a row's pick is then a function of its
   * logits alone, whatever it is batched with. In one call over the whole group some rows came out
   * 1e-9 apart in log-probability, so a row decoded in a batch no longer equalled its decoding alone:
   * where a row starts in memory decides how the vectorised sum splits it, and Log takes a vectorised
   * path for several sums and a scalar one for one. Each row is copied into the same buffer first.
   * (Padding rows to whole cache lines and taking the log here made one call exact, but no faster.)
   * A row whose sum is not finite (a NaN among its logits) is picked in JavaScript, which skips NaNs
   * as the library does.
   */
  async pick(rows: readonly Float32Array[]): Promise<Pick[]> {
    const picks: Pick[] = [];
    for (const row of rows) {
      if (this.scratch.length !== row.length) this.scratch = new Float32Array(row.length);
      this.scratch.set(row);
      const out = await this.session.run({ logits: new ort.Tensor("float32", this.scratch, [1, row.length]) });
      const logSum = (out.log_sum!.data as Float32Array)[0]!;
      picks.push(Number.isFinite(logSum) ? { token: Number((out.token!.data as BigInt64Array)[0]), logprob: -logSum } : WhisperRules.greedy(row));
    }
    return picks;
  }
}
