import { readFileSync } from "node:fs";
import { join } from "node:path";
import { WhisperTokenizer } from "@huggingface/transformers";
import { describe, expect, it } from "vitest";
import { sharedDir } from "../../tools/models/generate.ts";
import { noSpeechToken } from "./whisper-model.ts";

/** whisper-tiny's real tokenizer, optionally with an added token renamed as a later export names it. */
function tinyTokenizer(rename: Record<string, string> = {}): WhisperTokenizer {
  const dir = join(sharedDir(), "whisper-metadata", "whisper-tiny");
  const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")) as { added_tokens: { content: string }[] };
  for (const token of json.added_tokens) token.content = rename[token.content] ?? token.content;
  return new WhisperTokenizer(json, JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")));
}

describe("the no-speech token", () => {
  it("is <|nocaptions|>, or <|nospeech|> as the large-v3 tokenizers call it", () => {
    expect(noSpeechToken(tinyTokenizer(), 50363)).toBe(50362);
    expect(noSpeechToken(tinyTokenizer({ "<|nocaptions|>": "<|nospeech|>" }), 50363)).toBe(50362);
    // Named neither: the id before <|notimestamps|>, where every Whisper vocabulary has it.
    expect(noSpeechToken(tinyTokenizer({ "<|nocaptions|>": "<|nothing|>" }), 50363)).toBe(50362);
  });
});
