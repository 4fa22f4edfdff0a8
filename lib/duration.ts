const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

// "ms" comes before "m" in the alternation so "5ms" is never read as five minutes plus junk.
const TERM = "(\\d+(?:\\.\\d+)?)(ms|s|m|h|d)";
const WHOLE = new RegExp(`^(?:${TERM})+$`);

/**
 * Milliseconds in a duration such as "250ms", "5s", "1.5h" or "1h30m" (terms are summed).
 * A bare number is refused: whether "30" means seconds or milliseconds is exactly the
 * ambiguity that makes config values silently wrong.
 */
export function parseDuration(text: string): number {
  const input = text.trim();
  if (!WHOLE.test(input)) {
    throw new Error(`Invalid duration "${text}": expected a number followed by ms, s, m, h or d (e.g. "250ms", "5m", "1h30m")`);
  }
  let total = 0;
  for (const [, amount, unit] of input.matchAll(new RegExp(TERM, "g"))) {
    total += Number(amount) * UNIT_MS[unit as keyof typeof UNIT_MS];
  }
  const ms = Math.round(total);
  if (!Number.isSafeInteger(ms)) throw new Error(`Invalid duration "${text}": too large`);
  return ms;
}
