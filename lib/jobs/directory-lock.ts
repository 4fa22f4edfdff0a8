import { readFileSync } from "node:fs";
import { link, readFile, rename, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { isAlive } from "../processes.ts";

/** Who holds a lock: a process, named so that another process given its pid later is not taken for it. */
interface Holder {
  host: string;
  pid: number;
  /** The process's start time (Linux: /proc/<pid>/stat's starttime and the boot's id); null elsewhere. */
  started: string | null;
}

export interface DirectoryLock {
  release(): Promise<void>;
}

/**
 * Takes `dir`'s lock for this process. One process per job store: a second over the same directory
 * takes the first's running jobs for a crashed process's and runs them again (two runs, two
 * callbacks under two webhook-ids). A lock whose holder is gone (killed, a reboot, a container's
 * earlier pid 1, another host's process, which cannot be looked at from here) is taken over.
 */
export async function lockDirectory(dir: string): Promise<DirectoryLock> {
  const path = join(dir, "process.lock");
  const self: Holder = { host: hostname(), pid: process.pid, started: startedAt(process.pid) };
  const staged = `${path}.${process.pid}.tmp`;
  await writeFile(staged, `${JSON.stringify(self)}\n`);
  try {
    await link(staged, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    const holder = await readHolder(path);
    if (holder && holdsIt(holder)) {
      throw new Error(
        `DATA_DIR ${dir} is in use by another slotscribe process (pid ${holder.pid}): two processes over one job store would each run the other's jobs again. Stop it, or give this one its own DATA_DIR.`,
      );
    }
    await rename(staged, path);
    return { release: () => releaseIfHeld(path, self) };
  }
  await rm(staged, { force: true });
  return { release: () => releaseIfHeld(path, self) };
}

/** Whether the holder is a live process other than this one, on this host. */
function holdsIt(holder: Holder): boolean {
  if (holder.host !== hostname() || holder.pid === process.pid || !isAlive(holder.pid)) return false;
  return holder.started === null || holder.started === startedAt(holder.pid);
}

async function releaseIfHeld(path: string, self: Holder): Promise<void> {
  const holder = await readHolder(path);
  if (holder?.pid === self.pid && holder.host === self.host) await rm(path, { force: true });
}

async function readHolder(path: string): Promise<Holder | null> {
  try {
    const value = JSON.parse(await readFile(path, "utf8")) as Partial<Holder>;
    return typeof value.host === "string" && typeof value.pid === "number" ? { host: value.host, pid: value.pid, started: value.started ?? null } : null;
  } catch {
    // Unreadable (cut short by a crash as it was written): nobody holds it.
    return null;
  }
}

function startedAt(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which may hold spaces and parentheses: starttime is the 22nd field.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    return `${boot}:${fields[19]}`;
  } catch {
    return null;
  }
}
