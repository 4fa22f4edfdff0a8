import { readFile } from "node:fs/promises";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type Command, runCli } from "./run.ts";

const echo: Command = { name: "echo", synopsis: "echo   says what it got", usage: "usage: slotscribe echo", run: async (argv) => argv.length };

describe("the CLI's entry", () => {
  afterEach(() => vi.restoreAllMocks());

  it("prints the release of package.json for --version, -v and version, exit 0", async () => {
    const { version } = JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
    const out = vi.spyOn(console, "log").mockImplementation(() => {});
    for (const flag of ["--version", "-v", "version"]) expect(await runCli([flag], [echo])).toBe(0);
    expect(out.mock.calls).toEqual(Array(3).fill([`slotscribe ${version}`]));
  });

  it("runs the command named, prints every usage for help (on stdout, exit 0) and for anything else (on stderr, exit 2)", async () => {
    const out = vi.spyOn(console, "log").mockImplementation(() => {});
    const err = vi.spyOn(console, "error").mockImplementation(() => {});
    expect(await runCli(["echo", "a", "b"], [echo])).toBe(2);
    expect(err).not.toHaveBeenCalled();
    for (const help of ["help", "--help", "-h"]) expect(await runCli([help], [echo])).toBe(0);
    expect(out.mock.calls).toEqual(Array(3).fill([expect.stringContaining("usage: slotscribe echo")]));
    expect(err).not.toHaveBeenCalled();
    expect(await runCli(["nonsense"], [echo])).toBe(2);
    expect(await runCli([], [echo])).toBe(2);
    expect(err.mock.calls).toEqual(Array(2).fill([expect.stringContaining("usage: slotscribe echo")]));
    // A mistyped command is named before the overview.
    expect(err.mock.calls[0]![0]).toMatch(/^slotscribe: unknown command "nonsense"/);
    expect(err.mock.calls[1]![0]).toMatch(/^usage: slotscribe <command>/);
  });
});
