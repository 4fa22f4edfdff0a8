/**
 * Test support only: an ffmpeg that gets no further with any file, as ffmpeg stuck on a pathological
 * input does. It writes `outputBytes` zero bytes to stdout (silent float samples), then waits, writing
 * nothing more, until it is killed or `seconds` pass. Point FFMPEG_PATH or an `ffmpegPath` option at it.
 */
import { randomUUID } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export async function stuckFfmpeg(dir: string, { outputBytes = 0, seconds = 60 } = {}): Promise<string> {
  const path = join(dir, `stuck-ffmpeg-${randomUUID()}`);
  // exec: the process the launcher kills is the one that waits, and no child of it holds the pipes open.
  const output = outputBytes > 0 ? `head -c ${outputBytes} /dev/zero\n` : "";
  await writeFile(path, `#!/bin/sh\necho $$ > "$0.pid"\n${output}exec sleep ${seconds}\n`, { mode: 0o755 });
  return path;
}

/** The process id of the stuck ffmpeg at `path`, once it has started (waiting up to `timeoutMs` for it). */
export async function stuckFfmpegPid(path: string, timeoutMs = 10_000): Promise<number> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const text = await readFile(`${path}.pid`, "utf8").catch(() => "");
    if (text.trim()) return Number(text);
    if (Date.now() > deadline) throw new Error(`${path} did not start within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw err;
  }
}
