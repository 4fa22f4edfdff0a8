import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { missingProcessEnv, SERVICE_PROCESS_ENV, withServiceProcessEnv } from "./process-env.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

describe("the service's process environment", () => {
  it("names each setting a glibc process started without, and nothing elsewhere or once set", () => {
    expect(missingProcessEnv({}, true)).toEqual(["MALLOC_ARENA_MAX=1"]);
    expect(missingProcessEnv({ MALLOC_ARENA_MAX: "2" }, true)).toEqual([]);
    expect(missingProcessEnv({}, false)).toEqual([]);
  });

  it("fills in only what the environment leaves unset", () => {
    expect(withServiceProcessEnv({ PORT: "1" })).toEqual({ ...SERVICE_PROCESS_ENV, PORT: "1" });
    expect(withServiceProcessEnv({ MALLOC_ARENA_MAX: "4" }).MALLOC_ARENA_MAX).toBe("4");
  });

  describe("a real `slotscribe serve`", () => {
    const dir = mkdtempSync(join(tmpdir(), "process-env-"));
    // A model directory the start-up check finds, with nothing in it to load.
    mkdirSync(join(dir, "models", "empty"), { recursive: true });
    writeFileSync(join(dir, "models", "empty", "config.json"), "{}");
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    /** The log lines up to "listening" of a service started with `extra` (its model never loads: no weights). */
    async function startupLogs(extra: Record<string, string>): Promise<{ level: number; msg: string; set?: string[] }[]> {
      const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "bin", "main.ts"), "serve"], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          PORT: "0",
          HOST: "127.0.0.1",
          API_KEYS: "k",
          DATA_DIR: join(dir, "data"),
          WHISPER_MODELS_DIR: join(dir, "models"),
          DEFAULT_MODEL: "empty",
          ...extra,
        },
        stdio: ["ignore", "pipe", "inherit"],
      });
      const lines: { level: number; msg: string; set?: string[] }[] = [];
      try {
        for await (const line of createInterface({ input: child.stdout! })) {
          const entry = JSON.parse(line) as { level: number; msg: string };
          lines.push(entry);
          if (entry.msg === "listening") break;
        }
      } finally {
        child.kill("SIGKILL");
      }
      return lines;
    }

    it("warns at start, naming the setting, when started without it, and not when started with it", async () => {
      const without = await startupLogs({});
      expect(without.at(-1)?.msg).toBe("listening");
      expect(without.filter((l) => l.level === 40 && l.msg.includes("process environment"))).toEqual([expect.objectContaining({ set: ["MALLOC_ARENA_MAX=1"] })]);
      const withIt = await startupLogs({ ...SERVICE_PROCESS_ENV });
      expect(withIt.at(-1)?.msg).toBe("listening");
      expect(withIt.some((l) => l.msg.includes("process environment"))).toBe(false);
    }, 60_000);
  });
});
