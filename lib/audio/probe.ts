import { stat } from "node:fs/promises";
import { assertDecodesWithin, FFMPEG_STALL_MS, FfmpegFailure, killGuard, resolveFfmpeg, stallFailure, untrustedInputArgs } from "./ffmpeg.ts";
import { plainWav } from "./wav.ts";
import { processLauncher } from "./process-launcher.ts";

/**
 * The duration a container declares, for progress and as a hint: it can be wrong (VBR estimates,
 * a longer video track), so nothing is decided on it alone. null when ffmpeg reports none. ffmpeg writes
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

/**
 * Below this many bits a second of a file's size, nothing declares the file longer than it can be:
 * the speech codecs ffmpeg reads go down to about 2 kb/s (Codec2 and digital silence go lower, and
 * are then refused as a transcription reaches the limit, as before).
 */
const LEAST_BITS_PER_SECOND = 1000;

/**
 * Refuses audio longer than `maxDurationSeconds` long before a transcription reading it would reach
 * the limit (for a 5-hour podcast, after its first 4 hours of transcription). A WAV in Whisper's
 * format says its length exactly (decodeToPcm refuses it); a file too small to last that long passes
 * at once; for any other, a container declaring more than the limit is decoded without
 * transcribing, and refused if it really is longer: a declared duration alone decides nothing (a
 * VBR mp3 without a TOC can declare four times its length). `declaredSeconds`: the caller's probe
 * of the same file, so it is not probed twice.
 */
export async function assertWithinDuration(
  path: string,
  maxDurationSeconds: number,
  { signal, declaredSeconds }: { signal?: AbortSignal; declaredSeconds?: number | null } = {},
): Promise<void> {
  if ((await stat(path)).size * 8 < maxDurationSeconds * LEAST_BITS_PER_SECOND || (await plainWav(path))) return;
  let declared: number | null;
  try {
    declared = declaredSeconds === undefined ? await probeDurationSeconds(path, { signal }) : declaredSeconds;
  } catch (err) {
    // A file ffmpeg gets no further with fails as the transcription's own decode reads it.
    if (signal?.aborted) throw err;
    return;
  }
  if (declared !== null && declared > maxDurationSeconds) await assertDecodesWithin(path, maxDurationSeconds, { signal });
}
