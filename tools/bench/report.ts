/**
 * Formatting for the benchmark (tools/bench/bench.ts): percentiles, aligned plain-text tables, and the
 * product targets printed next to each measured figure as PASS/MISS. Pure functions, unit-tested in
 * report.test.ts; nothing here measures anything.
 */

/** Linear-interpolation percentile (numpy's default): p in [0, 100]. NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be between 0 and 100, got ${p}`);
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

export interface Summary {
  n: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  const clean = values.filter((v) => !Number.isNaN(v));
  if (clean.length === 0) return { n: 0, min: NaN, mean: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN };
  return {
    n: clean.length,
    min: Math.min(...clean),
    mean: clean.reduce((a, b) => a + b, 0) / clean.length,
    p50: percentile(clean, 50),
    p90: percentile(clean, 90),
    p99: percentile(clean, 99),
    max: Math.max(...clean),
  };
}

/** A number with `digits` decimals; "-" for null/undefined/NaN/Infinity. */
export function num(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "-";
  return value.toFixed(digits);
}

export function mib(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "-";
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}

export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "-";
  if (Math.abs(s) < 1) return `${(s * 1000).toFixed(0)} ms`;
  return `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

export function ms(milliseconds: number | null | undefined, digits = 1): string {
  if (milliseconds === null || milliseconds === undefined || !Number.isFinite(milliseconds)) return "-";
  return `${milliseconds.toFixed(digits)} ms`;
}

export function pct(fraction: number | null | undefined, digits = 0): string {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return "-";
  return `${(fraction * 100).toFixed(digits)}%`;
}

export function times(ratio: number | null | undefined, digits = 2): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "-";
  return `${ratio.toFixed(digits)}x`;
}

export type Comparison = ">=" | "<=" | "<" | ">";

export interface Target {
  /** What is compared, e.g. "tiny int8 real-time factor". */
  name: string;
  op: Comparison;
  value: number;
  /** How the threshold is written next to the figure, e.g. ">= 40x". */
  label: string;
}

export type Verdict = "PASS" | "MISS" | "n/a";

export function verdict(measured: number | null | undefined, target: Target): Verdict {
  if (measured === null || measured === undefined || Number.isNaN(measured)) return "n/a";
  switch (target.op) {
    case ">=":
      return measured >= target.value ? "PASS" : "MISS";
    case ">":
      return measured > target.value ? "PASS" : "MISS";
    case "<=":
      return measured <= target.value ? "PASS" : "MISS";
    case "<":
      return measured < target.value ? "PASS" : "MISS";
  }
}

/** "PASS (target >= 40x)" */
export function judged(measured: number | null | undefined, target: Target): string {
  return `${verdict(measured, target)} (target ${target.label})`;
}

export interface Column {
  header: string;
  /** Default: right for cells that look numeric, left otherwise (decided per column from its cells). */
  align?: "left" | "right";
}

const NUMERIC = /^[-+]?(\d[\d,]*(\.\d+)?|\.\d+)\s*(x|%|ms|s|MiB|GiB|kB)?$|^-$/;

/**
 * A plain-text table: a title line, a header, a rule, and one line per row, columns padded to their
 * widest cell. Columns whose cells are all numbers (with an optional unit) are right-aligned.
 */
export function renderTable(title: string, columns: (string | Column)[], rows: (string | number)[][], notes: string[] = []): string {
  const cols: Column[] = columns.map((c) => (typeof c === "string" ? { header: c } : c));
  const cells = rows.map((row) => cols.map((_, i) => String(row[i] ?? "")));
  const widths = cols.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const aligns = cols.map((c, i) => c.align ?? (cells.length > 0 && cells.every((r) => NUMERIC.test(r[i]!.trim())) ? "right" : "left"));
  const pad = (text: string, i: number) => (aligns[i] === "right" ? text.padStart(widths[i]!) : text.padEnd(widths[i]!));
  const line = (texts: string[]) =>
    texts
      .map((t, i) => pad(t, i))
      .join("  ")
      .trimEnd();
  const out = [
    title,
    line(cols.map((c) => c.header)),
    widths
      .map((w) => "-".repeat(w))
      .join("  ")
      .trimEnd(),
  ];
  for (const row of cells) out.push(line(row));
  for (const note of notes) out.push(`  ${note}`);
  return out.join("\n");
}

/** Relative difference of `measured` from `reference` (0.3 = 30% more); NaN when no reference. */
export function relativeDifference(measured: number, reference: number | null | undefined): number {
  if (reference === null || reference === undefined || reference === 0) return Number.NaN;
  return (measured - reference) / reference;
}

/** A filesystem-safe timestamp: 2026-11-21T13-05-09Z. */
export function fileTimestamp(date = new Date()): string {
  return date
    .toISOString()
    .replace(/\.\d{3}Z$/, "Z")
    .replaceAll(":", "-");
}
