/**
 * Test support only: stand-ins for ffmpeg getting no further with a file, as it does stuck on a
 * pathological input. Point FFMPEG_PATH or an `ffmpegPath` option at one.
 */
import { randomUUID } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Writes `outputBytes` zero bytes to stdout (silent float samples), then nothing more until it is killed or `seconds` pass. */
export async function stuckFfmpeg(dir: string, { outputBytes = 0, seconds = 60 } = {}): Promise<string> {
  const path = join(dir, `stuck-ffmpeg-${randomUUID()}`);
  // exec: the process the launcher kills is the one that waits, and no child of it holds the pipes open.
  const output = outputBytes > 0 ? `head -c ${outputBytes} /dev/zero\n` : "";
  await writeFile(path, `#!/bin/sh\necho $$ > "$0.pid"\n${output}exec sleep ${seconds}\n`, { mode: 0o755 });
  return path;
}

/**
 * An extraction's ffmpeg (output to a file, `-progress pipe:1`) that leaves part of a file at its
 * output, its last argument, after 1 s of audio, then reports progress every 0.1 s for `seconds`
 * and exits cleanly. Unless `advancing` (0.1 s of audio a report), the report's counts stay put, as
 * ffmpeg 6+ keeps reporting while it gets no further with a file.
 */
export async function progressFfmpeg(dir: string, { advancing = false, seconds = 60 } = {}): Promise<string> {
  const path = join(dir, `progress-ffmpeg-${randomUUID()}`);
  const step = advancing ? 100_000 : 0;
  await writeFile(
    path,
    `#!/bin/sh
echo $$ > "$0.pid"
for output; do :; done
printf partial > "\${output#file:}"
i=0
while [ $i -lt ${Math.round(seconds * 10)} ]; do
  i=$((i + 1))
  printf 'total_size=%d\\nout_time_us=%d\\nprogress=continue\\n' $((4096 + i * ${step / 100})) $((1000000 + i * ${step}))
  sleep 0.1
done
printf 'progress=end\\n'
`,
    { mode: 0o755 },
  );
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
