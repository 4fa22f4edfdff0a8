import { spawn } from "node:child_process";
import { belowService, resolveFfmpeg, untrustedInputArgs } from "./ffmpeg.ts";

/**
 * The duration a container declares, for progress reporting only: it can be wrong (VBR estimates,
 * a longer video track), so nothing is decided on it. null when ffmpeg reports none.
 */
export async function probeDurationSeconds(path: string): Promise<number | null> {
  const ffmpeg = (await resolveFfmpeg()).path;
  const stderr = await new Promise<string>((resolve) => {
    const child = belowService(spawn(ffmpeg, ["-hide_banner", "-nostdin", ...untrustedInputArgs(path)], { stdio: ["ignore", "ignore", "pipe"] }));
    let text = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (text = (text + d).slice(-16_384)));
    child.on("close", () => resolve(text));
    child.on("error", () => resolve(""));
  });
  const match = /Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)/.exec(stderr);
  return match ? Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]) : null;
}
