/**
 * The status page at "/" against the real server, in a real (Debian) Chromium driven by
 * playwright-core: the key form, the plan and jobs the page renders from the JSON APIs, live refresh,
 * the 401 message, and the layout at desktop and phone widths, with screenshots (checked to be real,
 * non-blank PNGs) left in bench-results/status-page/ for a person to look at.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateSync } from "node:zlib";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones, MICRO_TONES } from "../tools/models/micro.ts";
import { eventually, startService, type ServiceProcess } from "./support/service-process.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAS_CHROMIUM = existsSync(CHROMIUM);
if (!HAS_CHROMIUM) console.warn(`status-page browser tests skipped: ${CHROMIUM} not found (Debian/Ubuntu: apt-get install chromium)`);

const KEY = `sk-status-${Math.random().toString(36).slice(2)}`;
const auth = { authorization: `Bearer ${KEY}` };
/**
 * Enough 30 s windows that the job is still running across several 2 s refreshes even on a fast,
 * idle machine; the test cancels it rather than waiting for the end.
 */
const WINDOWS = 80;
const FINAL = ["succeeded", "failed", "canceled"];
const SHOTS = join(import.meta.dirname, "..", "bench-results", "status-page");
const DESKTOP = { width: 1200, height: 1000 };
const PHONE = { width: 390, height: 844 };

let work: string;
let longAudio: string;
let service: ServiceProcess;

function serviceEnv(extra: Record<string, string>): Record<string, string> {
  return {
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: join(work, `data-${Math.random().toString(36).slice(2)}`),
    // One slot, so the running job shows as 1 / 1 in use.
    WINDOW_SLOTS: "1",
    ...extra,
  };
}

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(`${service.url}${path}`, { ...init, headers: { ...auth, ...init.headers } });
  expect(res.ok, `${path}: HTTP ${res.status}`).toBe(true);
  return (await res.json()) as T;
}

async function submitJob(file: string): Promise<{ id: string; status: string }> {
  const form = new FormData();
  form.set("file", new Blob([await readFile(file)]), "long.flac");
  return api("/v1/jobs", { method: "POST", body: form });
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-status-"));
  longAudio = join(work, "long.flac");
  // FLAC keeps a long run of pure tones small to upload.
  await writeAudioFile(longAudio, microTones(Array.from({ length: WINDOWS }, (_, i) => ({ word: MICRO_TONES[i % MICRO_TONES.length]!.word, seconds: 30 }))));
  service = await startService(serviceEnv({ API_KEYS: KEY }));
});

afterAll(async () => {
  await service?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the status page over HTTP", () => {
  it("is public, self-contained and locked down, while the data behind it needs a key", async () => {
    const res = await fetch(`${service.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(res.headers.get("cache-control")).toBe("no-store");
    const html = await res.text();
    expect(html).not.toMatch(/https?:\/\//);
    // Only the data: favicon and the page's own script may be referenced.
    expect([...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((m) => m[1])).toEqual(["data:,", "/status-page.js"]);
    // THREADS is onnxruntime's threads for each call on the one inference thread: jobs get none of their own.
    expect(html).toContain("<dt>ONNX threads per call</dt>");
    // The script is public too (it holds no data), compiled from TypeScript, and puts nothing through innerHTML.
    const script = await fetch(`${service.url}/status-page.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
    const code = await script.text();
    expect(code).toContain("slotscribe.apiKey");
    expect(code).not.toMatch(/import type|: HTMLElement/);
    expect(code).not.toMatch(/https?:\/\//);
    expect(code).not.toContain("innerHTML");
    expect((await fetch(`${service.url}/v1/capacity`)).status).toBe(401);
  });
});

describe.skipIf(!HAS_CHROMIUM)(`the status page in Chromium (needs ${CHROMIUM}: apt-get install chromium)`, () => {
  let userData: string;
  let browser: BrowserContext;

  beforeAll(async () => {
    userData = await mkdtemp(join(tmpdir(), "slotscribe-chromium-"));
    await mkdir(SHOTS, { recursive: true });
    // A persistent context is how playwright takes a user-data dir; a fresh one per run keeps no state.
    browser = await chromium.launchPersistentContext(userData, {
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: DESKTOP,
      deviceScaleFactor: 1,
    });
  });

  afterAll(async () => {
    await browser?.close();
    if (userData) await rm(userData, { recursive: true, force: true });
    // Screenshots stay for a look; their paths are printed by the test that takes them.
  });

  /** A new tab: sessionStorage is per tab, so each starts signed out. */
  async function open(url: string): Promise<{ page: Page; urls: string[]; authHeaders: Map<string, string | undefined> }> {
    const page = await browser.newPage();
    const urls: string[] = [];
    const authHeaders = new Map<string, string | undefined>();
    page.on("request", (r) => {
      urls.push(r.url());
      authHeaders.set(new URL(r.url()).pathname, r.headers().authorization);
    });
    await page.goto(url);
    return { page, urls, authHeaders };
  }

  const text = (page: Page, selector: string) => page.locator(selector).innerText();

  async function shoot(page: Page, name: string, width: number): Promise<void> {
    const shot = join(SHOTS, `${name}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`status page screenshot: ${shot}`);
    await expectRealPng(shot, width);
  }

  /** What a person would check by eye: nothing wider than the screen, every column shown, ids whole on one line, labels beside their bars. */
  async function expectTidyLayout(page: Page, jobId: string, width: number): Promise<void> {
    const facts = await page.evaluate((jobId) => {
      const box = (node: Element) => node.getBoundingClientRect();
      const code = document.querySelector(`#jobs-body tr[data-job-id="${jobId}"] code.id`) as HTMLElement;
      const bar = document.querySelector(`#jobs-body tr[data-job-id="${jobId}"] progress`)!;
      const pct = document.querySelector(`#jobs-body tr[data-job-id="${jobId}"] .pct`)!;
      const errorHeading = [...document.querySelectorAll("#models th")].find((th) => th.textContent === "Error")!;
      const errorCell = document.querySelector('#models-body td[data-label="Error"]')!;
      // On a phone the column headings are hidden and each cell shows its label instead.
      const errorLabel = getComputedStyle(errorHeading).position === "absolute" ? errorCell : errorHeading;
      return {
        scrollWidth: document.documentElement.scrollWidth,
        idText: code.textContent,
        idTitle: code.title,
        idLines: box(code).height / parseFloat(getComputedStyle(code).lineHeight),
        bar: box(bar).toJSON() as DOMRect,
        pct: box(pct).toJSON() as DOMRect,
        error: { ...(box(errorLabel).toJSON() as DOMRect), visible: box(errorLabel).width > 0, label: getComputedStyle(errorCell, "::before").content },
      };
    }, jobId);
    expect(facts.scrollWidth).toBeLessThanOrEqual(width);
    expect(facts.idText).toBe(jobId);
    expect(facts.idTitle).toBe(jobId);
    expect(facts.idLines).toBeLessThan(1.5);
    // The percentage sits on the bar's line, to its right.
    expect(facts.pct.left).toBeGreaterThanOrEqual(facts.bar.right);
    expect(facts.pct.top).toBeLessThan(facts.bar.bottom);
    expect(facts.pct.bottom).toBeGreaterThan(facts.bar.top);
    expect(facts.error.visible).toBe(true);
    expect(facts.error.left).toBeGreaterThanOrEqual(0);
    expect(facts.error.right).toBeLessThanOrEqual(width);
    if (width < 640) expect(facts.error.label).toBe('"Error"');
  }

  it("asks for the key, then shows the plan, the running job and live updates", async () => {
    const { page, urls, authHeaders } = await open(`${service.url}/`);
    await page.getByRole("alert").filter({ hasText: "needs an API key" }).waitFor();
    await page.getByLabel("API key").fill(KEY);
    await page.getByRole("button", { name: "Show status" }).click();

    const capacity = await api<{ instance: { slots: number; threads: number; limitedBy: string; memorySource: string } }>("/v1/capacity");
    await eventually(async () => expect(await text(page, "#plan-slots")).toBe(String(capacity.instance.slots)));
    expect(capacity.instance.slots).toBe(1);
    expect(await text(page, "#plan-threads")).toBe(String(capacity.instance.threads));
    expect(await text(page, "#plan-limited")).toBe(capacity.instance.limitedBy);
    expect(await text(page, "#plan-role")).toBe("all");
    expect(await text(page, "#plan-memory")).toContain(capacity.instance.memorySource);
    expect(await text(page, "#cluster-store")).toBe("embedded");
    // The server listens before its model has loaded; the page follows /readyz until it is ready.
    await eventually(async () => expect(await text(page, "#ready")).toBe("yes"), 120_000, 200);
    expect(await text(page, "#models-body")).toMatch(/generated\/whisper-micro\s+q8\s+ready/);
    expect(await page.locator("#auth").isHidden()).toBe(true);
    expect(await page.evaluate(() => sessionStorage.getItem("slotscribe.apiKey"))).toBe(KEY);

    // Submitted only now, so its whole run is on a page that is already refreshing.
    const job = await submitJob(longAudio);
    const row = page.locator(`#jobs-body tr[data-job-id="${job.id}"]`);
    await eventually(
      async () => {
        expect(await row.locator("code").innerText()).toBe(job.id);
        expect(await row.locator(".badge").innerText()).toBe("running");
      },
      60_000,
      200,
    );
    await eventually(async () => expect(await text(page, "#use-slots")).toBe("1 / 1"), 60_000, 200);
    expect(await text(page, "#summary")).toMatch(/1 of 1 slots in use/);

    // One model copy serves the slot, as a row of the engine's shared batch.
    type Live = { instance: { modelCopies: number; audioSeconds: number; batch: { rows: number; largest: number } | null } };
    const live = await eventually(
      async () => {
        const now = await api<Live>("/v1/capacity");
        expect(now.instance.batch?.largest).toBeGreaterThanOrEqual(1);
        expect(now.instance.audioSeconds).toBeGreaterThan(0);
        return now.instance;
      },
      60_000,
      200,
    );
    expect(live.modelCopies).toBe(1);
    expect(live.batch!.rows).toBeLessThanOrEqual(1);
    expect(await text(page, "#plan-copies")).toBe("1 of each model, shared by every slot");
    await eventually(async () => expect(await text(page, "#use-batch")).toMatch(/^[01] rows? decoding now, largest batch 1$/), 30_000, 200);

    // The chart grows with every poll, and the real-time factor shows once windows have finished between two polls.
    const samples = async () => Number(await page.locator("#trends").getAttribute("data-samples"));
    const slotsLine = () => page.locator("#trend-slots").getAttribute("d");
    expect(await page.locator("#trends svg path").count()).toBe(3);
    const before = { samples: await samples(), d: await slotsLine() };
    await eventually(
      async () => {
        expect(await samples()).toBeGreaterThanOrEqual(before.samples + 2);
        expect(await slotsLine()).not.toBe(before.d);
        expect(await text(page, "#trend-rtf-value")).toMatch(/^\d+\.\d×$/);
        expect(await page.locator("#trend-rtf").getAttribute("d")).toMatch(/^M[\d.]+ [\d.]+(H[\d.]+V[\d.]+)*H300$/);
      },
      30_000,
      200,
    );
    expect(await slotsLine()).toMatch(/^M[\d.]+ [\d.]+(H[\d.]+V[\d.]+)+H300$/);
    expect(await text(page, "#trend-slots-value")).toMatch(/^[01] \/ 1$/);

    await expectTidyLayout(page, job.id, DESKTOP.width);
    await shoot(page, "desktop", DESKTOP.width);
    await page.setViewportSize(PHONE);
    await expectTidyLayout(page, job.id, PHONE.width);
    await shoot(page, "phone", PHONE.width);
    await page.setViewportSize(DESKTOP);

    // Live refresh: the timestamp moves on, and the job's progress or status changes by itself.
    const firstUpdate = Date.parse((await page.locator("#updated").getAttribute("datetime"))!);
    const firstProgress = await row.locator("td.progress").innerText();
    await eventually(
      async () => {
        expect(Date.parse((await page.locator("#updated").getAttribute("datetime"))!)).toBeGreaterThan(firstUpdate);
        const now = `${await row.locator(".badge").innerText()} ${await row.locator("td.progress").innerText()}`;
        expect(now).not.toBe(`running ${firstProgress}`);
      },
      60_000,
      200,
    );
    expect(await row.locator("td.progress").innerText()).toMatch(/^\d+%$/);

    // Ending the job through the API shows up on the page without any reload.
    await fetch(`${service.url}/v1/jobs/${job.id}`, { method: "DELETE", headers: auth });
    const final = await eventually(async () => {
      const view = await api<{ status: string }>(`/v1/jobs/${job.id}`);
      expect(FINAL).toContain(view.status);
      return view.status;
    });
    await eventually(async () => expect(await row.locator(".badge").innerText()).toBe(final), 30_000, 200);

    expect(authHeaders.get("/v1/capacity")).toBe(`Bearer ${KEY}`);
    expect(authHeaders.get("/v1/jobs")).toBe(`Bearer ${KEY}`);
    expect(urls.filter((u) => u.includes(KEY))).toEqual([]);
    expect(urls.every((u) => u.startsWith(service.url) || u.startsWith("data:"))).toBe(true);
    await page.close();
  });

  it("stops saying the server is ready once a refresh fails, and says so again when it answers", async () => {
    const { page } = await open(`${service.url}/`);
    await page.getByLabel("API key").fill(KEY);
    await page.getByRole("button", { name: "Show status" }).click();
    await eventually(async () => expect(await text(page, "#ready")).toBe("yes"), 120_000, 200);
    expect(await text(page, "#summary")).toMatch(/^Ready\./);

    // What a server that went away looks like to the page: nothing answers.
    await page.route(`${service.url}/readyz`, (route) => route.abort());
    await page.getByRole("alert").filter({ hasText: "Could not refresh" }).waitFor();
    expect(await text(page, "#ready")).toBe("unknown");
    expect(await text(page, "#summary")).toMatch(/^Status unknown: no answer since \S/);

    await page.unroute(`${service.url}/readyz`);
    await eventually(async () => expect(await text(page, "#ready")).toBe("yes"), 30_000, 200);
    expect(await text(page, "#summary")).toMatch(/^Ready\./);
    await page.close();
  });

  it("says clearly when the key is wrong, and signing out forgets the key", async () => {
    const { page, urls } = await open(`${service.url}/`);
    await page.getByLabel("API key").fill(KEY);
    await page.getByRole("button", { name: "Show status" }).click();
    await page.locator("#data").waitFor({ state: "visible" });

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("alert").filter({ hasText: "Signed out" }).waitFor();
    expect(await page.locator("#data").isHidden()).toBe(true);
    expect(await page.evaluate(() => sessionStorage.getItem("slotscribe.apiKey"))).toBeNull();
    expect(await page.locator("#jobs-body tr").count()).toBe(0);

    // A key no request can carry (a typographic character, a pasted line break) is refused at once.
    await page.getByLabel("API key").fill("sk-€uro");
    await page.getByRole("button", { name: "Show status" }).click();
    await page.getByRole("alert").filter({ hasText: "cannot be sent" }).waitFor();
    expect(await page.getByRole("alert").innerText()).not.toContain("€");
    expect(await page.evaluate(() => sessionStorage.getItem("slotscribe.apiKey"))).toBeNull();
    expect(await page.locator("#auth").isVisible()).toBe(true);

    await page.getByLabel("API key").fill("sk-wrong-key");
    await page.getByRole("button", { name: "Show status" }).click();
    const alert = page.getByRole("alert");
    await alert.filter({ hasText: "401" }).waitFor();
    expect(await alert.innerText()).toBe("The API key was not accepted (401 Unauthorized). Check it and enter it again.");
    expect(await page.locator("#data").isHidden()).toBe(true);
    expect(await page.locator("#auth").isVisible()).toBe(true);
    expect(await page.evaluate(() => sessionStorage.getItem("slotscribe.apiKey"))).toBeNull();
    expect(urls.filter((u) => u.includes("sk-wrong-key") || u.includes(KEY))).toEqual([]);
    await page.close();
  });

  it("just works on a server that runs without keys", async () => {
    const anonymous = await startService(serviceEnv({ ALLOW_ANONYMOUS: "true" }));
    try {
      const { page } = await open(`${anonymous.url}/`);
      await eventually(async () => expect(await text(page, "#plan-slots")).toBe("1"));
      expect(await page.locator("#auth").isHidden()).toBe(true);
      expect(await page.locator("#signout").isHidden()).toBe(true);
      expect(await text(page, "#jobs-body")).toBe("No jobs yet.");
      await page.close();
    } finally {
      await anonymous.stop();
    }
  });
});

/** Checks the screenshot is a PNG of the viewport's width with real content, by decoding it. */
async function expectRealPng(path: string, width: number): Promise<void> {
  const { size } = await stat(path);
  expect(size).toBeGreaterThan(10 * 1024);
  const png = decodePng(await readFile(path));
  expect(png.width).toBe(width);
  expect(png.height).toBeGreaterThanOrEqual(600);
  const colors = new Set<number>();
  let inked = 0;
  for (let p = 0; p < png.width * png.height; p++) {
    const o = p * png.channels;
    const rgb = (png.pixels[o]! << 16) | (png.pixels[o + 1]! << 8) | png.pixels[o + 2]!;
    colors.add(rgb);
    if (rgb !== 0xffffff) inked++;
  }
  // Text, borders and badges: many colors and a fair share of non-white pixels, not a blank page.
  expect(colors.size).toBeGreaterThan(20);
  expect(inked / (png.width * png.height)).toBeGreaterThan(0.01);
}

/** Just enough PNG: 8-bit RGB or RGBA, not interlaced (what Chromium writes), filters undone. */
function decodePng(buf: Buffer): { width: number; height: number; channels: number; pixels: Buffer } {
  expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  let width = 0,
    height = 0,
    channels = 0;
  const idat: Buffer[] = [];
  for (let at = 8; at < buf.length; ) {
    const length = buf.readUInt32BE(at);
    const type = buf.toString("ascii", at + 4, at + 8);
    const data = buf.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const [bitDepth, colorType, , , interlace] = data.subarray(8);
      expect({ bitDepth, interlace }).toEqual({ bitDepth: 8, interlace: 0 });
      channels = colorType === 6 ? 4 : colorType === 2 ? 3 : 0;
      expect(channels, `PNG color type ${colorType}`).toBeGreaterThan(0);
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  expect(raw.length).toBe(height * (stride + 1));
  const pixels = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x]!;
      const a = x >= channels ? pixels[y * stride + x - channels]! : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x]! : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels]! : 0;
      let predicted: number;
      if (filter === 0) predicted = 0;
      else if (filter === 1) predicted = a;
      else if (filter === 2) predicted = b;
      else if (filter === 3) predicted = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c,
          pa = Math.abs(p - a),
          pb = Math.abs(p - b),
          pc = Math.abs(p - c);
        predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`bad PNG filter ${filter} on row ${y}`);
      pixels[y * stride + x] = (v + predicted) & 0xff;
    }
  }
  return { width, height, channels, pixels };
}
