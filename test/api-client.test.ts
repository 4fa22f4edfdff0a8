/**
 * A client generated from /openapi.json, as a user's project would make one (openapi-typescript for
 * the types, openapi-fetch for the calls): it must upload a file and read the answers without a
 * single cast, and the committed types must be what the live document generates.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import createClient from "openapi-fetch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeWav, synthesize } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones } from "../tools/models/micro.ts";
import { startService, type ServiceProcess } from "./support/service-process.ts";
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
});
