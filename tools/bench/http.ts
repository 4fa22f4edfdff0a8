import { request as httpRequest, Agent } from "node:http";
import { basename } from "node:path";

// HTTP: node:http without timeouts (a small fp32 5-min file runs for minutes; fetch's 300 s headers
// timeout would cut it), keep-alive for the /healthz loop.

export const agent = new Agent({ keepAlive: true, maxSockets: 64 });

interface HttpResult {
  status: number;
  body: Buffer;
  /** Wall milliseconds from the request's start to the end of the response body. */
  ms: number;
}

export function http(url: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer; signal?: AbortSignal } = {}): Promise<HttpResult> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const req = httpRequest(url, { method: init.method ?? "GET", headers: init.headers, agent, signal: init.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), ms: performance.now() - started }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

function multipart(file: Buffer, filename: string, fields: Record<string, string>): { body: Buffer; contentType: string } {
  const boundary = `----slotscribe-bench-${Math.random().toString(16).slice(2)}`;
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  const type = filename.endsWith(".mp3") ? "audio/mpeg" : "audio/wav";
  parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: ${type}\r\n\r\n`));
  parts.push(file, Buffer.from(`\r\n--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

export interface Clip {
  name: string;
  path: string;
  seconds: number;
  bytes: Buffer;
}

export interface TranscriptionResult {
  ok: boolean;
  status: number;
  seconds: number;
  /** Text tokens in the transcript's segments (timestamp tokens not counted). */
  tokens: number;
  /** Windows slotscribe decoded for it: the distinct `seek` (window offsets) among its segments. */
  windows?: number;
  /** Segments in the transcript. */
  segments?: number;
  error?: string;
}

export async function transcribeOnService(url: string, clip: Clip, signal?: AbortSignal): Promise<TranscriptionResult> {
  const { body, contentType } = multipart(clip.bytes, basename(clip.path), { model: "whisper-1", response_format: "verbose_json" });
  const res = await http(`${url}/v1/audio/transcriptions`, { method: "POST", headers: { "content-type": contentType }, body, signal });
  if (res.status !== 200) return { ok: false, status: res.status, seconds: res.ms / 1000, tokens: 0, error: res.body.toString().slice(0, 300) };
  const { segments = [] } = JSON.parse(res.body.toString()) as { segments?: { tokens?: number[]; seek?: number }[] };
  const tokens = segments.reduce((n, s) => n + (s.tokens?.length ?? 0), 0);
  return { ok: true, status: 200, seconds: res.ms / 1000, tokens, windows: new Set(segments.map((s) => s.seek)).size, segments: segments.length };
}

export async function transcribeOnNaive(url: string, clip: Clip): Promise<TranscriptionResult> {
  const res = await http(`${url}/transcribe`, { method: "POST", headers: { "content-type": "audio/wav" }, body: clip.bytes });
  if (res.status !== 200) return { ok: false, status: res.status, seconds: res.ms / 1000, tokens: 0, error: res.body.toString().slice(0, 300) };
  return { ok: true, status: 200, seconds: res.ms / 1000, tokens: 0 };
}

export const sleep = (msecs: number) => new Promise((r) => setTimeout(r, msecs));
