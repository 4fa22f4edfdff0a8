/**
 * A client generated from /openapi.json, as a user's project would make one (openapi-typescript for
 * the types, openapi-fetch for the calls): it must upload a file and read the answers without a
 * single cast, and the committed types must be what the live document generates.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import createClient from "openapi-fetch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeWav, synthesize } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones } from "../tools/models/micro.ts";
import { eventually, startService, type ServiceProcess } from "./support/service-process.ts";
import { apiTypes } from "./support/api-types.ts";
import type { paths } from "./support/openapi.d.ts";

const KEY = `sk-client-${Math.random().toString(36).slice(2)}`;
let work: string;
let service: ServiceProcess;

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-client-"));
  service = await startService({ API_KEYS: KEY, WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR, DEFAULT_MODEL: "generated/whisper-micro", DATA_DIR: join(work, "data") });
});

afterAll(async () => {
  await service?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Any generated multipart body as a form: Blobs as files, arrays as repeated fields, the rest as text. */
function multipart(body: object): FormData {
  const form = new FormData();
  for (const [name, value] of Object.entries(body)) {
    for (const item of [value].flat()) if (item !== undefined && item !== null) form.append(name, item instanceof Blob ? item : String(item));
  }
  return form;
}

describe("a client generated from the OpenAPI document", () => {
  it("is generated from the live document: the committed types are current", async () => {
    const doc = (await (await fetch(`${service.url}/openapi.json`)).json()) as object;
    expect(await apiTypes(doc)).toBe(await readFile(join(import.meta.dirname, "support", "openapi.d.ts"), "utf8"));
  });

  it("uploads a file and reads verbose_json, lists models and gets a typed error, without casts", async () => {
    const client = createClient<paths>({ baseUrl: service.url, headers: { authorization: `Bearer ${KEY}` } });
    const file = new Blob([Uint8Array.from(encodeWav([synthesize(microTones([{ word: "charlie", seconds: 5 }]))], 16_000))], { type: "audio/wav" });
    const { data, error } = await client.POST("/v1/audio/transcriptions", {
      body: { file, model: "whisper-1", response_format: "verbose_json" },
      bodySerializer: multipart,
    });
    expect(error).toBeUndefined();
    expect(typeof data === "object" && "segments" in data ? data.segments?.map((s) => s.text.trim()) : null).toEqual(["charlie"]);

    const models = await client.GET("/v1/models");
    expect(models.data?.data.map((m) => m.id)).toContain("generated/whisper-micro");

    const missing = await client.GET("/v1/models/{model}", { params: { path: { model: "whisper-9" } } });
    expect(missing.response.status).toBe(404);
    expect(missing.error?.error.code).toBe("not_found");
    expect(missing.error?.error.param).toBe("model");
  });

  it("answers as the document says: each JSON answer matches its operation's schema for its status", async () => {
    const doc = (await (await fetch(`${service.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    // The document is JSON Schema 2020-12 under OpenAPI's keys; its own keywords (example, ...) are not checks.
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    ajv.addSchema({ ...doc, $id: "openapi" });
    const pointer = (...steps: string[]) => steps.map((step) => step.replaceAll("~", "~0").replaceAll("/", "~1")).join("/");
    const checked: string[] = [];
    const check = async (method: string, template: string, res: Response) => {
      const status = String(res.status);
      expect(doc.paths[template]?.[method]?.responses, `${method} ${template} documents ${status}`).toHaveProperty(status);
      // The headers it documents are there (idempotent-replayed only on a replay).
      const documented = (doc.paths[template]![method]!.responses[status] as { headers?: Record<string, unknown> }).headers ?? {};
      for (const name of Object.keys(documented).filter((name) => name !== "idempotent-replayed"))
        expect(res.headers.has(name), `${method} ${template} ${status}: ${name}`).toBe(true);
      const validate = ajv.compile({ $ref: `openapi#/${pointer("paths", template, method, "responses", status, "content", "application/json", "schema")}` });
      const body: unknown = await res.json();
      expect(validate(body) ? [] : validate.errors, `${method} ${template} ${status}`).toEqual([]);
      checked.push(`${method} ${template} ${status}`);
      return body as Record<string, unknown>;
    };
    const headers = { authorization: `Bearer ${KEY}` };
    const form = new FormData();
    form.set("file", new Blob([Uint8Array.from(encodeWav([synthesize(microTones([{ word: "alpha", seconds: 3 }]))], 16_000))]), "a.wav");
    const job = await check("post", "/v1/jobs", await fetch(`${service.url}/v1/jobs`, { method: "POST", headers, body: form }));
    expect(job.result).toBeNull();
    await check("get", "/v1/jobs", await fetch(`${service.url}/v1/jobs`, { headers }));
    await eventually(async () => expect(await (await fetch(`${service.url}/v1/jobs/${String(job.id)}`, { headers })).json()).toMatchObject({ status: "succeeded" }));
    expect((await check("get", "/v1/jobs/{id}", await fetch(`${service.url}/v1/jobs/${String(job.id)}`, { headers }))).result).toMatchObject({ text: expect.any(String) });
    await check("get", "/v1/jobs/{id}", await fetch(`${service.url}/v1/jobs/job_unknown`, { headers }));
    await check("delete", "/v1/jobs/{id}", await fetch(`${service.url}/v1/jobs/${String(job.id)}`, { method: "DELETE", headers }));
    await check("get", "/v1/models", await fetch(`${service.url}/v1/models`, { headers }));
    await check("get", "/v1/capacity", await fetch(`${service.url}/v1/capacity`, { headers }));
    await check("get", "/readyz", await fetch(`${service.url}/readyz`));
    await check("post", "/v1/audio/transcriptions", await fetch(`${service.url}/v1/audio/transcriptions`, { method: "POST", headers, body: new FormData() }));
    expect(checked).toHaveLength(9);
  });
});
