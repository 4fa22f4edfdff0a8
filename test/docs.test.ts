/**
 * /openapi.json and /docs: every operation named and summarised, `servers` and both key schemes in
 * the document, Swagger UI served from node_modules (nothing from another origin), and in Chromium
 * (when installed) "Authorize" plus "Try it out" reaching this instance.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_STATUS } from "../functions/error-status.ts";
import { SETTING_NAMES } from "../lib/config.ts";
import { ERROR_CODES } from "../lib/errors.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { startService, type ServiceProcess } from "./support/service-process.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAS_CHROMIUM = existsSync(CHROMIUM);
const KEY = `sk-docs-${Math.random().toString(36).slice(2)}`;

interface Operation {
  operationId?: string;
  summary?: string;
  security?: unknown[];
  tags?: string[];
  responses?: Record<string, unknown>;
}
interface OpenApiDoc {
  servers?: { url: string }[];
  security?: Record<string, string[]>[];
  components: { securitySchemes: Record<string, { type: string; scheme?: string; in?: string; name?: string }> };
  paths: Record<string, Record<string, Operation>>;
}

let work: string;
let service: ServiceProcess;
let doc: OpenApiDoc;

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-docs-"));
  service = await startService({ API_KEYS: KEY, WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR, DEFAULT_MODEL: "generated/whisper-micro", DATA_DIR: join(work, "data") });
  doc = (await (await fetch(`${service.url}/openapi.json`)).json()) as OpenApiDoc;
});

afterAll(async () => {
  await service?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the OpenAPI document", () => {
  const operations = () => Object.entries(doc.paths).flatMap(([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method, op })));

  it("gives every operation a unique operationId, a summary and a tag", () => {
    // The QStash endpoints exist in cluster mode only.
    expect(operations().length).toBeGreaterThanOrEqual(12);
    for (const { path, method, op } of operations()) {
      expect(op.operationId, `${method} ${path}`).toMatch(/^[a-z][A-Za-z]+$/);
      expect(op.summary, `${method} ${path}`).toBeTruthy();
      expect(op.tags?.length, `${method} ${path}`).toBe(1);
    }
    const ids = operations().map((o) => o.op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(expect.arrayContaining(["createTranscription", "createTranslation", "listModels", "createJob", "getJob"]));
  });

  it("names this instance as the server, and the key as Bearer or X-API-Key", () => {
    expect(doc.servers?.[0]?.url).toBe(service.url);
    expect(doc.components.securitySchemes).toMatchObject({ bearer: { type: "http", scheme: "bearer" }, apiKey: { type: "apiKey", in: "header", name: "X-API-Key" } });
    expect(doc.security).toEqual([{ bearer: [] }, { apiKey: [] }]);
    // The probes need no key, and say so.
    expect(doc.paths["/healthz"]!.get!.security).toEqual([]);
    expect(doc.paths["/readyz"]!.get!.security).toEqual([]);
    expect(doc.paths["/v1/models"]!.get!.security).toBeUndefined();
  });

  it("names the https origin a TLS proxy reached it at (X-Forwarded-Proto), in the document and in job links", async () => {
    // As Fly's or Railway's proxy forwards a request (fetch cannot set Host).
    const viaProxy = (path: string, method = "GET", headers: Record<string, string> = {}, body?: Buffer) =>
      new Promise<{ status: number; json: unknown }>((resolve, reject) => {
        const req = request(`${service.url}${path}`, { method, headers: { host: "api.example.com", "x-forwarded-proto": "https", ...headers } }, (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d.toString()));
          res.on("end", () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
        });
        req.on("error", reject);
        req.end(body);
      });
    const proxied = (await viaProxy("/openapi.json")).json as typeof doc;
    expect(proxied.servers?.[0]?.url).toBe("https://api.example.com");
    const form = new FormData();
    form.set("file", new Blob([new Uint8Array(64)]), "a.wav");
    const encoded = new Response(form);
    const body = Buffer.from(await encoded.arrayBuffer());
    const job = await viaProxy("/v1/jobs", "POST", { authorization: `Bearer ${KEY}`, "content-type": encoded.headers.get("content-type")! }, body);
    expect(job.status).toBe(202);
    expect((job.json as { links: { self: string } }).links.self).toMatch(/^https:\/\/api\.example\.com\/v1\/jobs\/job_/);
  });
});

describe("the README", () => {
  const readme = () => readFile(join(import.meta.dirname, "..", "README.md"), "utf8");

  it("describes every setting the service reads in its configuration table", async () => {
    const text = await readme();
    const table = text.slice(text.indexOf("## Configuration"), text.indexOf("## Layout"));
    for (const name of SETTING_NAMES) expect(table, name).toContain(`\`${name}\``);
  });

  it("promises the OpenAI routes only the statuses they answer: a file that is not audio is a 400 there, as OpenAI's", () => {
    for (const path of ["/v1/audio/transcriptions", "/v1/audio/translations"]) {
      const responses = doc.paths[path]!.post!.responses ?? {};
      expect(Object.keys(responses), path).not.toContain("422");
      expect(Object.keys(responses), path).toContain("400");
    }
  });

  it("lists every error code with its HTTP status", async () => {
    const text = await readme();
    const codes = text.slice(text.indexOf("Every error has one JSON shape"), text.indexOf("A body the service cannot parse"));
    for (const code of ERROR_CODES) expect(codes.replace(/\s+/g, " "), code).toContain(`\`${code}\` ${ERROR_STATUS[code]}`);
  });
});

describe("/docs over HTTP", () => {
  it("serves Swagger UI from this instance only, without a key", async () => {
    const res = await fetch(`${service.url}/docs`);
    expect(res.status).toBe(200);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    const html = await res.text();
    expect(html).not.toMatch(/https?:\/\//);
    const refs = [...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThanOrEqual(3);
    for (const ref of refs) {
      expect(ref, "same-origin path").toMatch(/^\/docs\//);
      const asset = await fetch(`${service.url}${ref}`);
      expect(asset.status, ref).toBe(200);
      expect((await asset.arrayBuffer()).byteLength, ref).toBeGreaterThan(100);
    }
    // The status page promises the key stays in the tab: Swagger UI must not keep it in local storage.
    expect(await (await fetch(`${service.url}/docs/init.js`)).text()).not.toMatch(/persistAuthorization:\s*true/);
    expect((await fetch(`${service.url}/docs/assets/package.json`)).status).toBe(404);
    expect((await fetch(`${service.url}/docs/assets/..%2Fpackage.json`)).status).toBe(404);
  });
});

describe.skipIf(!HAS_CHROMIUM)(`/docs in Chromium (needs ${CHROMIUM}: apt-get install chromium)`, () => {
  let userData: string;
  let browser: BrowserContext;

  beforeAll(async () => {
    userData = await mkdtemp(join(tmpdir(), "slotscribe-chromium-"));
    browser = await chromium.launchPersistentContext(userData, {
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1200, height: 1000 },
    });
  });

  afterAll(async () => {
    await browser?.close();
    if (userData) await rm(userData, { recursive: true, force: true });
  });

  it("renders every operation, takes the key in Authorize, and Try it out calls this instance", async () => {
    const page = await browser.newPage();
    const offOrigin: string[] = [];
    const problems: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(service.url) && !r.url().startsWith("data:")) offOrigin.push(r.url());
    });
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(String(e)));
    // What an earlier release's /docs left behind.
    await page.addInitScript(() => localStorage.setItem("authorized", JSON.stringify({ bearer: { name: "bearer", value: "sk-left-behind" } })));
    await page.goto(`${service.url}/docs`);
    await page.locator(".opblock").first().waitFor({ timeout: 30_000 });
    expect(await page.locator(".opblock").count()).toBe(Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0));

    // Authorize: the Bearer scheme gets the key.
    await page.locator("button.authorize").first().click();
    const dialog = page.locator(".dialog-ux");
    await dialog.locator("input[type=text], input[type=password]").first().fill(KEY);
    await dialog.locator("button.authorize").first().click();
    await dialog.locator("button.btn-done, button.close-modal").first().click();

    // Try it out on listModels: the request goes to this instance with the key, and answers 200.
    const op = page.locator("#operations-audio-listModels");
    await op.locator(".opblock-summary").click();
    const answered = page.waitForResponse((r) => r.url() === `${service.url}/v1/models`);
    await op.locator("button.execute").click();
    const response = await answered;
    expect(response.status()).toBe(200);
    expect(response.request().headers().authorization).toBe(`Bearer ${KEY}`);
    await expect.poll(() => op.locator(".live-responses-table tbody .response-col_status").first().textContent()).toContain("200");
    expect(offOrigin).toEqual([]);
    expect(problems.filter((p) => !/favicon/.test(p))).toEqual([]);
    // Kept in this page only: nothing left in the browser profile for / or a later visitor to read.
    expect(await page.evaluate(() => ({ ...localStorage }))).toEqual({});
  });
});
