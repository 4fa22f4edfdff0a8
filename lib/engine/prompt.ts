/**
 * How much of a prompt's end is read. Whisper conditions on a prompt's last 223 tokens only (half
 * the text context), and OpenAI's long-file recipe sends a whole previous transcript as the prompt:
 * tokenizing all of it again on every window would cost far more than those tokens are worth. 8192
 * characters hold many times 223 tokens of any ordinary text (a token rarely spans more than a
 * word), so the tokens kept are the whole prompt's; the rest of it is never read.
 */
const PROMPT_TAIL_CHARS = 8192;

/** The end of a prompt that its last tokens come from: cut where a word starts, so no word is split. */
export function promptTail(prompt: string): string {
  if (prompt.length <= PROMPT_TAIL_CHARS) return prompt;
  const tail = prompt.slice(-PROMPT_TAIL_CHARS);
  const wordStart = tail.search(/\s\S/);
  if (wordStart !== -1) return tail.slice(wordStart + 1);
  // Text without spaces (Chinese, Japanese) is cut anywhere, but not inside a surrogate pair.
  return /^[\uDC00-\uDFFF]/.test(tail) ? tail.slice(1) : tail;
}
