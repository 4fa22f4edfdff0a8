/** A reading of one series at a moment (ms since the epoch). */
export interface Sample {
  at: number;
  value: number;
}

/**
 * The samples as a step line (a reading holds until the next one, as the gauges behind them do) in a
 * `width` x `height` box spanning `span` ms up to `now`, with `max` at the top. Samples older than the
 * box are clipped to its left edge.
 */
export function stepPath(samples: readonly Sample[], now: number, span: number, max: number, width: number, height: number): string {
  if (samples.length === 0) return "";
  const x = (at: number) => round((Math.max(0, at - (now - span)) / span) * width);
  const y = (value: number) => round(height - (Math.min(value, max) / max) * height);
  const [first, ...rest] = samples;
  let d = `M${x(first!.at)} ${y(first!.value)}`;
  for (const s of rest) d += `H${x(s.at)}V${y(s.value)}`;
  return `${d}H${width}`;
}

/** Audio seconds per wall second between consecutive readings of a running total. */
export function rates(totals: readonly Sample[]): Sample[] {
  const out: Sample[] = [];
  for (let i = 1; i < totals.length; i++) {
    const a = totals[i - 1]!;
    const b = totals[i]!;
    if (b.at > a.at) out.push({ at: b.at, value: Math.max(0, b.value - a.value) / ((b.at - a.at) / 1000) });
  }
  return out;
}

const round = (n: number) => Math.round(n * 10) / 10;
