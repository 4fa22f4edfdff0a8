/**
 * Uploads against the real server, over loopback: a burst of concurrent multipart job uploads is
 * read to the end and answered (they once stalled for good when the body had two readers), and a
 * keep-alive connection stays usable after an upload refused early with 413.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { Agent, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { startService, type ServiceProcess } from "./support/service-process.ts";

const KEY = `sk-burst-${Math.random().toString(36).slice(2)}`;
const auth = { authorization: `Bearer ${KEY}` };
const MAX_UPLOAD = 5 * 2 ** 20;

let service: ServiceProcess;
let dataDir: string;

function jobForm(bytes: Uint8Array<ArrayBuffer>, name = "upload.wav"): FormData {
  const form = new FormData();
  form.set("model", "whisper-1");
  form.set("file", new Blob([bytes], { type: "audio/wav" }), name);
  return form;
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  dataDir = await mkdtemp(join(tmpdir(), "slotscribe-burst-"));
  service = await startService({
    API_KEYS: KEY,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: dataDir,
    MAX_UPLOAD_BYTES: String(MAX_UPLOAD),
  });
});

afterAll(async () => {
  await service?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

describe("uploads", () => {
  it("accepts 20 concurrent multipart job uploads, each with 202", { timeout: 90_000 }, async () => {
    const payload = randomBytes(2 * 2 ** 20);
    const signal = AbortSignal.timeout(60_000);
    const statuses = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const res = await fetch(`${service.url}/v1/jobs`, { method: "POST", headers: auth, body: jobForm(payload, `burst-${i}.wav`), signal });
        await res.text();
        return res.status;
      }),
    );
    expect(statuses).toEqual(Array(20).fill(202));
  });

  it("lets a keep-alive fetch client send its next request after an early 413", { timeout: 30_000 }, async () => {
    const signal = AbortSignal.timeout(20_000);
    // Refused by its declared length, before any of it is read.
    const refused = await fetch(`${service.url}/v1/jobs`, { method: "POST", headers: auth, body: jobForm(new Uint8Array(MAX_UPLOAD + 2 ** 20)), signal });
    expect(refused.status).toBe(413);
    expect(refused.headers.get("connection")).not.toBe("close");
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
    const next = await fetch(`${service.url}/v1/jobs`, { method: "POST", headers: auth, body: jobForm(randomBytes(64 * 1024)), signal });
    expect(next.status).toBe(202);
    await next.text();
  });

  it("answers the next request on the same connection after an early 413", { timeout: 30_000 }, async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const send = (form: FormData) =>
      new Promise<{ status: number; port: number | undefined }>((resolve, reject) => {
        const encoded = new Response(form);
        void encoded.arrayBuffer().then((body) => {
          const req = httpRequest(
            `${service.url}/v1/jobs`,
            { method: "POST", agent, headers: { ...auth, "content-type": encoded.headers.get("content-type") ?? "", "content-length": String(body.byteLength) }, timeout: 20_000 },
            (res) => {
              // The client's port names the connection (reusedSocket is not set when the agent hands a
              // freed socket straight to a queued request).
              const port = res.socket.localPort;
              res.resume();
              res.on("end", () => resolve({ status: res.statusCode ?? 0, port }));
            },
          );
          req.on("timeout", () => req.destroy(new Error("timed out")));
          req.on("error", reject);
          req.end(Buffer.from(body));
        }, reject);
      });
    try {
      const refused = await send(jobForm(new Uint8Array(MAX_UPLOAD + 2 ** 20)));
      expect(refused.status).toBe(413);
      const next = await send(jobForm(randomBytes(64 * 1024)));
      expect(next).toEqual({ status: 202, port: refused.port });
    } finally {
      agent.destroy();
    }
  });
});
