import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");

/** `slotscribe capacity` as a user runs it, in its own process. */
function capacity(args: string[], env: Record<string, string> = {}, shell?: string) {
  const command = [process.execPath, "--import", "tsx", join(ROOT, "bin", "main.ts"), "capacity", ...args];
  const run = shell
    ? spawnSync("sh", ["-c", `${command.map((c) => `'${c}'`).join(" ")} ${shell}`], { cwd: ROOT, env: { ...process.env, ...env }, encoding: "utf8" })
    : spawnSync(command[0]!, command.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, encoding: "utf8" });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

interface Row {
  model: string;
  dtype: string;
  loadedBytes: number;
  perSlotBytes: number;
  slots: number;
  fits: boolean;
  threads: number;
  realtime: number;
}

describe("slotscribe capacity", () => {
  it("plans in numbers with --json, for the machine the flags describe and the service's MODEL_DTYPE", () => {
    const out = capacity(["--memory", "8GiB", "--cpus", "4", "--json"], { MODEL_DTYPE: "fp32" });
    expect(out.status, out.stderr).toBe(0);
    const { machine, rows } = JSON.parse(out.stdout) as { machine: { memoryBytes: number; cpus: number }; rows: Row[] };
    expect(machine).toMatchObject({ memoryBytes: 8 * 2 ** 30, cpus: 4 });
    const tiny = rows.find((r) => r.model === "tiny")!;
    expect(tiny).toMatchObject({ dtype: "fp32", fits: true, threads: 4 });
    expect(tiny.slots).toBeGreaterThan(0);
    expect(tiny.loadedBytes).toBeGreaterThan(tiny.perSlotBytes);
    for (const row of rows) expect(Number.isInteger(row.loadedBytes) && Number.isInteger(row.perSlotBytes), row.model).toBe(true);
    // The flag wins over the environment.
    const q8 = JSON.parse(capacity(["--memory", "8GiB", "--cpus", "4", "--json", "--dtype", "q8"], { MODEL_DTYPE: "fp32" }).stdout) as { rows: Row[] };
    expect(q8.rows.find((r) => r.model === "tiny")!.loadedBytes).toBeLessThan(tiny.loadedBytes);
  });

  it("shows a model that does not fit with the memory it needs", () => {
    const out = capacity(["--memory", "400MiB", "--cpus", "2"]);
    expect(out.status).toBe(0);
    expect(out.stdout).toMatch(/^tiny .* none \(needs \d+ MiB\)/m);
    expect(out.stdout).toMatch(/refuses to start/);
  });

  it.each([
    [["--bogus"], /--bogus/],
    [["--memory"], /--memory/],
    [["extra"], /extra/],
    [["--memory", "lots"], /--memory: .*lots/],
    [["--memory", "8"], /--memory: "8" is 8 bytes.*give a unit/],
    [["--cpus", "0"], /--cpus must be a positive number/],
    [["--cpus=-1"], /--cpus must be a positive number/],
    [["--dtype", "int4"], /--dtype is q8 or fp32/],
  ])("refuses %j with a message and the usage, exit 2, no stack trace", (args, message) => {
    const out = capacity(args);
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(message);
    expect(out.stderr).toContain("slotscribe capacity [--memory");
    expect(out.stderr).not.toMatch(/\n\s+at /);
  });

  it("prints tidy text: one cpu in the singular, no trailing spaces, a bad flag named once", () => {
    const out = capacity(["--memory", "8GiB", "--cpus", "1"]);
    expect(out.status).toBe(0);
    expect(out.stdout).toMatch(/^machine: 8.0 GiB \(--memory\), 1 cpu \(--cpus\)$/m);
    expect(out.stdout.split("\n").filter((line) => line !== line.trimEnd())).toEqual([]);
    const bad = capacity(["--cpus", "0"]);
    expect(bad.stderr).toMatch(/^slotscribe: --cpus must be a positive number/);
  });

  it("names a bad setting in the environment it reads", () => {
    const out = capacity([], { MEMORY_LIMIT: "bogus" });
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/bogus/);
    expect(out.stderr).not.toMatch(/\n\s+at /);
  });

  it("stops quietly when its reader does (| head)", () => {
    const out = capacity([], {}, "| head -1");
    expect(out.status).toBe(0);
    expect(out.stdout).toMatch(/^machine: /);
    expect(out.stderr).toBe("");
  });
});
