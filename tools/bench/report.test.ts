import { describe, expect, it } from "vitest";
import { fileTimestamp, judged, mib, ms, num, pct, percentile, relativeDifference, renderTable, seconds, summarize, times, verdict, type Target } from "./report.ts";

describe("percentile", () => {
  it("interpolates linearly between ranks, like numpy's default", () => {
    const values = [15, 20, 35, 40, 50];
    expect(percentile(values, 0)).toBe(15);
    expect(percentile(values, 50)).toBe(35);
    expect(percentile(values, 100)).toBe(50);
    expect(percentile(values, 25)).toBe(20);
    expect(percentile(values, 40)).toBeCloseTo(29, 10);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
  });

  it("does not depend on input order and does not reorder the input", () => {
    const values = [9, 1, 5, 3, 7];
    expect(percentile(values, 50)).toBe(5);
    expect(values).toEqual([9, 1, 5, 3, 7]);
  });

  it("p99 of 1..100 sits just below the maximum", () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 99)).toBeCloseTo(99.01, 10);
  });

  it("handles one value, no values and NaN", () => {
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
    expect(percentile([NaN, 2, 4], 50)).toBe(3);
    expect(() => percentile([1], 101)).toThrow(RangeError);
  });
});

describe("summarize", () => {
  it("gives count, extremes, mean and percentiles", () => {
    expect(summarize([4, 1, 3, 2])).toEqual({ n: 4, min: 1, mean: 2.5, p50: 2.5, p90: 3.7, p99: expect.closeTo(3.97, 10), max: 4 });
  });

  it("is all NaN for no values", () => {
    const s = summarize([]);
    expect(s.n).toBe(0);
    expect(s.p50).toBeNaN();
    expect(s.max).toBeNaN();
  });
});

describe("formatting", () => {
  it("formats numbers, sizes, durations, shares and ratios, with '-' for missing values", () => {
    expect(num(3.14159, 2)).toBe("3.14");
    expect(num(NaN)).toBe("-");
    expect(num(null)).toBe("-");
    expect(mib(512 * 2 ** 20)).toBe("512 MiB");
    expect(mib(undefined)).toBe("-");
    expect(seconds(0.25)).toBe("250 ms");
    expect(seconds(4.2)).toBe("4.20 s");
    expect(seconds(42.25)).toBe("42.3 s");
    expect(ms(1.234, 2)).toBe("1.23 ms");
    expect(pct(0.153)).toBe("15%");
    expect(times(1.5)).toBe("1.50x");
    expect(times(Infinity)).toBe("-");
    expect(relativeDifference(125, 100)).toBe(0.25);
    expect(relativeDifference(1, undefined)).toBeNaN();
    expect(fileTimestamp(new Date("2026-11-21T13:05:09.123Z"))).toBe("2026-11-21T13-05-09Z");
  });
});

describe("targets", () => {
  const atLeast: Target = { name: "speed", op: ">=", value: 40, label: ">= 40x" };
  const below: Target = { name: "p99", op: "<", value: 50, label: "< 50 ms" };

  it("judges each comparison, and n/a without a measurement", () => {
    expect(verdict(40, atLeast)).toBe("PASS");
    expect(verdict(39.9, atLeast)).toBe("MISS");
    expect(verdict(49.9, below)).toBe("PASS");
    expect(verdict(50, below)).toBe("MISS");
    expect(verdict(0.15, { name: "slot", op: "<=", value: 0.15, label: "<= 15%" })).toBe("PASS");
    expect(verdict(2, { name: "x", op: ">", value: 2, label: "> 2" })).toBe("MISS");
    expect(verdict(null, atLeast)).toBe("n/a");
    expect(verdict(NaN, atLeast)).toBe("n/a");
    expect(judged(41, atLeast)).toBe("PASS (target >= 40x)");
  });
});

describe("renderTable", () => {
  it("pads columns to their widest cell, right-aligns numeric columns, and appends notes", () => {
    const text = renderTable(
      "== Speed ==",
      ["model", "real time", "verdict"],
      [
        ["tiny q8", "41.2x", "PASS"],
        ["small fp32", "5.1x", "MISS"],
      ],
      ["a note"],
    );
    expect(text.split("\n")).toEqual([
      "== Speed ==",
      "model       real time  verdict",
      "----------  ---------  -------",
      "tiny q8         41.2x  PASS",
      "small fp32       5.1x  MISS",
      "  a note",
    ]);
  });

  it("treats '-' as numeric, honours explicit alignment, and fills missing cells", () => {
    const text = renderTable(
      "t",
      ["n", { header: "name", align: "right" }, "x"],
      [
        [1, "ab", "-"],
        [10, "c"],
      ],
    );
    expect(text.split("\n")).toEqual(["t", " n  name  x", "--  ----  -", " 1    ab  -", "10     c"]);
  });

  it("renders a header and rule for an empty table", () => {
    expect(renderTable("t", ["a", "bb"], [])).toBe("t\na  bb\n-  --");
  });
});
