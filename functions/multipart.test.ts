import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve, type ServerType } from "@hono/node-server";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { deferred } from "../lib/deferred.ts";
import type { HttpDeps } from "./deps.ts";
import type { AppEnv } from "./env.ts";
import { readMultipart } from "./multipart.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("readMultipart on the Node server", () => {
  // Node ends and destroys the request once its body is read, which is before the form resolves: a
  // disconnect after that has no request left to fail, so nothing of the parse runs again.
  it("leaves the upload it handed over to its reader when the client goes away afterwards", async () => {
    const dir = await mkdtemp(join(tmpdir(), "slotscribe-multipart-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const handedOver = deferred<string>();
    const afterDisconnect = deferred<boolean>();
    const app = new Hono<AppEnv>();
    app.post("/upload", async (c) => {
      c.set("deps", { interrupted: new AbortController().signal } as HttpDeps);
      const form = await readMultipart(c, { dir, maxFileBytes: 1 << 20 });
      const path = form.file!.path;
      // Still working with the upload (renaming it into job inputs, say) when the client disconnects,
      // before the answer is written.
      const gone = new Promise((resolve) => c.env!.outgoing!.once("close", resolve));
      handedOver.resolve(path);
      await gone;
      // Time for a removal the disconnect would set off to land.
      await new Promise((resolve) => setTimeout(resolve, 200));
      afterDisconnect.resolve(existsSync(path));
      await rm(path, { force: true });
      return c.text("done");
    });
    const server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1", autoCleanupIncoming: false }, () => resolve(s));
    });
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));

    const body = Buffer.from('--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n--b0undary--\r\n');
    const socket = connect((server.address() as AddressInfo).port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: ${body.length}\r\n\r\n`);
    socket.write(body);
    const path = await handedOver.promise;
    expect(existsSync(path)).toBe(true);
    socket.destroy();
    expect(await afterDisconnect.promise).toBe(true);
  });
});
