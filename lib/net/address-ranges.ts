/**
 * Which kind of destination an IP address is: the IANA special-purpose ranges, IPv4 and IPv6, and
 * the IPv6 forms that embed an IPv4 address. The outbound policy (outbound-policy.ts) refuses all
 * but public addresses.
 */
import { isIP } from "node:net";

export type AddressKind = "public" | "unspecified" | "loopback" | "private" | "link_local" | "cloud_metadata" | "cgnat" | "multicast" | "broadcast" | "documentation" | "reserved";

export const KIND_DESCRIPTION: Record<Exclude<AddressKind, "public">, string> = {
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

export interface Cidr {
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
export const IPV4_MAPPED = parseCidr("::ffff:0:0/96");
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

export function inCidr(cidr: Cidr, value: bigint): boolean {
  const shift = BigInt(cidr.bits - cidr.prefix);
  return value >> shift === cidr.base >> shift;
}

export function parseCidr(text: string): Cidr {
  const [address = "", prefixText, ...rest] = text.split("/");
  const ip = parseIp(address);
  const prefix = prefixText === undefined ? ip?.bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!ip || rest.length > 0 || prefix === undefined || !(prefix >= 0 && prefix <= ip.bits)) {
    throw new Error(`Invalid IP or CIDR: ${text}`);
  }
  return { bits: ip.bits, base: ip.value, prefix };
}

export function parseIp(text: string): { bits: 32 | 128; value: bigint } | undefined {
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
