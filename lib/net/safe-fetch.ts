/**
 * Outbound HTTP for URLs that users control (media downloads, webhook callbacks), guarded
 * against SSRF: every hop is resolved, every resolved address is checked, and the socket is
 * pinned to the checked addresses so a second DNS answer (rebinding) never gets a say.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import type { LookupAddress } from "node:dns";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { pipeline } from "node:stream/promises";
import { DomainError } from "../errors.ts";

// ---------------------------------------------------------------------------------------------
// Address classification

export type AddressKind = "public" | "unspecified" | "loopback" | "private" | "link_local" | "cloud_metadata" | "cgnat" | "multicast" | "broadcast" | "documentation" | "reserved";

const KIND_DESCRIPTION: Record<Exclude<AddressKind, "public">, string> = {
  unspecified: 'an unspecified ("this network") address',
  loopback: "a loopback address",
  private: "a private address",
  link_local: "a link-local address",
  cloud_metadata: "a cloud metadata address",
  cgnat: "a shared (CGNAT) address",
  multicast: "a multicast address",
  broadcast: "the broadcast address",
  documentation: "a documentation address",
  reserved: "a reserved address",
};

interface Cidr {
  bits: 32 | 128;
  base: bigint;
  prefix: number;
}

/** Ordered: the first matching range wins, so narrow ranges precede the ranges holding them. */
const IPV4_RANGES: ReadonlyArray<readonly [string, AddressKind]> = [
  ["169.254.169.254/32", "cloud_metadata"],
  ["255.255.255.255/32", "broadcast"],
  ["0.0.0.0/8", "unspecified"],
  ["10.0.0.0/8", "private"],
  ["100.64.0.0/10", "cgnat"],
  ["127.0.0.0/8", "loopback"],
  ["169.254.0.0/16", "link_local"],
  ["172.16.0.0/12", "private"],
  ["192.0.0.0/24", "reserved"],
  ["192.0.2.0/24", "documentation"],
  ["192.88.99.0/24", "reserved"],
  ["192.168.0.0/16", "private"],
  ["198.18.0.0/15", "reserved"],
  ["198.51.100.0/24", "documentation"],
  ["203.0.113.0/24", "documentation"],
  ["224.0.0.0/4", "multicast"],
  ["240.0.0.0/4", "reserved"],
];

const IPV6_RANGES: ReadonlyArray<readonly [string, AddressKind]> = [
  ["::/128", "unspecified"],
  ["::1/128", "loopback"],
  ["fd00:ec2::254/128", "cloud_metadata"],
  ["64:ff9b:1::/48", "private"],
  ["100::/64", "reserved"],
  ["2001::/23", "reserved"],
  ["2001:db8::/32", "documentation"],
  ["3fff::/20", "documentation"],
  ["fc00::/7", "private"],
  ["fe80::/10", "link_local"],
  ["ff00::/8", "multicast"],
];

const IPV4_TABLE = IPV4_RANGES.map(([cidr, kind]) => [parseCidr(cidr), kind] as const);
const IPV6_TABLE = IPV6_RANGES.map(([cidr, kind]) => [parseCidr(cidr), kind] as const);

/** IPv6 prefixes that carry an IPv4 address, which is what actually gets reached. */
const IPV4_MAPPED = parseCidr("::ffff:0:0/96");
const NAT64 = parseCidr("64:ff9b::/96");
const SIX_TO_FOUR = parseCidr("2002::/16");
const GLOBAL_UNICAST = parseCidr("2000::/3");

/**
 * What kind of destination an IP address is; anything but "public" is refused unless
 * allow-listed. IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) are judged by
 * the embedded address, and IPv6 outside 2000::/3 is unallocated, hence "reserved".
 */
export function classifyIp(ip: string): AddressKind {
  const parsed = parseIp(ip);
  if (!parsed) throw new TypeError(`Not an IP address: ${ip}`);
  if (parsed.bits === 32) return lookupKind(IPV4_TABLE, parsed.value, 32) ?? "public";

  const v6 = parsed.value;
  const embedded = inCidr(IPV4_MAPPED, v6) || inCidr(NAT64, v6) ? v6 & 0xffff_ffffn : inCidr(SIX_TO_FOUR, v6) ? (v6 >> 80n) & 0xffff_ffffn : undefined;
  if (embedded !== undefined) return lookupKind(IPV4_TABLE, embedded, 32) ?? "public";

  return lookupKind(IPV6_TABLE, v6, 128) ?? (inCidr(GLOBAL_UNICAST, v6) ? "public" : "reserved");
}

function lookupKind(table: ReadonlyArray<readonly [Cidr, AddressKind]>, value: bigint, bits: 32 | 128): AddressKind | undefined {
  return table.find(([cidr]) => cidr.bits === bits && inCidr(cidr, value))?.[1];
}

function inCidr(cidr: Cidr, value: bigint): boolean {
  const shift = BigInt(cidr.bits - cidr.prefix);
  return value >> shift === cidr.base >> shift;
}

function parseCidr(text: string): Cidr {
  const [address = "", prefixText, ...rest] = text.split("/");
  const ip = parseIp(address);
  const prefix = prefixText === undefined ? ip?.bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!ip || rest.length > 0 || prefix === undefined || !(prefix >= 0 && prefix <= ip.bits)) {
    throw new Error(`Invalid IP or CIDR: ${text}`);
  }
  return { bits: ip.bits, base: ip.value, prefix };
}

function parseIp(text: string): { bits: 32 | 128; value: bigint } | undefined {
  // Zone ids ("fe80::1%eth0") name an interface, not part of the address.
  const ip = text.replace(/%.*$/, "");
  const family = isIP(ip);
  if (family === 4) return { bits: 32, value: ipv4ToBigInt(ip) };
  if (family === 6) return { bits: 128, value: ipv6ToBigInt(ip) };
  return undefined;
}

function ipv4ToBigInt(ip: string): bigint {
  return ip.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
}

function ipv6ToBigInt(ip: string): bigint {
  let text = ip;
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  if (tail.includes(".")) {
    const v4 = ipv4ToBigInt(tail);
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split("::");
  const head = halves[0] ? halves[0].split(":") : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const groups = halves.length === 2 ? [...head, ...Array<string>(8 - head.length - rest.length).fill("0"), ...rest] : head;
  return groups.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n);
}

// ---------------------------------------------------------------------------------------------
// Policy

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
function parseOutboundUrl(raw: string): URL {
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
async function checkedAddresses(url: URL, policy: OutboundPolicy, deadline: Deadline): Promise<ResolvedAddress[]> {
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
 */
export async function assertOutboundAllowed(raw: string, policy: OutboundPolicy, timeoutMs = 5000): Promise<void> {
  const url = parseOutboundUrl(raw);
  const deadline = new Deadline(timeoutMs, url.hostname);
  try {
    await checkedAddresses(url, policy, deadline);
  } finally {
    deadline.clear();
  }
}

/** Hands net.connect the checked addresses instead of letting it resolve the name again. */
function pinnedLookup(addresses: readonly ResolvedAddress[]): LookupFunction {
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

// ---------------------------------------------------------------------------------------------
// Requests

/** The connection failed or broke mid-response: a webhook sender should retry. */
export class OutboundNetworkError extends Error {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = "OutboundNetworkError";
  }
}

export interface SafeFetchInit {
  method?: string;
  headers?: HeadersInit;
  body?: string | Uint8Array;
  /** Cap on the response body; larger bodies fail with DomainError "payload_too_large". Default 1 MiB. */
  maxBytes?: number;
  /** Covers resolution, every redirect hop and reading the body. Default 30 s. */
  timeoutMs?: number;
  /** Redirects followed before failing with DomainError "upstream_failed". Default 5. */
  maxRedirects?: number;
  signal?: AbortSignal;
}

const DEFAULT_MAX_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NULL_BODY_STATUSES = new Set([204, 205, 304]);
const CREDENTIAL_HEADERS = ["authorization", "cookie", "proxy-authorization"];

/**
 * Like fetch, for untrusted URLs: only http(s), every hop's addresses checked against the
 * policy and pinned for the connection, redirects followed by hand. The returned Response's
 * body stream enforces maxBytes and the overall timeout as it is read.
 */
export async function safeFetch(url: string, init: SafeFetchInit, policy: OutboundPolicy): Promise<Response> {
  const maxBytes = init.maxBytes ?? DEFAULT_MAX_BYTES;
  const maxRedirects = init.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  let target = parseOutboundUrl(url);
  const deadline = new Deadline(init.timeoutMs ?? DEFAULT_TIMEOUT_MS, target.hostname, init.signal);
  let method = (init.method ?? "GET").toUpperCase();
  let body = init.body;
  const headers = new Headers(init.headers);

  try {
    for (let redirects = 0; ; redirects++) {
      const addresses = await checkedAddresses(target, policy, deadline);
      const res = await send(target, { method, headers, body }, addresses, deadline);
      const location = REDIRECT_STATUSES.has(res.statusCode ?? 0) ? res.headers.location : undefined;
      if (location === undefined) return toResponse(res, target, maxBytes, deadline);

      res.destroy();
      if (redirects >= maxRedirects) {
        throw new DomainError("upstream_failed", `Too many redirects (more than ${maxRedirects}) from ${target.hostname}`);
      }
      const nextTarget = parseOutboundUrl(redirectTarget(location, target));
      // Same rewrites as fetch: 303 (and 301/302 after POST) become a body-less GET,
      // and credentials never follow a redirect to another origin.
      const status = res.statusCode;
      if ((status === 303 && method !== "HEAD") || ((status === 301 || status === 302) && method === "POST")) {
        method = "GET";
        body = undefined;
        headers.delete("content-type");
        headers.delete("content-length");
      }
      if (nextTarget.origin !== target.origin) CREDENTIAL_HEADERS.forEach((name) => headers.delete(name));
      target = nextTarget;
    }
  } catch (err) {
    deadline.clear();
    throw err;
  }
}

function redirectTarget(location: string, from: URL): string {
  try {
    return new URL(location, from).href;
  } catch (cause) {
    throw new DomainError("upstream_failed", `${from.hostname} redirected to an invalid URL`, { cause });
  }
}

interface HopRequest {
  method: string;
  headers: Headers;
  body: string | Uint8Array | undefined;
}

function send(target: URL, request: HopRequest, addresses: readonly ResolvedAddress[], deadline: Deadline): Promise<IncomingMessage> {
  return new Promise((resolvePromise, reject) => {
    const transport = target.protocol === "https:" ? https : http;
    // agent: false keeps pooled sockets from being reused across different policy decisions.
    const req = transport.request(target, {
      method: request.method,
      headers: Object.fromEntries(request.headers),
      agent: false,
      lookup: pinnedLookup(addresses),
    });
    const stopWatching = deadline.onAbort((reason) => req.destroy(reason as Error));
    req.on("response", (res) => {
      stopWatching();
      resolvePromise(res);
    });
    req.on("error", (cause) => {
      stopWatching();
      reject(deadline.signal.aborted ? deadline.signal.reason : new OutboundNetworkError(`Request to ${target.hostname} failed: ${cause.message}`, { cause }));
    });
    req.end(request.body);
  });
}

function toResponse(res: IncomingMessage, target: URL, maxBytes: number, deadline: Deadline): Response {
  const status = res.statusCode ?? 0;
  if (status < 200 || status > 599) {
    res.destroy();
    throw new OutboundNetworkError(`${target.hostname} sent an invalid HTTP status ${status}`);
  }
  const declaredLength = Number(res.headers["content-length"]);
  if (declaredLength > maxBytes) {
    res.destroy();
    throw tooLarge(target, maxBytes);
  }
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  }
  const init = { status, statusText: res.statusMessage ?? "", headers };
  if (NULL_BODY_STATUSES.has(status)) {
    res.destroy();
    deadline.clear();
    return new Response(null, init);
  }
  return new Response(cappedBody(res, target, maxBytes, deadline), init);
}

function tooLarge(target: URL, maxBytes: number): DomainError {
  return new DomainError("payload_too_large", `Response from ${target.hostname} exceeds ${maxBytes} bytes`, {
    details: { max_bytes: maxBytes },
  });
}

/** Pull-based, so the socket is read only as fast as the consumer reads the Response. */
function cappedBody(res: IncomingMessage, target: URL, maxBytes: number, deadline: Deadline): ReadableStream<Uint8Array> {
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let received = 0;
  const stopWatching = deadline.onAbort((reason) => res.destroy(reason as Error));
  const finish = () => {
    stopWatching();
    deadline.clear();
  };

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let next: IteratorResult<Buffer>;
      try {
        next = await chunks.next();
      } catch (cause) {
        finish();
        throw deadline.signal.aborted ? deadline.signal.reason : new OutboundNetworkError(`Connection to ${target.hostname} broke while reading the response`, { cause });
      }
      if (next.done) {
        finish();
        controller.close();
        return;
      }
      received += next.value.length;
      if (received > maxBytes) {
        finish();
        res.destroy();
        throw tooLarge(target, maxBytes);
      }
      controller.enqueue(next.value);
    },
    cancel() {
      finish();
      res.destroy();
    },
  });
}

/** One budget for the whole exchange, merged with the caller's signal. */
class Deadline {
  readonly signal: AbortSignal;
  private readonly timer: NodeJS.Timeout;

  constructor(timeoutMs: number, hostname: string, callerSignal?: AbortSignal) {
    const controller = new AbortController();
    // Unref'd: a Response nobody reads must not hold the process open until the timeout.
    this.timer = setTimeout(() => {
      controller.abort(new DomainError("timeout", `Outbound request to ${hostname} timed out after ${timeoutMs} ms`));
    }, timeoutMs).unref();
    this.signal = callerSignal ? AbortSignal.any([controller.signal, callerSignal]) : controller.signal;
  }

  /** Runs `handler` on abort, at once if that already happened; returns the unsubscribe. */
  onAbort(handler: (reason: unknown) => void): () => void {
    const { signal } = this;
    if (signal.aborted) {
      handler(signal.reason);
      return () => {};
    }
    const listener = () => handler(signal.reason);
    signal.addEventListener("abort", listener, { once: true });
    return () => signal.removeEventListener("abort", listener);
  }

  /** DNS lookups cannot be cancelled, so they are raced against the deadline instead. */
  race<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolvePromise, reject) => {
      const stopWatching = this.onAbort(reject);
      promise.then(
        (value) => {
          stopWatching();
          resolvePromise(value);
        },
        (err: unknown) => {
          stopWatching();
          reject(err);
        },
      );
    });
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Downloads

export interface DownloadOptions {
  maxBytes: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface DownloadResult {
  bytes: number;
  contentType: string | null;
}

/**
 * Streams a 2xx response body to `path` through safeFetch. Any failure (refusal, non-2xx,
 * size cap, timeout, broken connection) removes the partial file before rethrowing.
 */
export async function downloadToFile(url: string, path: string, options: DownloadOptions, policy: OutboundPolicy): Promise<DownloadResult> {
  const res = await safeFetch(url, options, policy);
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new DomainError("upstream_failed", `Download failed: ${new URL(url).hostname} responded with HTTP ${res.status}`, {
      details: { status: res.status },
    });
  }
  const file = createWriteStream(path);
  try {
    await pipeline(res.body, file);
  } catch (err) {
    await rm(path, { force: true });
    throw err;
  }
  return { bytes: file.bytesWritten, contentType: res.headers.get("content-type") };
}
