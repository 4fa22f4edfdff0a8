import { describe, expect, it } from "vitest";
import { ApiKeys, presentedKey } from "./auth.ts";

describe("ApiKeys", () => {
  const keys = new ApiKeys(["sk-first", "sk-second", "a-much-longer-third-key-0123456789"]);

  it.each(["sk-first", "sk-second", "a-much-longer-third-key-0123456789"])("accepts the configured key %j", (key) => {
    expect(keys.accepts(key)).toBe(true);
  });

  it.each(["sk-third", "sk-firs", "sk-first ", "SK-FIRST", "sk-firstsk-second", "sk-first,sk-second"])("rejects %j", (key) => {
    expect(keys.accepts(key)).toBe(false);
  });

  it("rejects an empty or missing key", () => {
    expect(keys.accepts("")).toBe(false);
    expect(keys.accepts(undefined)).toBe(false);
  });

  it("requires a key only when keys are configured", () => {
    expect(keys.required).toBe(true);
    const none = new ApiKeys([]);
    expect(none.required).toBe(false);
    // No keys configured means no key can match; callers skip the check via `required`.
    expect(none.accepts("anything")).toBe(false);
  });
});

describe("presentedKey", () => {
  it("reads the key from an Authorization: Bearer header", () => {
    expect(presentedKey("Bearer sk-abc", undefined)).toBe("sk-abc");
  });

  it("accepts the Bearer scheme in any case and trims surrounding space", () => {
    expect(presentedKey("bearer sk-abc", undefined)).toBe("sk-abc");
    expect(presentedKey("BEARER   sk-abc  ", undefined)).toBe("sk-abc");
  });

  it("falls back to X-API-Key", () => {
    expect(presentedKey(undefined, "sk-header")).toBe("sk-header");
    expect(presentedKey(undefined, "  sk-header ")).toBe("sk-header");
  });

  it("prefers the Bearer key when both headers are sent", () => {
    expect(presentedKey("Bearer sk-bearer", "sk-header")).toBe("sk-bearer");
  });

  it("falls back to X-API-Key when Authorization is not a Bearer credential", () => {
    expect(presentedKey("Basic dXNlcjpwYXNz", "sk-header")).toBe("sk-header");
    expect(presentedKey("Bearer ", "sk-header")).toBe("sk-header");
  });

  it("finds no key when neither header carries one", () => {
    expect(presentedKey(undefined, undefined)).toBeUndefined();
    expect(presentedKey("", "")).toBeUndefined();
    expect(presentedKey("Basic dXNlcjpwYXNz", "   ")).toBeUndefined();
    expect(presentedKey("Bearersk-abc", undefined)).toBeUndefined();
  });
});
