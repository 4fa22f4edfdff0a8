import os from "node:os";
import { describe, expect, it } from "vitest";
import { detectMachine, formatBytes, parseBytes, type ReadFile } from "./machine.ts";

const GiB = 2 ** 30;
const MiB = 2 ** 20;

/** A fake /sys/fs/cgroup: only the given files exist. */
function files(contents: Record<string, string>): ReadFile {
  return (path) => contents[path] ?? null;
}

const V2_MEMORY = "/sys/fs/cgroup/memory.max";
const V2_CPU = "/sys/fs/cgroup/cpu.max";
const V1_MEMORY = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
const V1_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us";
const V1_PERIOD = "/sys/fs/cgroup/cpu/cpu.cfs_period_us";

describe("detectMachine", () => {
  it("reads memory and cpus from cgroup v2, flooring a fractional cpu quota", () => {
    const machine = detectMachine({}, files({ [V2_MEMORY]: "2147483648", [V2_CPU]: "150000 100000" }));
    expect(machine).toEqual({
      memoryBytes: 2 * GiB,
      memorySource: "cgroup v2 memory.max",
      cpus: 1,
      cpuSource: "cgroup v2 cpu.max",
    });
  });

  it("gives at least one cpu when the cgroup quota is below one core", () => {
    const machine = detectMachine({}, files({ [V2_CPU]: "50000 100000" }));
    expect(machine.cpus).toBe(1);
    expect(machine.cpuSource).toBe("cgroup v2 cpu.max");
  });

  it("falls through to cgroup v1 when cgroup v2 says max", () => {
    const machine = detectMachine(
      {},
      files({
        [V2_MEMORY]: "max",
        [V2_CPU]: "max 100000",
        [V1_MEMORY]: String(512 * MiB),
        [V1_QUOTA]: "100000",
        [V1_PERIOD]: "100000",
      }),
    );
    expect(machine).toEqual({
      memoryBytes: 512 * MiB,
      memorySource: "cgroup v1 memory.limit_in_bytes",
      cpus: 1,
      cpuSource: "cgroup v1 cpu.cfs_quota_us",
    });
  });

  it("holds to a limit set on a cgroup above its own (a systemd slice, a pod), the tightest of them, in cgroup v1", () => {
    // As on a host that runs the service in a cgroup of its own, without a cgroup namespace.
    const machine = detectMachine(
      {},
      files({
        "/proc/self/cgroup": "9:pids:/\n4:memory:/jobs/slotscribe\n2:cpu,cpuacct:/jobs/slotscribe\n0::/",
        "/sys/fs/cgroup/memory/jobs/slotscribe/memory.limit_in_bytes": "9223372036854771712",
        "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes": String(640 * MiB),
        [V1_MEMORY]: "9223372036854771712",
        "/sys/fs/cgroup/cpu/jobs/slotscribe/cpu.cfs_quota_us": "100000",
        "/sys/fs/cgroup/cpu/jobs/slotscribe/cpu.cfs_period_us": "100000",
        [V1_QUOTA]: "-1",
        [V1_PERIOD]: "100000",
      }),
    );
    expect(machine).toEqual({ memoryBytes: 640 * MiB, memorySource: "cgroup v1 memory.limit_in_bytes", cpus: 1, cpuSource: "cgroup v1 cpu.cfs_quota_us" });
  });

  it("holds to the tightest limit of its own cgroup and those above it in cgroup v2", () => {
    const machine = detectMachine(
      {},
      files({
        "/proc/self/cgroup": "0::/system.slice/slotscribe.service",
        "/sys/fs/cgroup/system.slice/slotscribe.service/memory.max": String(2 * GiB),
        "/sys/fs/cgroup/system.slice/memory.max": String(GiB),
        [V2_MEMORY]: "max",
        "/sys/fs/cgroup/system.slice/slotscribe.service/cpu.max": "max 100000",
        "/sys/fs/cgroup/system.slice/cpu.max": "100000 100000",
      }),
    );
    expect(machine).toEqual({ memoryBytes: GiB, memorySource: "cgroup v2 memory.max", cpus: 1, cpuSource: "cgroup v2 cpu.max" });
  });

  it("reads cgroup v1 limits when there are no cgroup v2 files", () => {
    const machine = detectMachine({}, files({ [V1_MEMORY]: String(3 * GiB), [V1_QUOTA]: "100000", [V1_PERIOD]: "100000" }));
    expect(machine.memoryBytes).toBe(3 * GiB);
    expect(machine.memorySource).toBe("cgroup v1 memory.limit_in_bytes");
    expect(machine.cpus).toBe(1);
    expect(machine.cpuSource).toBe("cgroup v1 cpu.cfs_quota_us");
  });

  it("treats cgroup v1's near-2^63 memory limit and -1 cpu quota as no limit", () => {
    const machine = detectMachine({}, files({ [V1_MEMORY]: "9223372036854771712", [V1_QUOTA]: "-1", [V1_PERIOD]: "100000" }));
    expect(["process.constrainedMemory()", "os.totalmem()"]).toContain(machine.memorySource);
    expect(machine.memoryBytes).toBeGreaterThan(0);
    expect(machine.memoryBytes).toBeLessThanOrEqual(os.totalmem());
    expect(machine).toMatchObject({ cpus: os.availableParallelism(), cpuSource: "os.availableParallelism()" });
  });

  it("takes a cgroup memory limit above the machine's memory as no limit: the machine runs out first", () => {
    for (const read of [files({ [V2_MEMORY]: String(2 ** 50) }), files({ [V1_MEMORY]: String(os.totalmem() + GiB) })]) {
      const machine = detectMachine({}, read);
      expect(["process.constrainedMemory()", "os.totalmem()"]).toContain(machine.memorySource);
      expect(machine.memoryBytes).toBeLessThanOrEqual(os.totalmem());
    }
  });

  it("falls back to what the process can see when there are no cgroup files at all", () => {
    const machine = detectMachine({}, files({}));
    expect(["process.constrainedMemory()", "os.totalmem()"]).toContain(machine.memorySource);
    expect(machine.memoryBytes).toBeLessThanOrEqual(os.totalmem());
    expect(machine).toMatchObject({ cpus: os.availableParallelism(), cpuSource: "os.availableParallelism()" });
  });

  it("never reports more cpus than the process can see, whatever the cgroup quota says", () => {
    const visible = os.availableParallelism();
    const huge = String((visible + 64) * 100000);
    expect(detectMachine({}, files({ [V2_CPU]: `${huge} 100000` })).cpus).toBe(visible);
    expect(detectMachine({}, files({ [V1_QUOTA]: huge, [V1_PERIOD]: "100000" })).cpus).toBe(visible);
  });

  it("lets MEMORY_LIMIT lower the cgroup limit, never raise it: above it, the cgroup's limit is planned for, with a warning", () => {
    const read = files({ [V2_MEMORY]: String(2 * GiB) });
    expect(detectMachine({ MEMORY_LIMIT: "1GiB" }, read)).toEqual(expect.objectContaining({ memoryBytes: GiB, memorySource: "MEMORY_LIMIT" }));
    const above = detectMachine({ MEMORY_LIMIT: "8GiB" }, read);
    expect(above).toMatchObject({ memoryBytes: 2 * GiB, memorySource: "cgroup v2 memory.max", memoryWarning: expect.stringMatching(/MEMORY_LIMIT \(8\.0 GiB\) is above/) });
    // Without a cgroup limit, the machine's memory bounds it the same way.
    expect(detectMachine({ MEMORY_LIMIT: "64TiB" }, files({})).memorySource).toBe("os.totalmem()");
  });

  it("uses FLY_VM_MEMORY_MB (mebibytes) and MEMORY_LIMIT over it, both within the cgroup limit", () => {
    const read = files({ [V2_MEMORY]: String(8 * GiB) });
    expect(detectMachine({ FLY_VM_MEMORY_MB: "4096" }, read)).toMatchObject({ memoryBytes: 4 * GiB, memorySource: "FLY_VM_MEMORY_MB" });
    expect(detectMachine({ FLY_VM_MEMORY_MB: "4096", MEMORY_LIMIT: "1GiB" }, read)).toMatchObject({
      memoryBytes: GiB,
      memorySource: "MEMORY_LIMIT",
    });
    expect(detectMachine({ FLY_VM_MEMORY_MB: "16384" }, read)).toMatchObject({ memoryBytes: 8 * GiB, memoryWarning: expect.stringContaining("FLY_VM_MEMORY_MB") });
  });

  it("lets CPUS override the cgroup quota, even beyond the visible cores", () => {
    const machine = detectMachine({ CPUS: "3" }, files({ [V2_CPU]: "100000 100000" }));
    expect(machine).toMatchObject({ cpus: 3, cpuSource: "CPUS" });
    expect(detectMachine({ CPUS: "512" }, files({})).cpus).toBe(512);
  });

  it("rounds a fractional CPUS down to whole cores, keeping at least one", () => {
    expect(detectMachine({ CPUS: "2.5" }, files({})).cpus).toBe(2);
    expect(detectMachine({ CPUS: "0.5" }, files({})).cpus).toBe(1);
  });

  it("refuses a bad MEMORY_LIMIT, FLY_VM_MEMORY_MB or CPUS instead of guessing", () => {
    expect(() => detectMachine({ MEMORY_LIMIT: "lots" }, files({}))).toThrow(/not a size/);
    // A bare number is bytes: too little to be anyone's meaning.
    expect(() => detectMachine({ MEMORY_LIMIT: "2048" }, files({}))).toThrow(/give a unit/);
    expect(() => detectMachine({ FLY_VM_MEMORY_MB: "lots" }, files({}))).toThrow(/FLY_VM_MEMORY_MB/);
    expect(() => detectMachine({ CPUS: "0" }, files({}))).toThrow(/CPUS/);
    expect(() => detectMachine({ CPUS: "many" }, files({}))).toThrow(/CPUS/);
  });
});

describe("parseBytes", () => {
  it.each([
    ["1073741824", GiB],
    ["512b", 512],
    ["8GiB", 8 * GiB],
    ["512MiB", 512 * MiB],
    ["64KiB", 64 * 1024],
    ["1TiB", 2 ** 40],
    ["2g", 2e9],
    ["2GB", 2e9],
    ["300mb", 300e6],
    ["300M", 300e6],
    ["10k", 10e3],
    ["1.5GiB", 1.5 * GiB],
    [" 8 GiB ", 8 * GiB],
  ])("reads %j as %d bytes", (text, bytes) => {
    expect(parseBytes(text)).toBe(bytes);
  });

  it.each(["", "GiB", "8 parsecs", "-1GiB", "1e9", "8GiB extra", "0", "0MiB"])("refuses %j", (text) => {
    expect(() => parseBytes(text)).toThrow();
  });

  it("names the bad value and shows examples in its error", () => {
    expect(() => parseBytes("8 parsecs")).toThrow(/"8 parsecs".*8GiB/);
  });
});

describe("formatBytes", () => {
  it("shows GiB with one decimal from 1 GiB up and whole MiB below", () => {
    expect(formatBytes(8 * GiB)).toBe("8.0 GiB");
    expect(formatBytes(1.5 * GiB)).toBe("1.5 GiB");
    expect(formatBytes(512 * MiB)).toBe("512 MiB");
  });
});
