/**
 * A number as people write one in decimal, from a string; anything else comes back as it came, for
 * a schema to refuse as not a number. Number() and z.coerce.number() also read "0x50" as 80, "1e3"
 * as 1000 and "" as 0.
 */
export function decimalOrAsIs(value: unknown): unknown {
  return typeof value === "string" && /^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$/.test(value) ? Number(value) : value;
}
