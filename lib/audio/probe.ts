import { FFMPEG_STALL_MS, FfmpegFailure, killGuard, resolveFfmpeg, stallFailure, untrustedInputArgs } from "./ffmpeg.ts";
import { processLauncher } from "./process-launcher.ts";

/**
 * The duration a container declares, for progress reporting only: it can be wrong (VBR estimates,
 * a longer video track), so nothing is decided on it. null when ffmpeg reports none. ffmpeg writes
 * nothing until it is done, so it gets `stallMs` (FFMPEG_STALL_MS) in all, as decoding gets between
 * samples: then it is killed and the file fails as decoding would. `signal` kills it at once.
 */
export async function probeDurationSeconds(path: string, { signal, stallMs = FFMPEG_STALL_MS }: { signal?: AbortSignal; stallMs?: number } = {}): Promise<number | null> {
  signal?.throwIfAborted();
  const ffmpeg = (await resolveFfmpeg()).path;
  signal?.throwIfAborted();
  const child = await processLauncher.launch(ffmpeg, ["-hide_banner", "-nostdin", ...untrustedInputArgs(path)], { stdout: "ignore" }).catch(() => null);
  if (!child) return null;
  const guard = killGuard(child, stallMs, signal);
  try {
    // Aborted while the launcher was starting ffmpeg.
    signal?.throwIfAborted();
    const output = await child.closed.catch(() => null);
    signal?.throwIfAborted();
    if (guard.stalled && output) throw stallFailure(stallMs, new FfmpegFailure(output, output.stderr));
    const match = /Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)/.exec(output?.stderr ?? "");
    return match ? Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]) : null;
  } finally {
    guard.dispose();
    await child.stop();
  }
}
