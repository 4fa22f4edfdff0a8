import { ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { getPriority, tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { encodeWav, synthesize } from "../../tools/audio/synth.ts";
import { PCM_SAMPLE_RATE, readPcm, resolveFfmpeg } from "./ffmpeg.ts";
import { STDOUT_WINDOW_BYTES } from "./launcher-child.ts";
import { ProcessLauncher } from "./process-launcher.ts";

let dir: string;
let ffmpeg: string;
const launcher = new ProcessLauncher();

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "slotscribe-launcher-"));
  ffmpeg = (await resolveFfmpeg()).path;
  await writeFile(path.join(dir, "tone.wav"), encodeWav([synthesize([{ tone: 440, seconds: 1 }])], PCM_SAMPLE_RATE));
});

afterAll(async () => {
  await launcher.close(AbortSignal.timeout(10_000));
  await rm(dir, { recursive: true, force: true });
});

const QUIET = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "error"];
/** Float samples of a tone that never ends, as fast as ffmpeg can make them: only a full pipe stops it. */
const ENDLESS_TONE = [...QUIET, "-f", "lavfi", "-i", `sine=frequency=440:sample_rate=${PCM_SAMPLE_RATE}`, "-f", "f32le", "pipe:1"];
/** A tone in real time that writes nothing, so no broken pipe would end it: only the launcher can. */
const SILENT_FOREVER = [...QUIET, "-re", "-f", "lavfi", "-i", `sine=frequency=440:sample_rate=${PCM_SAMPLE_RATE}`, "-f", "null", "-"];

/** Bytes the process has written so far (Linux). */
function bytesWritten(pid: number): number {
  return Number(/^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"))![1]);
}

/** Alive, not a zombie waiting to be reaped (Linux). */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** The parent of a running process (Linux). */
function parentOf(pid: number): number {
  return Number(/^\d+ \(.*\) \S (\d+) /.exec(readFileSync(`/proc/${pid}/stat`, "utf8"))![1]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function take(chunks: AsyncIterator<Uint8Array>, bytes: number): Promise<number> {
  let taken = 0;
  while (taken < bytes) {
    const next = await chunks.next();
    if (next.done) break;
    taken += next.value.byteLength;
  }
  return taken;
}

describe("ProcessLauncher", () => {
  it("runs ffmpeg below the service's priority, so the thread that answers HTTP gets a core first", async () => {
    const proc = await launcher.launch(ffmpeg, ENDLESS_TONE, { stdout: "stream" });
    try {
      expect(getPriority(proc.pid)).toBe(Math.min(19, getPriority() + 5));
    } finally {
      await proc.stop();
    }
  });

  it.skipIf(process.platform !== "linux")("holds back a child whose output is not read, and lets it go on as it is read", async () => {
    const proc = await launcher.launch(ffmpeg, ENDLESS_TONE, { stdout: "stream" });
    try {
      const chunks = proc.stdout[Symbol.asyncIterator]();
      await take(chunks, 1);
      await sleep(300);
      const held = bytesWritten(proc.pid);
      await sleep(200);
      // Blocked on a full pipe: the window, the pipe and the streams' buffers, not a growing file.
      expect(bytesWritten(proc.pid)).toBe(held);
      expect(held).toBeLessThan(STDOUT_WINDOW_BYTES + 1024 * 1024);
      expect(isRunning(proc.pid)).toBe(true);
      expect(await take(chunks, 8 * STDOUT_WINDOW_BYTES)).toBeGreaterThanOrEqual(8 * STDOUT_WINDOW_BYTES);
      expect(bytesWritten(proc.pid)).toBeGreaterThan(8 * STDOUT_WINDOW_BYTES);
    } finally {
      await proc.stop();
    }
    expect(isRunning(proc.pid)).toBe(false);
  });

  it("reports the exit code and the end of stderr of a failed run", async () => {
    const proc = await launcher.launch(ffmpeg, [...QUIET, "-i", path.join(dir, "missing.wav"), "-f", "null", "-"], { stdout: "ignore" });
    const output = await proc.closed;
    expect(output.code).not.toBe(0);
    expect(output.signal).toBeNull();
    expect(output.stderr).toContain("missing.wav");
    expect(await proc.exited).toEqual({ code: output.code, signal: null });
  });

  it("reports a clean exit with the end of stdout in tail mode", async () => {
    const args = [...QUIET, "-progress", "pipe:1", "-i", path.join(dir, "tone.wav"), "-f", "null", "-"];
    const output = await (await launcher.launch(ffmpeg, args, { stdout: "tail" })).closed;
    expect(output).toMatchObject({ code: 0, signal: null, stderr: "" });
    expect(output.stdout).toMatch(/progress=end\s*$/);
  });

  it("kills a child with the signal asked for and reports it", async () => {
    const proc = await launcher.launch(ffmpeg, ENDLESS_TONE, { stdout: "ignore" });
    expect(proc.running).toBe(true);
    proc.kill("SIGKILL");
    await expect(proc.closed).resolves.toMatchObject({ code: null, signal: "SIGKILL" });
    expect(proc.running).toBe(false);
    expect(isRunning(proc.pid)).toBe(false);
  });

  it("stops a child whose output nobody reads, and discards that output", async () => {
    const proc = await launcher.launch(ffmpeg, ENDLESS_TONE, { stdout: "stream" });
    await sleep(100);
    await proc.stop();
    expect(isRunning(proc.pid)).toBe(false);
    await expect(proc.closed).resolves.toMatchObject({ signal: "SIGKILL" });
  });

  it("feeds stdin and streams stdout", async () => {
    const wav = await readFile(path.join(dir, "tone.wav"));
    const proc = await launcher.launch(ffmpeg, [...QUIET, "-i", "pipe:0", "-f", "f32le", "pipe:1"], { stdin: wav, stdout: "stream" });
    expect(await take(proc.stdout[Symbol.asyncIterator](), Number.POSITIVE_INFINITY)).toBe(PCM_SAMPLE_RATE * Float32Array.BYTES_PER_ELEMENT);
    await expect(proc.closed).resolves.toMatchObject({ code: 0 });
    // Cloned for the launcher, not taken from the caller.
    expect(wav.byteLength).toBeGreaterThan(0);
  });

  it("rejects with spawn's error when the program cannot be started", async () => {
    const missing = path.join(dir, "no-such-ffmpeg");
    await expect(launcher.launch(missing, [], { stdout: "ignore" })).rejects.toMatchObject({ code: "ENOENT", path: missing });
  });

  it("starts many children at once without the service ever spawning one", async () => {
    // The shared launcher is forked by its first use: the one spawn the service makes.
    await readPcm(path.join(dir, "tone.wav"));
    // spawn() starts every child through this method, which Node's typings leave out.
    const spawnHere = vi.spyOn(ChildProcess.prototype as unknown as { spawn: () => void }, "spawn");
    try {
      const decoded = await Promise.all(Array.from({ length: 30 }, () => readPcm(path.join(dir, "tone.wav"))));
      for (const samples of decoded) expect(samples.length).toBe(PCM_SAMPLE_RATE);
      expect(spawnHere).not.toHaveBeenCalled();
    } finally {
      spawnHere.mockRestore();
    }
  });

  it("close() lets the children already started finish, then ends the launcher; the next launch starts a new one", async () => {
    const own = new ProcessLauncher();
    const proc = await own.launch(ffmpeg, [...QUIET, "-i", path.join(dir, "tone.wav"), "-f", "f32le", "pipe:1"], { stdout: "stream" });
    const closing = own.close(new AbortController().signal);
    expect(await take(proc.stdout[Symbol.asyncIterator](), Number.POSITIVE_INFINITY)).toBe(PCM_SAMPLE_RATE * Float32Array.BYTES_PER_ELEMENT);
    await expect(proc.closed).resolves.toMatchObject({ code: 0 });
    await closing;
    const again = await own.launch(ffmpeg, [...QUIET, "-version"], { stdout: "tail" });
    await expect(again.closed).resolves.toMatchObject({ code: 0 });
    await own.close(new AbortController().signal);
  });

  it("close() kills the children still running once its deadline has passed, and ends the launcher", async () => {
    const own = new ProcessLauncher();
    const proc = await own.launch(ffmpeg, SILENT_FOREVER, { stdout: "ignore" });
    const outcome = await Promise.race([own.close(AbortSignal.timeout(200)).then(() => "closed"), sleep(10_000).then(() => "still waiting")]);
    expect(outcome).toBe("closed");
    await expect.poll(() => isRunning(proc.pid), { timeout: 10_000 }).toBe(false);
  });

  it("ends with the service, even killed, and takes the children it started with it", async () => {
    const script = path.join(dir, "killed.mts");
    const launcherModule = JSON.stringify(path.resolve(import.meta.dirname, "process-launcher.ts"));
    await writeFile(
      script,
      `import { processLauncher } from ${launcherModule};\nconst p = await processLauncher.launch(${JSON.stringify(ffmpeg)}, ${JSON.stringify(SILENT_FOREVER)}, { stdout: "ignore" });\nconsole.log(p.pid);\nsetInterval(() => {}, 1000);\n`,
    );
    const service = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["ignore", "pipe", "inherit"] });
    const pid = await new Promise<number>((resolve) => service.stdout.setEncoding("utf8").once("data", (text: string) => resolve(Number(text.trim()))));
    expect(isRunning(pid)).toBe(true);
    service.kill("SIGKILL");
    await expect.poll(() => isRunning(pid), { timeout: 10_000 }).toBe(false);
  });

  it("outlives a SIGINT or SIGTERM to the service's whole process group (Ctrl-C), not the service itself", async () => {
    const script = path.join(dir, "group.mts");
    const launcherModule = JSON.stringify(path.resolve(import.meta.dirname, "process-launcher.ts"));
    // A service that drains on those signals, as slotscribe serve does.
    await writeFile(
      script,
      `import { processLauncher } from ${launcherModule};\nfor (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => {});\nconst p = await processLauncher.launch(${JSON.stringify(ffmpeg)}, ${JSON.stringify(SILENT_FOREVER)}, { stdout: "ignore" });\nconsole.log(p.pid);\nsetInterval(() => {}, 1000);\n`,
    );
    const service = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["ignore", "pipe", "inherit"], detached: true });
    const pid = await new Promise<number>((resolve) => service.stdout.setEncoding("utf8").once("data", (text: string) => resolve(Number(text.trim()))));
    const launcherPid = parentOf(pid);
    try {
      for (const signal of ["SIGINT", "SIGTERM"] as const) process.kill(-service.pid!, signal);
      await sleep(500);
      expect({ ffmpeg: isRunning(pid), launcher: isRunning(launcherPid) }).toEqual({ ffmpeg: true, launcher: true });
    } finally {
      service.kill("SIGKILL");
    }
    await expect.poll(() => isRunning(pid) || isRunning(launcherPid), { timeout: 10_000 }).toBe(false);
  });

  it("does not keep a short script alive once its children are done", async () => {
    const script = path.join(dir, "read.mts");
    await writeFile(script, `import { readPcm } from ${JSON.stringify(path.resolve(import.meta.dirname, "ffmpeg.ts"))};\nconsole.log((await readPcm(process.argv[2])).length);\n`);
    const child = spawn(process.execPath, ["--import", "tsx", script, path.join(dir, "tone.wav")], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => (out += text));
    const code = await new Promise((resolve) => child.on("close", resolve));
    expect({ code, out: out.trim() }).toEqual({ code: 0, out: String(PCM_SAMPLE_RATE) });
  });
});
