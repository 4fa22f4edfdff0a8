import { describe, expect, it } from "vitest";
import type { JobView } from "../lib/jobs/view.ts";
import { formatClock, progressReporter, renderProgress } from "./progress.ts";

describe("formatClock", () => {
  it.each([
    [0, "0:00"],
    [9.4, "0:09"],
    [59.6, "1:00"],
    [62, "1:02"],
    [3599, "59:59"],
    [3600, "1:00:00"],
    [36_061, "10:01:01"],
    [-5, "0:00"],
    [Number.NaN, "0:00"],
  ])("%s s is %s", (seconds, expected) => {
    expect(formatClock(seconds)).toBe(expected);
  });
});

describe("renderProgress", () => {
  it("draws the bar in what the numbers leave of the width, with the ETA from the rate so far", () => {
    const line = renderProgress(62, 144, 62_000, 42);
    expect(line).toBe("[######........]  43%  1:02/2:24  ETA 1:22");
    expect(line).toHaveLength(42);
  });

  it("fits every width exactly once there is room for a bar, and drops the bar below ten cells", () => {
    const numbers = "43%  1:02/2:24  ETA 1:22";
    for (let width = 0; width <= 120; width++) {
      const line = renderProgress(62, 144, 62_000, width);
      if (width >= numbers.length + 1 + 3 + 10) expect(line).toHaveLength(width);
      else expect(line).toBe(numbers);
    }
    expect(renderProgress(62, 144, 62_000, 38)).toBe("[####......]  43%  1:02/2:24  ETA 1:22");
  });

  it("starts empty with no ETA, and ends full at 100% with nothing left", () => {
    expect(renderProgress(0, 144, 5_000, 40)).toBe("[...............]   0%  0:00/2:24  ETA ?");
    expect(renderProgress(144, 144, 90_000, 40)).toBe("[############] 100%  2:24/2:24  ETA 0:00");
  });

  it("shows 99% until the very end, and clamps done beyond the total or below zero", () => {
    expect(renderProgress(143.9, 144, 90_000, 0)).toBe("99%  2:24/2:24  ETA 0:01");
    expect(renderProgress(150, 144, 90_000, 0)).toBe("100%  2:24/2:24  ETA 0:00");
    expect(renderProgress(-3, 144, 90_000, 0)).toBe("0%  0:00/2:24  ETA ?");
  });

  it("shows an unknown total (null or 0) as question marks over an empty bar", () => {
    expect(renderProgress(12, null, 4_000, 34)).toBe("[............]   ?%  0:12/?  ETA ?");
    expect(renderProgress(12, 0, 4_000, 0)).toBe("?%  0:12/?  ETA ?");
  });

  it("has no ETA without elapsed time, and switches to hours for long audio", () => {
    expect(renderProgress(10, 30, 0, 0)).toBe("33%  0:10/0:30  ETA ?");
    expect(renderProgress(3600, 7200, 1_800_000, 0)).toBe("50%  1:00:00/2:00:00  ETA 30:00");
    expect(renderProgress(1800, 7200, 600_000, 0)).toBe("25%  30:00/2:00:00  ETA 30:00");
  });
});

function job(status: JobView["status"], done: number, total: number | null, startedAt: string | null = null): JobView {
  return {
    id: "job_1",
    object: "transcription.job",
    status,
    model: "whisper-1",
    task: "transcribe",
    language: null,
    response_format: "text",
    created_at: "2025-01-01T00:00:00.000Z",
    started_at: startedAt,
    finished_at: null,
    expires_at: null,
    progress: { done_seconds: done, total_seconds: total },
    error: null,
    metadata: null,
    callback: null,
    links: { self: "/v1/jobs/job_1", result: "/v1/jobs/job_1/result" },
    result: null,
  };
}

function recorder(isTTY: boolean, columns?: number) {
  const writes: string[] = [];
  return { writes, stream: { isTTY, columns, write: (chunk: string) => writes.push(chunk) } };
}

describe("progressReporter", () => {
  const T0 = Date.parse("2025-01-01T00:01:00.000Z");

  it("redraws one line on a terminal, one column short of its width, and ends it on finish", () => {
    const { writes, stream } = recorder(true, 60);
    let now = T0;
    const reporter = progressReporter(stream, () => now);
    reporter.update(job("queued", 0, null));
    now += 10_000;
    reporter.update(job("running", 30, 120, new Date(T0).toISOString()));
    now += 1_000;
    reporter.update(job("succeeded", 120, 120, new Date(T0).toISOString()));
    reporter.finish();
    reporter.finish();
    expect(writes).toEqual(["\rjob job_1 queued\x1b[K", "\rjob job_1 running [###..........]  25%  0:30/2:00  ETA 0:30\x1b[K", "\rjob job_1 succeeded\x1b[K", "\n"]);
    expect(writes[1]!.slice(1, -3)).toHaveLength(59);
  });

  it("writes plain lines off a terminal: on each change of status, and while running every 10 s", () => {
    const { writes, stream } = recorder(false);
    let now = T0;
    const reporter = progressReporter(stream, () => now);
    const started = new Date(T0).toISOString();
    reporter.update(job("queued", 0, null));
    reporter.update(job("queued", 0, null));
    now += 2_000;
    reporter.update(job("running", 4, 60, started));
    now += 2_000;
    reporter.update(job("running", 8, 60, started));
    now += 8_000;
    reporter.update(job("running", 24, 60, started));
    now += 1_000;
    reporter.update(job("failed", 24, 60, started));
    reporter.finish();
    expect(writes).toEqual(["job job_1 queued\n", "job job_1 running  6%  0:04/1:00  ETA 0:28\n", "job job_1 running  40%  0:24/1:00  ETA 0:18\n", "job job_1 failed\n"]);
  });

  it("times the rate from its own first sight of the job running when the server's start lies in its future", () => {
    const { writes, stream } = recorder(false);
    let now = T0;
    const reporter = progressReporter(stream, () => now);
    const future = new Date(T0 + 3_600_000).toISOString();
    reporter.update(job("running", 0, 60, future));
    now += 12_000;
    reporter.update(job("running", 20, 60, future));
    expect(writes).toEqual(["job job_1 running  0%  0:00/1:00  ETA ?\n", "job job_1 running  33%  0:20/1:00  ETA 0:24\n"]);
  });
});
