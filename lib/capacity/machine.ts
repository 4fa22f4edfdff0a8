import { readFileSync } from "node:fs";
import os from "node:os";

export interface MachineResources {
  memoryBytes: number;
  memorySource: string;
  /** Set when a memory setting said more than the enforced limit, which was used instead. */
  memoryWarning?: string;
  cpus: number;
  cpuSource: string;
}

export type ReadFile = (path: string) => string | null;

const readOrNull: ReadFile = (path) => {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
};

/**
 * What this instance may really use. Inside a container os.totalmem() and os.cpus() describe the host,
 * so the cgroup limits come first; explicit settings and the platform's own variables may lower the
 * memory (never raise it past the enforced limit) and set the cores.
 */
export function detectMachine(env: NodeJS.ProcessEnv = process.env, read: ReadFile = readOrNull, limits: MachineLimits = limitsFromEnv(env)): MachineResources {
  return { ...detectMemory(env, read, limits), ...detectCpus(read, limits) };
}

/** MEMORY_LIMIT and CPUS, the explicit overrides; the service takes them from its validated config. */
export interface MachineLimits {
  memoryBytes?: number;
  cpus?: number;
}

function limitsFromEnv(env: NodeJS.ProcessEnv): MachineLimits {
  return {
    memoryBytes: env.MEMORY_LIMIT ? parseMemory(env.MEMORY_LIMIT) : undefined,
    cpus: env.CPUS ? parseCpus(env.CPUS) : undefined,
  };
}

/** Whole cores, as for cgroup quotas: a fractional count would become a fractional slot count. */
export function parseCpus(text: string, what = "CPUS"): number {
  return Math.max(1, Math.floor(positive(Number(text), what)));
}

function detectMemory(env: NodeJS.ProcessEnv, read: ReadFile, limits: MachineLimits): Pick<MachineResources, "memoryBytes" | "memorySource" | "memoryWarning"> {
  const enforced = enforcedMemory(read) ?? { memoryBytes: os.totalmem(), memorySource: "os.totalmem()" };
  const stated =
    limits.memoryBytes !== undefined
      ? { memoryBytes: limits.memoryBytes, memorySource: "MEMORY_LIMIT" }
      : env.FLY_VM_MEMORY_MB
        ? { memoryBytes: positive(Number(env.FLY_VM_MEMORY_MB) * 2 ** 20, "FLY_VM_MEMORY_MB"), memorySource: "FLY_VM_MEMORY_MB" }
        : null;
  if (!stated) return enforced;
  // A setting may say less than the kernel enforces (a platform that shows the host's totals), never
  // more: the process is killed at the enforced limit whatever the plan assumed.
  if (stated.memoryBytes <= enforced.memoryBytes) return stated;
  return {
    ...enforced,
    memoryWarning: `${stated.memorySource} (${formatBytes(stated.memoryBytes)}) is above the memory this process may use (${formatBytes(enforced.memoryBytes)}, ${enforced.memorySource}): planned for the smaller`,
  };
}

/**
 * The directories of the cgroups that hold this process to their limits, for each cgroup version:
 * its own (from /proc/self/cgroup) and each above it, up to the mount's root. A limit set on a
 * parent (a systemd slice, a pod) binds as one on the process's own cgroup does. Inside a container
 * with its own cgroup namespace, the process's cgroup is the mount's root.
 */
function cgroupDirs(read: ReadFile, controller: "memory" | "cpu"): { v2: string[]; v1: string[] } {
  const lines = (read("/proc/self/cgroup") ?? "").split("\n").map((line) => line.split(":"));
  const v2 = lines.find(([id]) => id === "0")?.[2] ?? "/";
  const v1 = lines.find(([, controllers]) => controllers?.split(",").includes(controller))?.[2] ?? "/";
  const upwards = (root: string, path: string) => {
    const parts = path.split("/").filter((part) => part && part !== "..");
    return [...parts.map((_, i) => `${root}/${parts.slice(0, parts.length - i).join("/")}`), root];
  };
  return { v2: upwards("/sys/fs/cgroup", v2), v1: upwards(`/sys/fs/cgroup/${controller}`, v1) };
}

/** The smallest of the numbers `file` holds in `dirs` that `valid` accepts, or null. */
function tightest(read: ReadFile, dirs: string[], file: string, valid: (n: number) => boolean): number | null {
  const values = dirs.map((dir) => Number(read(`${dir}/${file}`) ?? Number.NaN)).filter(valid);
  return values.length > 0 ? Math.min(...values) : null;
}

/**
 * The limit the kernel holds this process to: its cgroups', else what Node reports as constrained.
 * A cgroup limit above the machine's memory (docker --memory=64g on a 16 GiB host, or cgroup v1's
 * "no limit", a number near 2^63) is no limit: the machine runs out first.
 */
function enforcedMemory(read: ReadFile): { memoryBytes: number; memorySource: string } | null {
  const bounded = (bytes: number) => bytes > 0 && bytes < os.totalmem();
  const dirs = cgroupDirs(read, "memory");
  // cgroup v2 writes "max" for no limit, which Number() makes NaN.
  const v2 = tightest(read, dirs.v2, "memory.max", bounded);
  if (v2 !== null) return { memoryBytes: v2, memorySource: "cgroup v2 memory.max" };
  const v1 = tightest(read, dirs.v1, "memory.limit_in_bytes", bounded);
  if (v1 !== null) return { memoryBytes: v1, memorySource: "cgroup v1 memory.limit_in_bytes" };
  const constrained = process.constrainedMemory?.() ?? 0;
  if (bounded(constrained)) return { memoryBytes: constrained, memorySource: "process.constrainedMemory()" };
  return null;
}

function detectCpus(read: ReadFile, limits: MachineLimits): { cpus: number; cpuSource: string } {
  const visible = os.availableParallelism();
  if (limits.cpus !== undefined) return { cpus: limits.cpus, cpuSource: "CPUS" };
  const cores = (quota: number) => Math.max(1, Math.min(visible, Math.floor(quota)));
  const dirs = cgroupDirs(read, "cpu");
  const v2 = dirs.v2.flatMap((dir) => {
    const [quota, period] = (read(`${dir}/cpu.max`) ?? "").split(/\s+/);
    return quota && quota !== "max" && Number(period) > 0 ? [Number(quota) / Number(period)] : [];
  });
  if (v2.length > 0) return { cpus: cores(Math.min(...v2)), cpuSource: "cgroup v2 cpu.max" };
  const v1 = dirs.v1.flatMap((dir) => {
    const quota = Number(read(`${dir}/cpu.cfs_quota_us`));
    const period = Number(read(`${dir}/cpu.cfs_period_us`));
    return quota > 0 && period > 0 ? [quota / period] : [];
  });
  if (v1.length > 0) return { cpus: cores(Math.min(...v1)), cpuSource: "cgroup v1 cpu.cfs_quota_us" };
  return { cpus: visible, cpuSource: "os.availableParallelism()" };
}

const UNITS: Record<string, number> = { b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** "8GiB", "512MiB", "2g", "1073741824" -> bytes. */
export function parseBytes(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = match?.[2]?.toLowerCase() || "b";
  const factor = UNITS[unit];
  if (!match || factor === undefined) throw new Error(`not a size: "${text}" (use e.g. 8GiB, 512MiB, 2g)`);
  return positive(Math.round(Number(match[1]) * factor), text);
}

/** A machine's memory: a size as parseBytes reads it, refused below 64 MiB, where a bare number was surely meant in another unit. */
export function parseMemory(text: string): number {
  const bytes = parseBytes(text);
  if (bytes < 64 * 2 ** 20) throw new Error(`"${text}" is ${bytes} bytes, too little for a machine's memory: give a unit (e.g. 8GiB, 512MiB)`);
  return bytes;
}

function positive(n: number, what: string): number {
  if (!(n > 0) || !Number.isFinite(n)) throw new Error(`${what} must be a positive number`);
  return n;
}

export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}
