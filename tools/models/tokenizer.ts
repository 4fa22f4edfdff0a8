/**
 * Whisper-layout tokenizer files (tokenizer.json, tokenizer_config.json) for generated models: a
 * byte-level BPE vocabulary, then <|endoftext|>, the prompt specials, <|notimestamps|> last, and the
 * 1501 timestamp ids after it that live in the model's vocabulary but not in the tokenizer, exactly
 * as in the published checkpoints.
 */
export const WHISPER_LANGUAGES = [
  "en",
  "zh",
  "de",
  "es",
  "ru",
  "ko",
  "fr",
  "ja",
  "pt",
  "tr",
  "pl",
  "ca",
  "nl",
  "ar",
  "sv",
  "it",
  "id",
  "hi",
  "fi",
  "vi",
  "he",
  "uk",
  "el",
  "ms",
  "cs",
  "ro",
  "da",
  "hu",
  "ta",
  "no",
  "th",
  "ur",
  "hr",
  "bg",
  "lt",
  "la",
  "mi",
  "ml",
  "cy",
  "sk",
  "te",
  "fa",
  "lv",
  "bn",
  "sr",
  "az",
  "sl",
  "kn",
  "et",
  "mk",
  "br",
  "eu",
  "is",
  "hy",
  "ne",
  "mn",
  "bs",
  "kk",
  "sq",
  "sw",
  "gl",
  "mr",
  "pa",
  "si",
  "km",
  "sn",
  "yo",
  "so",
  "af",
  "oc",
  "ka",
  "be",
  "tg",
  "sd",
  "gu",
  "am",
  "yi",
  "lo",
  "uz",
  "fo",
  "ht",
  "ps",
  "tk",
  "nn",
  "mt",
  "sa",
  "lb",
  "my",
  "bo",
  "tl",
  "mg",
  "as",
  "tt",
  "haw",
  "ln",
  "ha",
  "ba",
  "jw",
  "su",
] as const;

const TIMESTAMP_COUNT = 1501;

export interface TokenLayout {
  /** Text tokens, id = index. */
  vocab: string[];
  merges: [string, string][];
  eos: number;
  sot: number;
  startOfPrev: number;
  languages: Record<string, number>;
  translate: number;
  transcribe: number;
  noTimestamps: number;
  timestampBegin: number;
  /** Model vocabulary size: text + specials + timestamps. */
  vocabSize: number;
  specials: { id: number; content: string }[];
}

/** GPT-2's reversible byte -> printable character mapping used by byte-level BPE. */
export function byteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  }
  return table;
}

/**
 * A byte-level vocabulary holding the 256 byte symbols plus whole-word tokens for `words` (each
 * reachable through its chain of merges), then filler symbols up to `textSize` when a model needs the
 * published vocabulary size without the published tokenizer.
 */
export function buildTokenLayout(words: string[], languages: readonly string[], textSize?: number): TokenLayout {
  const vocab = byteToUnicode();
  const merges: [string, string][] = [];
  for (const word of words) {
    let current = "Ġ";
    for (const ch of word) {
      const next = current + ch;
      if (!vocab.includes(next)) {
        merges.push([current, ch]);
        vocab.push(next);
      }
      current = next;
    }
  }
  // Fillers decode to plain words (" w1a"), so generated text stays readable.
  for (let i = 0; textSize !== undefined && vocab.length < textSize; i++) vocab.push(`Ġw${i.toString(36)}`);

  const specials: { id: number; content: string }[] = [];
  const special = (content: string) => {
    const id = vocab.length + specials.length;
    specials.push({ id, content });
    return id;
  };
  const eos = special("<|endoftext|>");
  const sot = special("<|startoftranscript|>");
  const languageIds: Record<string, number> = {};
  for (const lang of languages) languageIds[lang] = special(`<|${lang}|>`);
  const translate = special("<|translate|>");
  const transcribe = special("<|transcribe|>");
  special("<|startoflm|>");
  const startOfPrev = special("<|startofprev|>");
  special("<|nocaptions|>");
  const noTimestamps = special("<|notimestamps|>");
  return {
    vocab,
    merges,
    eos,
    sot,
    startOfPrev,
    languages: languageIds,
    translate,
    transcribe,
    noTimestamps,
    timestampBegin: noTimestamps + 1,
    vocabSize: noTimestamps + 1 + TIMESTAMP_COUNT,
    specials,
  };
}

export function tokenizerJson(layout: TokenLayout): object {
  const vocab: Record<string, number> = {};
  layout.vocab.forEach((token, id) => (vocab[token] = id));
  const sot = "<|startoftranscript|>";
  const nts = "<|notimestamps|>";
  const eos = "<|endoftext|>";
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: layout.specials.map(({ id, content }) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: sot, type_id: 0 } },
        { SpecialToken: { id: nts, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: eos, type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: sot, type_id: 0 } },
        { SpecialToken: { id: nts, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: eos, type_id: 1 } },
      ],
      special_tokens: {
        [eos]: { id: eos, ids: [layout.eos], tokens: [eos] },
        [nts]: { id: nts, ids: [layout.noTimestamps], tokens: [nts] },
        [sot]: { id: sot, ids: [layout.sot], tokens: [sot] },
      },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: layout.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

export function tokenizerConfigJson(): object {
  const token = (content: string) => ({ __type: "AddedToken", content, lstrip: false, normalized: true, rstrip: false, single_word: false });
  return {
    add_bos_token: false,
    add_prefix_space: false,
    bos_token: token("<|endoftext|>"),
    clean_up_tokenization_spaces: true,
    eos_token: token("<|endoftext|>"),
    errors: "replace",
    model_max_length: 1024,
    pad_token: null,
    processor_class: "WhisperProcessor",
    return_attention_mask: false,
    tokenizer_class: "WhisperTokenizer",
    unk_token: token("<|endoftext|>"),
  };
}
