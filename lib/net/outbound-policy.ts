/**
 * What outbound URLs may reach: http(s) only, no credentials, and only public addresses unless
 * OUTBOUND_ALLOWLIST names the host or range. A host is resolved once and every address checked;
 * connections then go to those addresses only (pinnedLookup), so DNS rebinding gets no say.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import type { LookupAddress } from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { DomainError, isDomainError } from "../errors.ts";
import { classifyIp, inCidr, IPV4_MAPPED, KIND_DESCRIPTION, parseCidr, parseIp } from "./address-ranges.ts";
import { Deadline } from "./deadline.ts";

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export interface OutboundPolicy {
  /** Hostnames, IPs and CIDRs reachable even though they are not public (OUTBOUND_ALLOWLIST). */
  allow: string[];
  /** Replaces the system resolver; every address it returns is checked. */
  resolve?: (hostname: string) => Promise<ResolvedAddress[]>;
}

/**
 * Parses OUTBOUND_ALLOWLIST: comma-separated hostnames, IPs and CIDRs (v4 and v6), e.g.
 * "minio.internal, 10.0.0.0/8, fd12:3456::/48". Throws on malformed entries so a typo
 * fails at startup instead of silently refusing the destination it meant to allow.
 */
export function parseAllowlist(text: string | undefined): OutboundPolicy {
  const allow = (text ?? "")
    .split(",")
    .map((entry) => normalizeHostname(entry.trim()))
    .filter((entry) => entry !== "");
  for (const entry of allow) {
    if (entry.includes("/") || isIP(entry)) parseCidr(entry);
    else if (!/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(entry)) {
      throw new Error(`Invalid OUTBOUND_ALLOWLIST entry: ${entry}`);
    }
  }
  return { allow };
}

function normalizeHostname(hostname: string): string {
  return hostname.toLowerCase().replace(/\.$/, "");
}

function isHostnameAllowed(hostname: string, policy: OutboundPolicy): boolean {
  const wanted = normalizeHostname(hostname);
  return policy.allow.some((entry) => !entry.includes("/") && !isIP(entry) && normalizeHostname(entry) === wanted);
}

function isAddressAllowed(ip: string, policy: OutboundPolicy): boolean {
  const parsed = parseIp(ip);
  if (!parsed) return false;
  // A v4-mapped answer reaches the IPv4 host, so it is matched against IPv4 entries too.
  const candidates = [parsed];
  if (parsed.bits === 128 && inCidr(IPV4_MAPPED, parsed.value)) {
    candidates.push({ bits: 32, value: parsed.value & 0xffff_ffffn });
  }
  return policy.allow.some((entry) => {
    if (!entry.includes("/") && !isIP(entry)) return false;
    const cidr = parseCidr(entry);
    return candidates.some((c) => c.bits === cidr.bits && inCidr(cidr, c.value));
  });
}

function refuse(message: string, details: Record<string, unknown>): DomainError {
  return new DomainError("forbidden", `Outbound URL refused: ${message}`, { details });
}

/** Validates scheme and shape; the address checks happen after resolution, per hop. */
export function parseOutboundUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch (cause) {
    throw new DomainError("invalid_request", "Outbound URL is not a valid URL", { cause });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw refuse(`scheme ${url.protocol} is not allowed (only http: and https:)`, { scheme: url.protocol });
  }
  if (url.username || url.password) {
    throw new DomainError("invalid_request", "Outbound URL refused: credentials in URLs are not supported");
  }
  return url;
}

/** The addresses a connection to `url` may use: resolved once, every one of them checked. */
export async function checkedAddresses(url: URL, policy: OutboundPolicy, deadline: Deadline): Promise<ResolvedAddress[]> {
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const literal = isIP(hostname);
  if (literal === 4 || literal === 6) {
    const kind = classifyIp(hostname);
    if (kind !== "public" && !isAddressAllowed(hostname, policy)) {
      throw refuse(`${hostname} is ${KIND_DESCRIPTION[kind]}`, { host: hostname, kind });
    }
    return [{ address: hostname, family: literal }];
  }

  const addresses = await deadline.race(resolve(hostname, policy));
  if (isHostnameAllowed(hostname, policy)) return addresses;
  for (const { address } of addresses) {
    const kind = classifyIp(address);
    if (kind !== "public" && !isAddressAllowed(address, policy)) {
      // The resolved address stays out of the message: echoing it would let a caller map internal DNS.
      throw refuse(`${hostname} resolves to ${KIND_DESCRIPTION[kind]}`, { host: hostname, kind });
    }
  }
  return addresses;
}

async function resolve(hostname: string, policy: OutboundPolicy): Promise<ResolvedAddress[]> {
  let addresses: ResolvedAddress[];
  try {
    addresses = policy.resolve
      ? await policy.resolve(hostname)
      : (await dnsLookup(hostname, { all: true, verbatim: true })).map(({ address, family }) => ({
          address,
          family: family === 6 ? 6 : 4,
        }));
  } catch (cause) {
    throw new DomainError("invalid_request", `Outbound URL refused: could not resolve host ${hostname}`, { cause });
  }
  if (addresses.length === 0) {
    throw new DomainError("invalid_request", `Outbound URL refused: could not resolve host ${hostname}`);
  }
  return addresses;
}

/**
 * The same checks a fetch makes before connecting, without connecting: lets an API refuse a bad
 * URL when it is submitted rather than when a job runs. Redirects are still checked at fetch time.
 * `param` names the request field the URL came from, in the refusal's message and `param`: a job
 * may carry two URLs (its media and its callback).
 */
export async function assertOutboundAllowed(raw: string, policy: OutboundPolicy, { param, timeoutMs = 5000 }: { param?: string; timeoutMs?: number } = {}): Promise<void> {
  let deadline: Deadline | null = null;
  try {
    const url = parseOutboundUrl(raw);
    deadline = new Deadline(timeoutMs, url.hostname);
    await checkedAddresses(url, policy, deadline);
  } catch (err) {
    if (!param || !isDomainError(err)) throw err;
    throw new DomainError(err.code, `${param}: ${err.message}`, {
      cause: err.cause,
      retryable: err.retryable,
      retryAfterSeconds: err.retryAfterSeconds,
      details: { ...err.details, param },
    });
  } finally {
    deadline?.clear();
  }
}

/** Hands net.connect the checked addresses instead of letting it resolve the name again. */
export function pinnedLookup(addresses: readonly ResolvedAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    if (options.all) {
      callback(
        null,
        addresses.map(({ address, family }): LookupAddress => ({ address, family })),
      );
    } else {
      const [first] = addresses as [ResolvedAddress];
      callback(null, first.address, first.family);
    }
  };
}
