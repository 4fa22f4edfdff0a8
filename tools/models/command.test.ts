import { afterEach, describe, expect, it, vi } from "vitest";
import { modelsCommand } from "./command.ts";

describe("slotscribe models", () => {
  afterEach(() => vi.restoreAllMocks());

  async function run(argv: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
    const stderr: string[] = [];
    const stdout: string[] = [];
    vi.spyOn(console, "error").mockImplementation((line: unknown) => void stderr.push(String(line)));
    vi.spyOn(console, "log").mockImplementation((line: unknown) => void stdout.push(String(line)));
    const code = await modelsCommand(argv);
    return { code, stderr: stderr.join("\n"), stdout: stdout.join("\n") };
  }

  it("answers a mistyped flag or value with its usage and exit 2, not a stack", async () => {
    const unknown = await run(["generate", "micro", "--bogus"]);
    expect(unknown).toMatchObject({ code: 2, stderr: expect.stringMatching(/^slotscribe models: Unknown option '--bogus'[\s\S]*slotscribe models generate </) });
    const notANumber = await run(["generate", "micro", "--tokens-per-window", "abc"]);
    expect(notANumber).toMatchObject({ code: 2, stderr: expect.stringContaining('--tokens-per-window must be a positive whole number, got "abc"') });
  });

  it("prints its help on stdout, as the other commands do", async () => {
    expect(await run(["--help"])).toMatchObject({ code: 0, stdout: expect.stringContaining("slotscribe models generate"), stderr: "" });
  });

  it("fails with the reason, and ends, for a folder it cannot create (recursive mkdir never returned under /proc)", async () => {
    const result = await run(["generate", "micro", "--out", "/proc/slotscribe-no-such-folder"]);
    expect(result).toMatchObject({ code: 1, stderr: expect.stringMatching(/^slotscribe models: ENOENT.*\/proc\/slotscribe-no-such-folder/m) });
  });
});
