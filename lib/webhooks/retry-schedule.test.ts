import { describe, expect, it } from "vitest";
import { DomainError } from "../errors.ts";
import { OutboundNetworkError } from "../net/safe-fetch.ts";
import { classifyDeliveryResponse, DEFAULT_RETRY_SCHEDULE, MAX_RETRY_AFTER_SECONDS, nextAttemptDelay, parseRetryAfter, parseSchedule } from "./retry-schedule.ts";

const S = 1_000;
const M = 60 * S;
const H = 60 * M;
const schedule = parseSchedule(DEFAULT_RETRY_SCHEDULE);
const noJitter = () => 0.5;

describe("parseSchedule", () => {
  it("reads the default schedule as eight attempts spanning about 27 hours", () => {
    expect(schedule).toEqual([0, 5 * S, 5 * M, 30 * M, 2 * H, 5 * H, 10 * H, 10 * H]);
    const total = schedule.reduce((sum, ms) => sum + ms, 0);
    expect(total / H).toBeCloseTo(27.58, 2);
  });

  it("tolerates spaces around entries", () => {
    expect(parseSchedule(" 0s , 250ms,1m ")).toEqual([0, 250, M]);
  });

  it.each(["", "5s,,5m", "5s,", "5s,soon", "5"])("refuses %j", (text) => {
    expect(() => parseSchedule(text)).toThrow(/Invalid/);
  });
});

describe("nextAttemptDelay", () => {
  it("walks the schedule, one entry per failed attempt", () => {
    const delays = schedule.slice(1).map((_, failed) => nextAttemptDelay(failed, schedule, { random: noJitter }));
    expect(delays).toEqual(schedule.slice(1));
  });

  it("returns null once every scheduled attempt has been made", () => {
    expect(nextAttemptDelay(schedule.length - 1, schedule)).toBeNull();
    expect(nextAttemptDelay(schedule.length + 3, schedule)).toBeNull();
  });

  it("keeps jitter within ±20% of the scheduled delay", () => {
    expect(nextAttemptDelay(2, schedule, { random: () => 0 })).toBe(24 * M);
    expect(nextAttemptDelay(2, schedule, { random: () => 0.999_999_999 })).toBeCloseTo(36 * M, -2);
    for (let i = 0; i < 1000; i++) {
      const delay = nextAttemptDelay(2, schedule)!;
      expect(delay).toBeGreaterThanOrEqual(24 * M);
      expect(delay).toBeLessThanOrEqual(36 * M);
    }
  });

  it("honours a Retry-After longer than the scheduled delay", () => {
    expect(nextAttemptDelay(0, schedule, { retryAfterSeconds: 120, random: noJitter })).toBe(120 * S);
  });

  it("ignores a Retry-After shorter than the scheduled delay", () => {
    expect(nextAttemptDelay(3, schedule, { retryAfterSeconds: 60, random: noJitter })).toBe(2 * H);
  });

  it("caps Retry-After at one day", () => {
    expect(nextAttemptDelay(0, schedule, { retryAfterSeconds: 7 * 86_400, random: noJitter })).toBe(MAX_RETRY_AFTER_SECONDS * S);
  });

  it("ignores a negative or non-finite Retry-After", () => {
    expect(nextAttemptDelay(0, schedule, { retryAfterSeconds: -5, random: noJitter })).toBe(5 * S);
    expect(nextAttemptDelay(0, schedule, { retryAfterSeconds: Number.NaN, random: noJitter })).toBe(5 * S);
  });

  it("gives no Retry-After extension once attempts are exhausted", () => {
    expect(nextAttemptDelay(schedule.length - 1, schedule, { retryAfterSeconds: 60 })).toBeNull();
  });

  it("refuses a negative or fractional attempt index", () => {
    expect(() => nextAttemptDelay(-1, schedule)).toThrow(RangeError);
    expect(() => nextAttemptDelay(1.5, schedule)).toThrow(RangeError);
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("2025-01-01T00:00:00Z");

  it("reads delta-seconds", () => {
    expect(parseRetryAfter("120", now)).toBe(120);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
  });

  it("reads an HTTP date relative to now, clamping past dates to 0", () => {
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:05:00 GMT", now)).toBe(300);
    expect(parseRetryAfter("Tue, 31 Dec 2024 23:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("Wednesday, 01-Jan-25 00:01:00 GMT", now)).toBe(60);
    expect(parseRetryAfter("Wed Jan  1 00:00:30 2025", now)).toBe(30);
  });

  it.each([null, undefined, "", "soon", "-5", "1.5", "2025-01-01"])("gives undefined for %j", (value) => {
    expect(parseRetryAfter(value, now)).toBeUndefined();
  });
});

describe("classifyDeliveryResponse", () => {
  it.each([200, 201, 202, 204, 299])("treats %d as delivered", (status) => {
    expect(classifyDeliveryResponse(status)).toBe("delivered");
  });

  it("treats 410 as gone, so delivery stops", () => {
    expect(classifyDeliveryResponse(410)).toBe("gone");
  });

  it.each([100, 301, 302, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504])("retries after %d", (status) => {
    expect(classifyDeliveryResponse(status)).toBe("retry");
  });

  it("retries network errors and timeouts", () => {
    expect(classifyDeliveryResponse(null, new OutboundNetworkError("ECONNRESET"))).toBe("retry");
    expect(classifyDeliveryResponse(null, new DomainError("timeout", "timed out"))).toBe("retry");
    expect(classifyDeliveryResponse(null, new DomainError("invalid_request", "could not resolve host"))).toBe("retry");
    expect(classifyDeliveryResponse(null)).toBe("retry");
  });

  it("stops for a destination the outbound policy refuses", () => {
    expect(classifyDeliveryResponse(null, new DomainError("forbidden", "Outbound URL refused"))).toBe("gone");
  });
});
