import { resolveFfmpeg, untrustedInputArgs } from "./ffmpeg.ts";
import { processLauncher } from "./process-launcher.ts";

/**
 * The duration a container declares, for progress reporting only: it can be wrong (VBR estimates,
 * a longer video track), so nothing is decided on it. null when ffmpeg reports none.
 */
export async function probeDurationSeconds(path: string): Promise<number | null> {
  const ffmpeg = (await resolveFfmpeg()).path;
  const stderr = await processLauncher
    .launch(ffmpeg, ["-hide_banner", "-nostdin", ...untrustedInputArgs(path)], { stdout: "ignore" })
    .then((child) => child.closed)
    .then(
      (output) => output.stderr,
      () => "",
    );
  const match = /Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)/.exec(stderr);
  return match ? Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]) : null;
}
