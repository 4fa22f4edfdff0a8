import { readFileSync } from "node:fs";
import { join } from "node:path";
import { WhisperTokenizer } from "@huggingface/transformers";
import { describe, expect, it } from "vitest";
import { sharedDir } from "../../tools/models/generate.ts";
import { promptTail } from "./prompt.ts";
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

describe("a long prompt", () => {
  it("is read from its end only, and still gives the decoder the last 223 tokens the whole of it would", () => {
    const tokenizer = tinyTokenizer();
    const last = (prompt: string) => Array.from(tokenizer.encode(` ${prompt.trim()}`, { add_special_tokens: false })).slice(-223);
    const texts = {
      prose: 'So the meeting went on; Anna said: "we ship on the 14th, at 09:30" and Bo agreed. '.repeat(3000),
      lines: "Speaker 1:\tokay, next item\n\nSpeaker 2:  the numbers — 1,234.5 — look fine\n".repeat(3000),
      unspaced: "会議は続き、アンナは十四日に出荷すると言った。".repeat(10_000),
      emoji: "🎙️🎧".repeat(40_000),
    };
    for (const [name, text] of Object.entries(texts)) {
      const tail = promptTail(text);
      expect(tail.length, name).toBeLessThan(text.length / 10);
      expect(text.endsWith(tail), name).toBe(true);
      expect(last(tail), name).toEqual(last(text));
    }
    expect(promptTail("a short prompt")).toBe("a short prompt");
  });
});
