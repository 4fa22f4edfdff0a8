import { floatTensor, Graph } from "../../lib/onnx/graph.ts";
import { Ops } from "../../lib/onnx/ops.ts";
import type { SynthPart } from "../audio/synth.ts";
import { buildTokenLayout, type TokenLayout } from "./tokenizer.ts";
import { crossAttentionCache, declareDecoderOutputs, decoderInterface, voicedEnd, voicedFlags, type WhisperDims } from "./whisper-graph.ts";

/**
 * The micro model: a designed Whisper whose transcript is a known function of the audio. Each tone
 * between silences in a 30 s window yields one segment naming the pure tone that dominates it, from
 * its first to its last voiced instant; silence yields nothing. Tests use it to check decoding, windowing, stitching and
 * timestamps end to end through the unmodified transformers.js pipeline.
 */
export const MICRO_TONES = [
  { word: "alpha", hz: 300 },
  { word: "bravo", hz: 600 },
  { word: "charlie", hz: 1000 },
  { word: "delta", hz: 1600 },
  { word: "echo", hz: 2500 },
] as const;

/**
 * The tone greedy decoding stutters on, as Whisper loops on some audio: after its word the model
 * prefers the word again (logit 30) to closing the segment (29), so a greedy decode repeats it until
 * the length limit, fails Whisper's compression-ratio check, and a hotter decode, which samples the
 * closing timestamp within a few words, recovers. Kept apart from MICRO_TONES, which say each word once.
 */
export const STUTTER_TONE = { word: "foxtrot", hz: 4000 } as const;
const ALL_TONES = [...MICRO_TONES, STUTTER_TONE];

export type MicroWord = (typeof MICRO_TONES)[number]["word"] | typeof STUTTER_TONE.word;

/** A word as the micro model writes it after a prompt: capitalised, as a prompt's style carries over in Whisper. */
function promptedWord(word: MicroWord): string {
  return word[0]!.toUpperCase() + word.slice(1);
}

export function microTokenLayout(): TokenLayout {
  return buildTokenLayout([...ALL_TONES.map((t) => t.word), ...ALL_TONES.map((t) => promptedWord(t.word))], ["en"]);
}

const D_MODEL = 81;
const MEL_BINS = 80;

export function microDims(layout: TokenLayout): WhisperDims {
  return {
    d_model: D_MODEL,
    encoder_layers: 1,
    encoder_attention_heads: 1,
    encoder_ffn_dim: D_MODEL,
    decoder_layers: 1,
    decoder_attention_heads: 1,
    decoder_ffn_dim: D_MODEL,
    vocab_size: layout.vocabSize,
    num_mel_bins: MEL_BINS,
    max_source_positions: 1500,
    max_target_positions: 448,
  };
}

/** Whisper's Slaney mel scale over 0..8 kHz: the filter whose centre is nearest to `hz`. */
function melBinOf(hz: number, bins = MEL_BINS): number {
  const mel = (f: number) => (f < 1000 ? (3 * f) / 200 : 15 + (Math.log(f / 1000) * 27) / Math.log(6.4));
  const step = mel(8000) / (bins + 1);
  return Math.round(mel(hz) / step) - 1;
}

/** Encoder: per position, a voiced flag and the loudest value of each mel band over its two frames. */
export function buildMicroEncoder(): Graph {
  const g = new Graph("micro_encoder");
  const o = new Ops(g);
  const features = g.input("input_features", "float", ["batch_size", MEL_BINS, 3000]);
  const pooled = o.reduce("ReduceMax", o.reshape(features, [0, MEL_BINS, 1500, 2]), [3], false);
  g.op("Concat", [voicedFlags(o, features), o.transpose(pooled, [0, 2, 1])], { axis: { i: 2 } }, "last_hidden_state");
  g.output("last_hidden_state", "float", ["batch_size", 1500, D_MODEL]);
  return g;
}

/**
 * Decoder: a state machine over what the sequence already holds, read back from its own
 * self-attention cache, so the output is right only if the caller threads the KV cache correctly.
 * Each cached key row records [is <|notimestamps|>, is text, is timestamp, is <|startoftranscript|>,
 * is <|startofprev|>]; their sums say what to emit next. The window's voiced positions fall into runs
 * (a tone between silences); run k is said as one segment naming the tone that dominates it:
 *   with timestamps:    <|start 1|> word 1 <|end 1|> <|start 2|> word 2 <|end 2|> ... <|endoftext|>
 *   without timestamps: word 1 word 2 ... <|endoftext|>
 * Text counts only after <|startoftranscript|>: a prompt (<|startofprev|> and its words before it)
 * does not count as said, but it shows: after a prompt the words come capitalised ("Alpha"), so a
 * transcript says whether the prompt reached the decoder's context.
 *
 * `crossAttentions` adds the `_timestamped` exports' cross_attentions.0, a softmax peaked evenly
 * over the positions the next token is about: its run's for a word, the unvoiced ones for a timestamp
 * or the end (uniform when there are none). So Whisper's alignment puts each word on its tone and
 * the end of the last one where its tone stops.
 */
export function buildMicroDecoder(layout: TokenLayout, crossAttentions = false): Graph {
  const io = decoderInterface(1, 1, D_MODEL, D_MODEL);
  const { g, o } = io;
  const V = layout.vocabSize;

  crossAttentionCache(io, (branch) => {
    const k = new Ops(branch).unsqueeze(io.encoderStates, [1]);
    return [{ key: k, value: branch.op("Identity", [k]) }];
  });
  const encoder = o.squeeze("present.0.encoder.key", [1]);

  const ids = io.inputIds;
  const flag = (op: string, value: number) => o.unsqueeze(o.cast(g.op(op, [ids, o.scalarI64(value)]), "float"), [2]);
  const isText = flag("Less", layout.eos);
  const FEATURES = 5;
  const rowFeatures = g.op(
    "Concat",
    [flag("Equal", layout.noTimestamps), isText, flag("GreaterOrEqual", layout.timestampBegin), flag("Equal", layout.sot), flag("Equal", layout.startOfPrev)],
    { axis: { i: 2 } },
  );
  const toCache = new Float32Array(FEATURES * D_MODEL);
  for (let i = 0; i < FEATURES; i++) toCache[i * D_MODEL + i] = 1;
  const newRows = o.unsqueeze(o.matmul(rowFeatures, g.init("state_rows", floatTensor([FEATURES, D_MODEL], toCache))), [1]);
  const key = g.op("Concat", [io.pastDecoder[0]!.key, newRows], { axis: { i: 2 } }, "present.0.decoder.key");
  g.op("Concat", [io.pastDecoder[0]!.value, newRows], { axis: { i: 2 } }, "present.0.decoder.value");

  const column = (i: number) => o.slice(key, [i], [i + 1], [3]);
  const counts = o.squeeze(o.reduce("ReduceSum", key, [2], false), [1]);
  const count = (i: number) => o.squeeze(o.slice(counts, [i], [i + 1], [1]), [1]);
  const seen = (i: number, atLeast: number) => g.op("Greater", [count(i), o.f(atLeast - 0.5)]);
  // Rows from <|startoftranscript|> on: a running count of it along the sequence.
  const afterSot = g.op("CumSum", [column(3), o.scalarI64(2)]);
  const textAfterSot = o.squeeze(o.reduce("ReduceSum", o.mul(column(1), afterSot), [2], false), [1, 2]);
  const withoutTimestamps = seen(0, 1);
  const timestamps = count(2);
  const prompted = seen(4, 1);

  // Runs: a voiced position after an unvoiced one (or the window's start) opens the next run.
  const flags = o.squeeze(o.slice(encoder, [0], [1], [2]), [2]);
  const before = g.op("Concat", [o.mul(o.slice(flags, [0], [1], [1]), o.f(0)), o.slice(flags, [0], [1499], [1])], { axis: { i: 1 } });
  const opens = o.mul(flags, o.sub(o.f(1), before));
  const runNumber = g.op("CumSum", [opens, o.scalarI64(1)]);
  const runs = o.reduce("ReduceSum", opens, [1], false);
  // The run being said: the text said so far, or with timestamps the segments opened so far.
  const run = o.where(withoutTimestamps, textAfterSot, g.op("Floor", [o.mul(timestamps, o.f(0.5))]));
  const inRun = o.mul(flags, o.cast(g.op("Equal", [runNumber, o.unsqueeze(o.add(run, o.f(1)), [1])]), "float"));
  const runExists = g.op("Less", [run, runs]);
  const runFirst = g.op("ArgMax", [inRun], { axis: { i: 1 }, keepdims: { i: 0 } });
  const runLast = g.op("ArgMax", [inRun], { axis: { i: 1 }, keepdims: { i: 0 }, select_last_index: { i: 1 } });

  const toneBins = ALL_TONES.flatMap((t) => {
    const c = melBinOf(t.hz);
    return [c - 1, c, c + 1].map((b) => b + 1);
  });
  const toneLevels = o.reshape(g.op("Gather", [encoder, o.i64(toneBins)], { axis: { i: 2 } }), [0, 0, ALL_TONES.length, 3]);
  const toneScore = o.reduce("ReduceSum", o.mul(o.reduce("ReduceMax", toneLevels, [3], false), o.unsqueeze(inRun, [2])), [1], false);
  const dominant = g.op("ArgMax", [toneScore], { axis: { i: 1 }, keepdims: { i: 0 } });
  const wordIds = ALL_TONES.map((t) => layout.vocab.indexOf(`Ġ${t.word}`));
  const promptedIds = ALL_TONES.map((t) => layout.vocab.indexOf(`Ġ${promptedWord(t.word)}`));
  const stutters = g.op("And", [g.op("Equal", [dominant, o.scalarI64(ALL_TONES.length - 1)]), runExists]);
  const word = o.where(prompted, g.op("Gather", [o.i64(promptedIds), dominant]), g.op("Gather", [o.i64(wordIds), dominant]));

  const eos = o.scalarI64(layout.eos);
  const tsBegin = o.scalarI64(layout.timestampBegin);
  const wordOrEnd = o.where(runExists, word, eos);
  // A window opens with a timestamp even when silent, as the rules demand, and ends at once.
  const opening = o.where(g.op("Or", [runExists, g.op("Equal", [timestamps, o.f(0)])]), o.where(runExists, o.add(tsBegin, runFirst), tsBegin), eos);
  const closing = o.add(tsBegin, voicedEnd(o, runLast, 1500));
  const even = g.op("Equal", [o.sub(timestamps, o.mul(o.f(2), run)), o.f(0)]);
  const wordPending = g.op("Less", [o.mul(textAfterSot, o.f(2)), timestamps]);
  const saidOnce = g.op("And", [stutters, g.op("Not", [wordPending])]);
  const timestamped = o.where(even, opening, o.where(g.op("Or", [wordPending, stutters]), wordOrEnd, closing));
  const next = o.where(withoutTimestamps, wordOrEnd, timestamped);
  // The stutter's runner-up: closing the segment, one logit below saying the word again.
  const runnerUp = o.where(g.op("And", [g.op("And", [saidOnce, g.op("Not", [withoutTimestamps])]), g.op("Not", [even])]), closing, o.scalarI64(-1));

  const vocabIds = g.op("Range", [o.scalarI64(0), o.scalarI64(V), o.scalarI64(1)]);
  const oneHot = o.add(
    o.mul(o.cast(g.op("Equal", [o.unsqueeze(vocabIds, [0]), o.unsqueeze(next, [1])]), "float"), o.f(30)),
    o.mul(o.cast(g.op("Equal", [o.unsqueeze(vocabIds, [0]), o.unsqueeze(runnerUp, [1])]), "float"), o.f(29)),
  );
  // Every position gets the same row; the pipeline reads only the last one.
  g.op("Add", [o.unsqueeze(oneHot, [1]), o.mul(isText, o.f(0))], {}, "logits");
  if (crossAttentions) {
    const saysWord = o.unsqueeze(g.op("Less", [next, eos]), [1]);
    const peaked = o.softmax(o.mul(o.where(saysWord, inRun, o.sub(o.f(1), flags)), o.f(30)));
    // [B, 1 head, every position, 1500], the same row at each position, like the logits.
    g.op("Add", [o.unsqueeze(peaked, [1, 2]), o.unsqueeze(o.mul(isText, o.f(0)), [1])], {}, "cross_attentions.0");
  }
  declareDecoderOutputs(io, 1, 1, D_MODEL, V, crossAttentions);
  return g;
}

export type MicroPart = { word: MicroWord; seconds: number } | { silence: number };

/** The audio the micro model names: each word becomes its tone, for synthesize() or writeAudioFile(). */
export function microTones(parts: MicroPart[]): SynthPart[] {
  return parts.map((p) => {
    if ("silence" in p) return p;
    const tone = ALL_TONES.find((t) => t.word === p.word);
    if (!tone) throw new RangeError(`unknown micro word ${p.word}`);
    return { tone: tone.hz, seconds: p.seconds };
  });
}
