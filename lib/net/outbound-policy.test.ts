import { describe, expect, it } from "vitest";
import { parseAllowlist } from "./outbound-policy.ts";

describe("parseAllowlist", () => {
  it("splits, trims and lower-cases hostnames, IPs and CIDRs", () => {
    expect(parseAllowlist(" MinIO.Internal , 10.0.0.0/8,fd12:3456::/48, 127.0.0.1 ,,")).toEqual({
      allow: ["minio.internal", "10.0.0.0/8", "fd12:3456::/48", "127.0.0.1"],
    });
  });

  it("treats a missing or empty setting as allowing nothing extra", () => {
    expect(parseAllowlist(undefined)).toEqual({ allow: [] });
    expect(parseAllowlist("")).toEqual({ allow: [] });
  });

  it.each(["10.0.0.0/33", "10.0.0/8", "fd00::/129", "10.0.0.0/8/1", "host name", "bad_host!", "-lead.example"])("refuses the malformed entry %j", (entry) => {
    expect(() => parseAllowlist(entry)).toThrow();
  });
});
