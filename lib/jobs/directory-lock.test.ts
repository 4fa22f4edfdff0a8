import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { lockDirectory } from "./directory-lock.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "slotscribe-lock-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Another process holding the directory's lock until it is killed. */
async function otherProcessHolding(dir: string) {
  const source = `import { lockDirectory } from ${JSON.stringify(join(import.meta.dirname, "directory-lock.ts"))}; await lockDirectory(${JSON.stringify(dir)}); console.log("locked"); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", source], { stdio: ["ignore", "pipe", "inherit"] });
  cleanups.push(async () => child.kill("SIGKILL"));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => d.toString().includes("locked") && resolve());
    child.on("exit", (code) => reject(new Error(`the holder exited with ${code}`)));
  });
  return child;
}

describe("a data directory's lock", () => {
  it("refuses a second process while the first lives, naming it, and is taken over once it is killed", async () => {
    const dir = await tempDir();
    const holder = await otherProcessHolding(dir);
    await expect(lockDirectory(dir)).rejects.toThrow(`in use by another slotscribe process (pid ${holder.pid})`);
    const exited = new Promise((resolve) => holder.once("exit", resolve));
    holder.kill("SIGKILL");
    await exited;
    const lock = await lockDirectory(dir);
    await lock.release();
  });

  it("is the same process's again when taken twice (a store reopened), and free once released", async () => {
    const dir = await tempDir();
    const first = await lockDirectory(dir);
    const again = await lockDirectory(dir);
    await again.release();
    await first.release();
    const holder = await otherProcessHolding(dir);
    holder.kill("SIGKILL");
  });

  it("is taken over from a lock file cut short by a crash, or naming a process of another host", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "process.lock"), '{"host":');
    await (await lockDirectory(dir)).release();
    await writeFile(join(dir, "process.lock"), JSON.stringify({ host: "elsewhere", pid: process.ppid, started: null }));
    await (await lockDirectory(dir)).release();
  });
});
