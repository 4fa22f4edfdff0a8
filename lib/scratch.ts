/**
 * Scratch space for spooled uploads, extracted audio and downloaded job media: under DATA_DIR, so
 * a spooled upload reaches the job inputs by a rename on one filesystem, and so what a killed
 * process leaves behind is found again and removed at the next start instead of filling the OS
 * temp dir. Each process works in its own folder, named after its pid.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { ensureDirectory } from "./directories.ts";
import { isAlive } from "./processes.ts";

function scratchRoot(dataDir: string): string {
  return join(dataDir, "tmp");
}

/**
 * Removes the folders of processes that are gone and creates this process's own. A folder is kept
 * only when it names another process that is alive: in a container a restarted server often gets
 * the pid its predecessor had, so a folder with our own pid is a dead process's.
 */
export async function openScratch(dataDir: string): Promise<{ dir: string; swept: number }> {
  const root = scratchRoot(dataDir);
  await ensureDirectory(root);
  let swept = 0;
  for (const name of await readdir(root)) {
    const pid = Number(/^(\d+)-/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) continue;
    await rm(join(root, name), { recursive: true, force: true });
    swept++;
  }
  const dir = join(root, `${process.pid}-${randomBytes(6).toString("hex")}`);
  await mkdir(dir);
  return { dir, swept };
}

/** A file name no client can choose or predict, so two requests never share a path. */
export function scratchName(suffix: string): string {
  return `${randomBytes(12).toString("hex")}${suffix}`;
}
