import { mulberry32 } from "../lib/random.ts";
/**
 * Hostile and broken requests against the real server: malformed multipart and JSON, bodies of the
 * wrong type, oversized and deeply nested fields, odd headers, and seeded random mutations of valid
 * requests. Whatever arrives, the answer is never a 500: a client's mistake is a 4xx in the one
 * error shape, with the request id, and is not logged as a server error.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { eventually, startService, type ServiceProcess } from "./support/service-process.ts";
import { generateWebhookSecret } from "../lib/webhooks/standard-webhooks.ts";

const KEY = `sk-hostile-${Math.random().toString(36).slice(2)}`;
/** A web page allowed to call the service (CORS_ORIGINS). */
const PAGE = "https://app.example.com";
const auth = { authorization: `Bearer ${KEY}` };
const AUDIO_ROUTES = ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/extract"];
const UPLOAD_ROUTES = [...AUDIO_ROUTES, "/v1/jobs"];
const JSON_ROUTES = ["/v1/jobs", "/v1/audio/extract"];

let service: ServiceProcess;
let dataDir: string;

interface Part {
  name: string;
  filename?: string;
  type?: string;
  data: string | Buffer;
}

/** A multipart body written by hand, so it can be wrong in ways FormData never is. */
function multipart(parts: Part[], { boundary = "b0undary", close = true } = {}): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.filename === undefined ? "" : `; filename="${part.filename}"`}`;
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${part.type ? `Content-Type: ${part.type}\r\n` : ""}\r\n`));
    chunks.push(Buffer.isBuffer(part.data) ? part.data : Buffer.from(part.data), Buffer.from("\r\n"));
  }
  if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

const MULTIPART = { "content-type": "multipart/form-data; boundary=b0undary" };
const JSON_TYPE = { "content-type": "application/json" };
const file: Part = { name: "file", filename: "a.wav", type: "audio/wav", data: "RIFF....WAVEfmt " };
const nested = (levels: number, inner = "1") => '{"a":'.repeat(levels) + inner + "}".repeat(levels);
const nestedArrays = (levels: number) => "[".repeat(levels) + "]".repeat(levels);

interface Case {
  name: string;
  path: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  status: number;
  code: string;
  message?: RegExp;
  /** OpenAI's `param`, the field at fault. */
  param?: string;
}

const cases: Case[] = [
  // Multipart that cannot be parsed.
  ...UPLOAD_ROUTES.flatMap((path): Case[] => [
    {
      name: "multipart without a boundary",
      path,
      headers: { "content-type": "multipart/form-data" },
      body: multipart([file]),
      status: 400,
      code: "invalid_request",
      message: /boundary/,
    },
    { name: "multipart without its closing line", path, headers: MULTIPART, body: multipart([file], { close: false }), status: 400, code: "invalid_request", message: /closing/ },
    { name: "multipart with another boundary than declared", path, headers: MULTIPART, body: multipart([file], { boundary: "other" }), status: 400, code: "invalid_request" },
    {
      name: "multipart with an empty boundary",
      path,
      headers: { "content-type": 'multipart/form-data; boundary=""' },
      body: multipart([file]),
      status: 400,
      code: "invalid_request",
    },
    { name: "multipart cut in the middle of a part's headers", path, headers: MULTIPART, body: multipart([file]).subarray(0, 40), status: 400, code: "invalid_request" },
    { name: "an empty multipart body", path, headers: MULTIPART, body: "", status: 400, code: "invalid_request" },
    {
      name: "multipart without any file",
      path,
      headers: MULTIPART,
      body: multipart([{ name: "model", data: "whisper-1" }]),
      status: 400,
      code: "invalid_request",
      message: /file/,
    },
    { name: "50 file parts", path, headers: MULTIPART, body: multipart(Array(50).fill(file)), status: 400, code: "invalid_request", message: /one file/ },
    {
      name: "a file part that is a plain field",
      path,
      headers: MULTIPART,
      body: multipart([{ name: "file", data: "not a file" }]),
      status: 400,
      code: "invalid_request",
      message: /file/,
    },
  ]),
  // Bodies of a type the route does not take.
  ...AUDIO_ROUTES.filter((p) => p !== "/v1/audio/extract").flatMap((path): Case[] => [
    { name: "a JSON body on an upload-only route", path, headers: JSON_TYPE, body: "{}", status: 415, code: "unsupported_media" },
    { name: "a raw audio body", path, headers: { "content-type": "audio/wav" }, body: "RIFF....WAVE", status: 415, code: "unsupported_media" },
  ]),
  ...UPLOAD_ROUTES.flatMap((path): Case[] => [
    { name: "a text/plain body", path, headers: { "content-type": "text/plain" }, body: "hello", status: 415, code: "unsupported_media" },
    { name: "a body without a content type", path, headers: {}, body: "hello", status: 415, code: "unsupported_media" },
    {
      name: "a form-urlencoded body",
      path,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "file=abc&model=whisper-1",
      status: 400,
      code: "invalid_request",
    },
  ]),
  // JSON that is not a request.
  ...JSON_ROUTES.flatMap((path): Case[] => [
    { name: "malformed JSON", path, headers: JSON_TYPE, body: '{"url": ', status: 400, code: "invalid_request", message: /JSON/ },
    { name: "an empty JSON body", path, headers: JSON_TYPE, body: "", status: 400, code: "invalid_request", message: /JSON/ },
    { name: "JSON null", path, headers: JSON_TYPE, body: "null", status: 400, code: "invalid_request" },
    { name: "a JSON array", path, headers: JSON_TYPE, body: "[1,2]", status: 400, code: "invalid_request" },
    { name: "a JSON string", path, headers: JSON_TYPE, body: '"https://example.com/a.mp3"', status: 400, code: "invalid_request" },
    { name: "JSON nested 100,000 levels", path, headers: JSON_TYPE, body: nestedArrays(20_000), status: 400, code: "invalid_request" },
    { name: "a url that is not http(s)", path, headers: JSON_TYPE, body: JSON.stringify({ url: "file:///etc/passwd" }), status: 400, code: "invalid_request" },
    {
      name: "a url of 20,000 characters",
      path,
      headers: JSON_TYPE,
      body: JSON.stringify({ url: `https://example.com/${"a".repeat(20_000)}` }),
      status: 400,
      code: "invalid_request",
      message: /url is longer than 8192 characters/,
    },
    // Small enough to be sent whole before the early answer (see send()); uploads over the limit are in service.test.ts.
    {
      name: "a JSON body over 64 KiB",
      path,
      headers: JSON_TYPE,
      body: JSON.stringify({ url: "https://example.com/a.mp3", pad: "x".repeat(100 * 1024) }),
      status: 413,
      code: "payload_too_large",
    },
  ]),
  // What a job stores and repeats in every callback.
  {
    name: "metadata nested 10,000 levels (JSON)",
    path: "/v1/jobs",
    headers: JSON_TYPE,
    body: `{"url":"https://example.com/a.mp3","metadata":${nested(10_000)}}`,
    status: 400,
    code: "invalid_request",
    message: /metadata/,
  },
  {
    name: "metadata nested 17 levels (JSON)",
    path: "/v1/jobs",
    headers: JSON_TYPE,
    body: `{"url":"https://example.com/a.mp3","metadata":${nested(17)}}`,
    status: 400,
    code: "invalid_request",
    message: /16 levels/,
  },
  {
    name: "metadata over 16 KiB (JSON)",
    path: "/v1/jobs",
    headers: JSON_TYPE,
    body: JSON.stringify({ url: "https://example.com/a.mp3", metadata: { a: "x".repeat(17_000) } }),
    status: 400,
    code: "invalid_request",
    message: /16384 bytes/,
  },
  {
    name: "metadata that is an array (JSON)",
    path: "/v1/jobs",
    headers: JSON_TYPE,
    body: JSON.stringify({ url: "https://example.com/a.mp3", metadata: [1] }),
    status: 400,
    code: "invalid_request",
  },
  {
    name: "metadata nested 10,000 levels (multipart)",
    path: "/v1/jobs",
    headers: MULTIPART,
    body: multipart([file, { name: "metadata", data: nested(2_000) }]),
    status: 400,
    code: "invalid_request",
    message: /16 levels/,
  },
  {
    name: "metadata of nested arrays (multipart)",
    path: "/v1/jobs",
    headers: MULTIPART,
    body: multipart([file, { name: "metadata", data: `{"a":${nestedArrays(5_000)}}` }]),
    status: 400,
    code: "invalid_request",
    message: /16 levels/,
  },
  {
    name: "metadata over 16 KiB (multipart)",
    path: "/v1/jobs",
    headers: MULTIPART,
    body: multipart([file, { name: "metadata", data: JSON.stringify({ a: "x".repeat(17_000) }) }]),
    status: 400,
    code: "invalid_request",
    message: /16384 bytes/,
  },
  {
    name: "metadata that is not JSON (multipart)",
    path: "/v1/jobs",
    headers: MULTIPART,
    body: multipart([file, { name: "metadata", data: "{nope" }]),
    status: 400,
    code: "invalid_request",
    message: /JSON object/,
  },
  // Fields that must not be echoed whole or reach the model loader.
  ...["/v1/audio/transcriptions", "/v1/jobs"].flatMap((path): Case[] => [
    {
      name: "a 10 MB model",
      path,
      headers: MULTIPART,
      body: multipart([file, { name: "model", data: "m".repeat(10_000_000) }]),
      status: 400,
      code: "invalid_request",
      message: /model/,
    },
    {
      name: "a model id with .. that stays inside the models dir",
      path,
      headers: MULTIPART,
      body: multipart([file, { name: "model", data: "generated/../generated/whisper-micro" }]),
      status: 400,
      code: "invalid_request",
      message: /model/,
    },
    {
      name: "a model id with a backslash",
      path,
      headers: MULTIPART,
      body: multipart([file, { name: "model", data: "generated\\whisper-micro" }]),
      status: 400,
      code: "invalid_request",
      message: /model/,
    },
    { name: "a 1 MB language", path, headers: MULTIPART, body: multipart([file, { name: "language", data: "x".repeat(1_000_000) }]), status: 400, code: "invalid_request" },
    { name: "an unknown response_format", path, headers: MULTIPART, body: multipart([file, { name: "response_format", data: "<script>" }]), status: 400, code: "invalid_request" },
  ]),
  {
    name: "a temperature that is not a number",
    path: "/v1/audio/transcriptions",
    headers: MULTIPART,
    body: multipart([file, { name: "temperature", data: "hot" }]),
    status: 400,
    code: "invalid_request",
  },
  {
    name: "a callback_url that is not http(s)",
    path: "/v1/jobs",
    headers: MULTIPART,
    body: multipart([file, { name: "callback_url", data: "gopher://example.com" }]),
    status: 400,
    code: "invalid_request",
  },
  ...UPLOAD_ROUTES.map((path): Case => {
    const field = path === "/v1/audio/extract" ? "format" : "model";
    return {
      name: "a text field sent as a file",
      path,
      headers: MULTIPART,
      body: multipart([file, { name: field, filename: `${field}.txt`, type: "text/plain", data: "x" }]),
      status: 400,
      code: "invalid_request",
      message: new RegExp(`^Invalid request: ${field}: send it as a text field, not as a file`),
      param: field,
    };
  }),
  ...[
    ["chunking_strategy nested 10,000 deep", `{"type":"server_vad","threshold":${"[".repeat(10_000)}${"]".repeat(10_000)}}`],
    ["chunking_strategy as an array", '[{"type":"server_vad"}]'],
    ["chunking_strategy with a prototype key", '{"type":"server_vad","__proto__":{"threshold":0.9}}'],
  ].map(
    ([name, data]): Case => ({
      name: name!,
      path: "/v1/audio/transcriptions",
      headers: MULTIPART,
      body: multipart([file, { name: "chunking_strategy", data: data! }]),
      status: 400,
      code: "invalid_request",
      param: "chunking_strategy",
    }),
  ),
  {
    name: "a callback to a private address",
    path: "/v1/jobs",
    headers: MULTIPART,
    body: multipart([file, { name: "callback_url", data: "http://169.254.169.254/latest" }]),
    status: 403,
    code: "forbidden",
    message: /^callback_url: Outbound URL refused/,
    param: "callback_url",
  },
  ...["/v1/jobs", "/v1/audio/extract"].flatMap((path): Case[] => [
    {
      name: "a media URL at a loopback address",
      path,
      headers: JSON_TYPE,
      body: JSON.stringify({ url: "http://127.0.0.1:9/a.wav" }),
      status: 403,
      code: "forbidden",
      message: /^url: Outbound URL refused/,
      param: "url",
    },
    {
      name: "a media URL with credentials in it",
      path,
      headers: JSON_TYPE,
      body: JSON.stringify({ url: "https://user:secret@example.com/a.wav" }),
      status: 400,
      code: "invalid_request",
      message: /^url: Outbound URL refused: credentials/,
      param: "url",
    },
  ]),
  // Headers.
  {
    name: "an Idempotency-Key with control characters",
    path: "/v1/jobs",
    headers: { ...MULTIPART, "idempotency-key": "a\tb" },
    body: multipart([file]),
    status: 400,
    code: "invalid_request",
    message: /Idempotency-Key/,
    param: "Idempotency-Key",
  },
  {
    name: "an Idempotency-Key of 1,000 characters",
    path: "/v1/jobs",
    headers: { ...MULTIPART, "idempotency-key": "k".repeat(1000) },
    body: multipart([file]),
    status: 400,
    code: "invalid_request",
    message: /Idempotency-Key/,
  },
  { name: "a malformed job id", path: "/v1/jobs/..%2F..%2Fetc", method: "GET", status: 400, code: "invalid_request" },
  { name: "an unknown job id", path: "/v1/jobs/job_0000", method: "GET", status: 404, code: "not_found" },
  { name: "a bad status filter", path: "/v1/jobs?status=everything", method: "GET", status: 400, code: "invalid_request" },
  { name: "a bad cursor", path: "/v1/jobs?cursor=%00%00", method: "GET", status: 400, code: "invalid_request", param: "cursor" },
  { name: "a limit that is not a number", path: "/v1/jobs?limit=1e400", method: "GET", status: 400, code: "invalid_request" },
  { name: "a result format that does not exist", path: "/v1/jobs/job_0000/result?format=exe", method: "GET", status: 400, code: "invalid_request" },
];

const unauthenticated: Case[] = [
  { name: "no key", path: "/v1/audio/transcriptions", headers: MULTIPART, body: multipart([file]), status: 401, code: "unauthorized" },
  {
    name: "a garbage Authorization header",
    path: "/v1/jobs",
    headers: { ...MULTIPART, authorization: "Bearer\u00ff\u00fe" },
    body: multipart([file]),
    status: 401,
    code: "unauthorized",
  },
  {
    name: "a Basic Authorization header",
    path: "/v1/models",
    method: "GET",
    headers: { authorization: `Basic ${Buffer.from(`x:${KEY}`).toString("base64")}` },
    status: 401,
    code: "unauthorized",
  },
  { name: "headers over the HTTP parser's limit", path: "/v1/models", method: "GET", headers: { "x-api-key": "k".repeat(100_000) }, status: 431, code: "headers_too_large" },
];

async function send(c: Pick<Case, "path" | "method" | "headers" | "body">, withAuth = true): Promise<Response> {
  // A body refused by its length is answered before it is read, and the server then drops the
  // connection without saying so; fetch would send the next request on it (an open finding).
  const tooLarge = c.body !== undefined && c.body.length > 64 * 1024 && c.headers?.["content-type"] === JSON_TYPE["content-type"];
  return fetch(`${service.url}${c.path}`, {
    method: c.method ?? "POST",
    headers: { ...(withAuth ? auth : {}), ...c.headers, ...(tooLarge ? { connection: "close" } : {}) },
    body: c.method === "GET" || c.body === undefined ? undefined : typeof c.body === "string" ? c.body : new Uint8Array(c.body),
  });
}

/** The one error shape, with the request id of the response; returns the error. */
/** What the service writes back on one connection to the bytes given, until it closes it. */
async function rawExchange(bytes: string): Promise<string> {
  const { hostname, port } = new URL(service.url);
  const socket = connect(Number(port), hostname);
  socket.write(bytes);
  return await new Promise<string>((resolve, reject) => {
    let text = "";
    socket.on("data", (chunk) => (text += chunk.toString()));
    socket.on("close", () => resolve(text));
    socket.on("error", reject);
  });
}

async function expectErrorShape(res: Response): Promise<{ code: string; message: string; param: string | null; request_id: string }> {
  const text = await res.text();
  // A refused field is never repeated whole.
  expect(text.length).toBeLessThan(4096);
  const body = JSON.parse(text) as { error: { code: string; message: string; param: string | null; request_id: string } };
  expect(body.error).toMatchObject({ code: expect.any(String), message: expect.any(String), request_id: res.headers.get("x-request-id") });
  expect(body.error.request_id).toMatch(/^[\w.-]{1,128}$/);
  return body.error;
}

/** A deterministic generator, so a failing mutation can be replayed from its seed. */
const random = (seed: number) => mulberry32(seed >>> 0);

const HOSTILE_STRINGS = [
  "",
  "..",
  "../../etc/passwd",
  "\u0000",
  "%00",
  "a".repeat(5000),
  "💥",
  "\r\n--b0undary--\r\n",
  '"',
  "{}",
  "[]",
  "null",
  "-1",
  "1e309",
  "NaN",
  "<x>",
  "$(id)",
];
const FIELDS = [
  "file",
  "model",
  "language",
  "prompt",
  "response_format",
  "temperature",
  "timestamp_granularities[]",
  "chunking_strategy",
  "chunking_strategy[threshold]",
  "task",
  "callback_url",
  "callback_include_result",
  "metadata",
  "format",
  "url",
];

/** A valid-looking upload, then one to three random damages to its bytes or fields. */
function mutatedMultipart(rand: () => number): { headers: Record<string, string>; body: Buffer } {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!;
  const parts: Part[] = [{ ...file, data: Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256))) }];
  for (let i = Math.floor(rand() * 4); i > 0; i--) parts.push({ name: pick(FIELDS), data: pick(HOSTILE_STRINGS), ...(rand() < 0.2 ? { filename: pick(HOSTILE_STRINGS) } : {}) });
  let body = multipart(parts, { close: rand() < 0.8 });
  for (let i = 1 + Math.floor(rand() * 3); i > 0; i--) {
    const at = Math.floor(rand() * body.length);
    const damage = pick(["truncate", "flip", "insert", "drop-crlf"] as const);
    if (damage === "truncate") body = body.subarray(0, at);
    else if (damage === "flip" && body.length) body[at] = Math.floor(rand() * 256);
    else if (damage === "insert") body = Buffer.concat([body.subarray(0, at), Buffer.from(pick(HOSTILE_STRINGS)), body.subarray(at)]);
    else body = Buffer.from(body.toString("latin1").replace("\r\n", ""), "latin1");
  }
  const contentType = pick([
    "multipart/form-data; boundary=b0undary",
    "multipart/form-data; boundary=b0undary; charset=utf-8",
    "multipart/form-data",
    "multipart/form-data; boundary=other",
    "multipart/mixed; boundary=b0undary",
  ]);
  return { headers: { "content-type": contentType }, body };
}

/** A JSON job or extract request with random values in random fields, sometimes cut short. */
function mutatedJson(rand: () => number): { headers: Record<string, string>; body: string } {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!;
  const value = (depth: number): unknown => {
    const kind = Math.floor(rand() * (depth > 3 ? 4 : 6));
    if (kind === 0) return pick(HOSTILE_STRINGS);
    if (kind === 1) return rand() < 0.5 ? Math.floor(rand() * 1e6) - 5e5 : rand();
    if (kind === 2) return rand() < 0.5;
    if (kind === 3) return null;
    if (kind === 4) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
    return Object.fromEntries(Array.from({ length: Math.floor(rand() * 4) }, () => [pick(FIELDS), value(depth + 1)]));
  };
  const request: Record<string, unknown> = { url: pick(["https://127.0.0.1/a.mp3", "http://[::1]/x", "https://example.invalid/a.wav", ...HOSTILE_STRINGS]) };
  for (let i = Math.floor(rand() * 5); i > 0; i--) request[pick(FIELDS)] = value(0);
  let body = JSON.stringify(request);
  if (rand() < 0.3) body = body.slice(0, Math.floor(rand() * body.length));
  return { headers: { "content-type": pick(["application/json", "application/json; charset=utf-8", "application/vnd.api+json"]) }, body };
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  dataDir = await mkdtemp(join(tmpdir(), "slotscribe-hostile-"));
  service = await startService({
    API_KEYS: KEY,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: dataDir,
    WEBHOOK_SECRET: generateWebhookSecret(),
    MAX_UPLOAD_BYTES: "12MiB",
    REQUEST_TIMEOUT: "5s",
    CORS_ORIGINS: PAGE,
  });
});

afterAll(async () => {
  await service?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

describe("hostile input", () => {
  it.each(cases.map((c) => [`${c.path}: ${c.name}`, c] as const))("%s", async (_name, c) => {
    const res = await send(c);
    const error = await expectErrorShape(res);
    expect({ status: res.status, code: error.code }).toEqual({ status: c.status, code: c.code });
    if (c.message) expect(error.message).toMatch(c.message);
    if (c.param) expect(error.param).toBe(c.param);
  });

  it.each(unauthenticated.map((c) => [`${c.path}: ${c.name}`, c] as const))("%s", async (_name, c) => {
    const res = await send(c, false);
    const error = await expectErrorShape(res);
    expect({ status: res.status, code: error.code }).toEqual({ status: c.status, code: c.code });
  });

  it("replaces a request id no log could hold with one of its own", async () => {
    for (const id of ["a b", "x".repeat(129), "<script>", "id\u00e9"]) {
      const res = await send({ path: "/v1/jobs", headers: { ...JSON_TYPE, "x-request-id": id }, body: "{" });
      expect((await expectErrorShape(res)).request_id).toMatch(/^req_[0-9a-f]{32}$/);
    }
  });

  it("answers an upload that stalls with 408 after REQUEST_TIMEOUT, under the request id it logs, readable by the page that sent it", async () => {
    const head = `--b\r\ncontent-disposition: form-data; name="file"; filename="a.wav"\r\n\r\n`;
    const answer = await rawExchange(
      `POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\norigin: ${PAGE}\r\nauthorization: Bearer ${KEY}\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 100000\r\n\r\n${head}${"\0".repeat(1000)}`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    const requestId = /x-request-id: (\S+)/.exec(answer)?.[1];
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toMatchObject({ error: { code: "request_timeout", request_id: requestId } });
    expect(answer).toContain(`access-control-allow-origin: ${PAGE}\r\n`);
    expect(answer).toMatch(/access-control-expose-headers: [^\r]*x-request-id/);
    expect(service.logs.filter((line) => line.requestId === requestId).map((line) => line.status)).toContain(408);
    // The app's own line for the request it was reading carries the same id.
    await eventually(() => expect(service.logs.filter((line) => line.requestId === requestId && line.msg === "request")).toHaveLength(1));
  });

  it("lets a listed page read the 431 for headers over the parser's limit, and no other page", async () => {
    const request = (origin: string) => `GET /v1/models HTTP/1.1\r\nhost: x\r\norigin: ${origin}\r\nx-filler: ${"f".repeat(20_000)}\r\n\r\n`;
    const listed = await rawExchange(request(PAGE));
    expect(listed).toMatch(/^HTTP\/1\.1 431 /);
    expect(listed).toContain(`access-control-allow-origin: ${PAGE}\r\n`);
    const other = await rawExchange(request("https://elsewhere.example"));
    expect(other).toMatch(/^HTTP\/1\.1 431 /);
    expect(other).not.toContain("access-control-allow-origin");
  });

  const SEEDS = 150;
  it(`answers ${SEEDS} random damaged uploads and ${SEEDS} random JSON requests without a server error`, async () => {
    const answers: { seed: number; kind: string; path: string; status: number }[] = [];
    for (let seed = 1; seed <= SEEDS; seed++) {
      const rand = random(seed);
      for (const [kind, request] of [
        ["multipart", mutatedMultipart(rand)],
        ["json", mutatedJson(rand)],
      ] as const) {
        const path = kind === "json" ? JSON_ROUTES[seed % JSON_ROUTES.length]! : UPLOAD_ROUTES[seed % UPLOAD_ROUTES.length]!;
        const res = await send({ path, ...request });
        answers.push({ seed, kind, path, status: res.status });
        if (res.status >= 400) await expectErrorShape(res);
        else await res.arrayBuffer();
      }
    }
    expect(answers.filter((a) => a.status >= 500)).toEqual([]);
    // The damage must actually be refused, not mostly waved through.
    expect(answers.filter((a) => a.status >= 400).length).toBeGreaterThan(answers.length * 0.8);
  });

  it("logged none of it as a server error", async () => {
    expect(service.logs.filter((line) => (line.level as number) >= 50)).toEqual([]);
    expect(service.logs.filter((line) => line.msg === "request" && (line.status as number) >= 400).every((line) => typeof line.error === "string")).toBe(true);
  });
});
