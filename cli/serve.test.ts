import { afterEach, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../lib/config.ts";
import { serveCommand, serveEnv } from "./serve.ts";

const ENV = { API_KEYS: "sk-test", ROLE: "all" };
const neverStarted = () => Promise.reject(new Error("the server must not start"));

afterEach(() => {
  vi.restoreAllMocks();
});

describe("slotscribe serve's options", () => {
  it("leave the environment as it is when none is given", () => {
    expect(serveEnv([], ENV)).toBe(ENV);
  });

  it("--role sets ROLE over the environment's, in either spelling", () => {
    expect(serveEnv(["--role", "worker"], ENV)).toEqual({ ...ENV, ROLE: "worker" });
    expect(serveEnv(["--role=api"], ENV)).toEqual({ ...ENV, ROLE: "api" });
    expect(ENV.ROLE).toBe("all");
  });

  it("leave the role to the config's validation, which names the setting", () => {
    expect(() => loadConfig(serveEnv(["--role", "boss"], ENV))).toThrow(/ROLE:/);
  });

  it("refuse an unknown option or a stray argument with status 2 and the usage, before starting anything", async () => {
    const printed = vi.spyOn(console, "error").mockImplementation(() => undefined);
    expect(await serveCommand(["--rol", "api"], neverStarted)).toBe(2);
    expect(await serveCommand(["api"], neverStarted)).toBe(2);
    expect(printed.mock.calls.map(([message]) => String(message))).toEqual([
      expect.stringContaining("slotscribe serve [--role all|api|worker]"),
      expect.stringContaining("slotscribe serve [--role"),
    ]);
  });

  it("--help and -h print the usage on stdout and exit 0, starting nothing", async () => {
    const printed = vi.spyOn(console, "log").mockImplementation(() => undefined);
    const errors = vi.spyOn(console, "error").mockImplementation(() => undefined);
    expect(await serveCommand(["--help"], neverStarted)).toBe(0);
    expect(await serveCommand(["-h"], neverStarted)).toBe(0);
    expect(printed.mock.calls.map(([message]) => String(message))).toEqual(Array(2).fill(expect.stringMatching(/^slotscribe serve \[--role all\|api\|worker\]\n/)));
    expect(errors).not.toHaveBeenCalled();
  });

  it("refuse a bad role with status 1, like any other bad setting", async () => {
    const printed = vi.spyOn(console, "error").mockImplementation(() => undefined);
    expect(await serveCommand(["--role", "boss"], neverStarted)).toBe(1);
    expect(String(printed.mock.calls[0]?.[0])).toMatch(/refusing to start.*\n.*ROLE:/s);
  });
});

describe("slotscribe serve's stop", () => {
  it("exits 1 when the shutdown it was asked for fails, and takes its signal handlers with it", async () => {
    vi.stubEnv("API_KEYS", "sk-test");
    vi.stubEnv("LOG_LEVEL", "silent");
    const failingClose = async () => ({ close: () => Promise.reject(new Error("the launcher would not stop")) });
    const before = { term: process.listeners("SIGTERM"), hup: process.listenerCount("SIGHUP") };
    const serving = serveCommand([], failingClose);
    // Its own handler only: the test runner's, if any, are not called.
    const handler = await vi.waitFor(() => {
      const added = process.listeners("SIGTERM").find((l) => !before.term.includes(l));
      expect(added).toBeDefined();
      return added!;
    });
    handler("SIGTERM");
    expect(await serving).toBe(1);
    // Its handlers go with it.
    expect(process.listenerCount("SIGHUP")).toBe(before.hup);
    vi.unstubAllEnvs();
  });
});
