/**
 * CORS_ORIGINS against the real server, in a real (Debian) Chromium: a page served from another
 * origin runs the official OpenAI SDK (its browser build, as a web app would load it) against
 * slotscribe, and a page from an origin not listed is stopped by the browser.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones } from "../tools/models/micro.ts";
import { startService, type ServiceProcess } from "./support/service-process.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAS_CHROMIUM = existsSync(CHROMIUM);
if (!HAS_CHROMIUM) console.warn(`CORS browser tests skipped: ${CHROMIUM} not found (Debian/Ubuntu: apt-get install chromium)`);

const KEY = `sk-cors-${Math.random().toString(36).slice(2)}`;
const SDK_DIR = join(import.meta.dirname, "..", "node_modules", "openai");

/**
 * The web app's own script: it loads the SDK's ES modules as a bundler-free app does and, asked to,
 * lists the models, transcribes, and transcribes again streamed.
 */
const APP_SCRIPT = `
import OpenAI from "/openai/index.mjs";
window.runSdk = async (baseURL, apiKey, audio) => {
  const client = new OpenAI({ baseURL, apiKey, dangerouslyAllowBrowser: true, maxRetries: 0 });
  const file = () => new File([new Uint8Array(audio)], "bravo.wav", { type: "audio/wav" });
  try {
    const models = (await client.models.list()).data.map((m) => m.id);
    const { text } = await client.audio.transcriptions.create({ file: file(), model: "whisper-1" });
    const streamed = [];
    for await (const event of await client.audio.transcriptions.create({ file: file(), model: "whisper-1", stream: true })) streamed.push(event.type);
    return { ok: true, models, text, streamed };
  } catch (err) {
    return { ok: false, error: String(err), status: err.status };
  }
};
window.sdkLoaded = true;
`;

/** A web app's origin: its page, and the SDK's ES modules under /openai/. */
async function servePages(): Promise<{ server: Server; origin: string }> {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(`<!doctype html><title>app</title><script type="module">${APP_SCRIPT}</script>`);
      return;
    }
    const file = normalize(join(SDK_DIR, path.replace(/^\/openai\//, "")));
    if (!path.startsWith("/openai/") || !file.startsWith(SDK_DIR) || extname(file) !== ".mjs") {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/javascript" }).end(await readFile(file).catch(() => ""));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** What the page reports back from the SDK. */
interface PageOutcome {
  ok: boolean;
  text?: string;
  streamed?: string[];
  models?: string[];
  error?: string;
  status?: number;
}

describe.skipIf(!HAS_CHROMIUM)(`CORS_ORIGINS in Chromium (needs ${CHROMIUM}: apt-get install chromium)`, () => {
  let work: string;
  let wav: string;
  let app: { server: Server; origin: string };
  let stranger: { server: Server; origin: string };
  let service: ServiceProcess;
  let browser: BrowserContext;

  beforeAll(async () => {
    await generateModel({ kind: "micro" });
    work = await mkdtemp(join(tmpdir(), "slotscribe-cors-"));
    wav = join(work, "bravo.wav");
    await writeAudioFile(wav, microTones([{ silence: 0.5 }, { word: "bravo", seconds: 3 }, { silence: 0.5 }]));
    app = await servePages();
    stranger = await servePages();
    service = await startService({
      WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
      DEFAULT_MODEL: "generated/whisper-micro",
      DATA_DIR: join(work, "data"),
      API_KEYS: KEY,
      CORS_ORIGINS: app.origin,
    });
    browser = await chromium.launchPersistentContext(join(work, "chromium"), {
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await service?.stop();
    for (const pages of [app, stranger]) pages?.server.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Runs the OpenAI SDK in a page of `origin` against the service: models, a transcription, a streamed one. */
  async function sdkFrom(origin: string): Promise<PageOutcome> {
    const page = await browser.newPage();
    try {
      await page.goto(origin);
      const audio = [...(await readFile(wav))];
      await page.waitForFunction(() => (window as { sdkLoaded?: boolean }).sdkLoaded === true);
      return await page.evaluate(
        ({ baseURL, apiKey, audio }) => (window as unknown as { runSdk: (url: string, key: string, audio: number[]) => Promise<PageOutcome> }).runSdk(baseURL, apiKey, audio),
        { baseURL: `${service.url}/v1`, apiKey: KEY, audio },
      );
    } finally {
      await page.close();
    }
  }

  it("lets a listed origin's page use the OpenAI SDK: models, a transcription and a stream", async () => {
    const outcome = await sdkFrom(app.origin);
    expect(outcome, outcome.error).toMatchObject({ ok: true, text: "bravo" });
    expect(outcome.models).toContain("generated/whisper-micro");
    expect(outcome.streamed!.at(-1)).toBe("transcript.text.done");
  });

  it("leaves a page from any other origin stopped by the browser, before its upload is sent", async () => {
    const before = service.logs.length;
    const outcome = await sdkFrom(stranger.origin);
    expect(outcome.ok).toBe(false);
    // Only the browser's preflight reached the service: no request of the page's own.
    const reached = service.logs.slice(before).filter((line) => line.msg === "request");
    expect(reached.map((line) => line.method)).toEqual(["OPTIONS"]);
    // The SDK sees no response at all: the browser refused it.
    expect(outcome.status).toBeUndefined();
    expect(outcome.error).toMatch(/Connection error/);
  });
});
