import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ensureDirectory, explainAccess } from "./directories.ts";

const made: string[] = [];
afterAll(() => Promise.all(made.map((dir) => rm(dir, { recursive: true, force: true }))));

describe("ensureDirectory", () => {
  it("creates the missing levels, accepts one that exists, and refuses where a level cannot be made", async () => {
    const root = await mkdtemp(join(tmpdir(), "slotscribe-dirs-"));
    made.push(root);
    await ensureDirectory(join(root, "a", "b", "c"));
    await ensureDirectory(join(root, "a", "b", "c"));
    expect((await stat(join(root, "a", "b", "c"))).isDirectory()).toBe(true);
    // Where Node's own recursive mkdir never returns.
    await expect(ensureDirectory("/proc/slotscribe-no-such/dir")).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("explainAccess", () => {
  it("adds who this process is and who owns the directory to a refused write", async () => {
    const root = await mkdtemp(join(tmpdir(), "slotscribe-dirs-"));
    made.push(root);
    const refused = Object.assign(new Error(`EACCES: permission denied, mkdir '${join(root, "tmp")}'`), { code: "EACCES", path: join(root, "tmp") });
    const owner = await stat(root);
    expect(await explainAccess(refused)).toBe(
      `${refused.message} (this process runs as uid ${process.getuid!()}, gid ${process.getgid!()}; ${root} belongs to uid ${owner.uid}, gid ${owner.gid}, mode ${(owner.mode & 0o777).toString(8)})`,
    );
    expect(await explainAccess(new Error("EADDRINUSE"))).toBe("EADDRINUSE");
  });
});
