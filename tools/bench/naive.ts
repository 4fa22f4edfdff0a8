/**
 * The naive Whisper servers the benchmark compares slotscribe with, the two patterns common in small
 * Node services. Per request (the default): every request decodes its upload with ffmpeg, builds a
 * fresh transformers.js pipeline with default settings (default onnxruntime threads, no admission,
 * no queue), transcribes with `chunk_length_s: 30`, and answers. The one courtesy it gets is
 * `dispose()` after each request, so its memory reflects the requests in flight rather than a leak:
 * the comparison is against the best case of the pattern. Serial: one pipeline loaded at start,
 * and requests take turns on it behind one lock, so memory stays at one copy and a short clip waits
 * for every file ahead of it.
 *
 *   node --import tsx tools/bench/naive.ts <modelsDir> <model id> [q8|fp32] [per-request|serial]
 *
 * Listens on a random port of 127.0.0.1 and prints one JSON line {"url": ...} when ready. POST
 * /transcribe with the audio file as the body; GET /healthz. Exits when its stdin closes, so it never
 * outlives the benchmark that started it.
 */
import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { env, pipeline } from "@huggingface/transformers";
import { resolveFfmpeg } from "../../lib/audio/ffmpeg.ts";

const [modelsDir, modelId, dtypeArg, modeArg] = process.argv.slice(2);
if (!modelsDir || !modelId || (modeArg !== undefined && modeArg !== "per-request" && modeArg !== "serial")) {
  console.error("usage: naive.ts <modelsDir> <model id> [q8|fp32] [per-request|serial]");
  process.exit(2);
}
const dtype = (dtypeArg ?? "q8") as "q8" | "fp32";
const serial = modeArg === "serial";
env.allowRemoteModels = false;
env.localModelPath = modelsDir;
const ffmpeg = (await resolveFfmpeg()).path;

/** The whole upload as 16 kHz mono float samples, the way such servers usually read audio. */
function decode(body: Buffer): Promise<Float32Array> {
  return new Promise((resolve, reject) => {
    const child = spawn(ffmpeg, ["-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "pipe:1"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const chunks: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => chunks.push(d));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.on("error", () => undefined);
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`ffmpeg exited with ${code}: ${stderr.trim()}`));
      const all = Buffer.concat(chunks);
      const aligned = new Float32Array(all.length / 4);
      new Uint8Array(aligned.buffer).set(all.subarray(0, aligned.length * 4));
      resolve(aligned);
    });
    child.stdin.end(body);
  });
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const load = () => pipeline("automatic-speech-recognition", modelId!, { dtype });
const shared = serial ? await load() : null;
/** The end of the last request's turn on the shared pipeline (serial). */
let turn: Promise<unknown> = Promise.resolve();

async function transcribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const audio = await decode(await readBody(req));
  const { text, loadSeconds } = shared ? await onSharedPipeline(shared, audio) : await onFreshPipeline(audio);
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ text, loadSeconds, seconds: (performance.now() - started) / 1000 }));
}

/** Serial: the request's turn on the one pipeline, after every request that came before it. */
async function onSharedPipeline(asr: Awaited<ReturnType<typeof load>>, audio: Float32Array): Promise<{ text: string; loadSeconds?: number }> {
  const mine = turn.then(() => asr(audio, { chunk_length_s: 30 }));
  turn = mine.catch(() => undefined);
  return { text: ((await mine) as { text: string }).text };
}

/** The anti-pattern under test: a fresh pipeline (model load) for every request, default settings. */
async function onFreshPipeline(audio: Float32Array): Promise<{ text: string; loadSeconds: number }> {
  const started = performance.now();
  const asr = await load();
  const loadSeconds = (performance.now() - started) / 1000;
  try {
    return { text: ((await asr(audio, { chunk_length_s: 30 })) as { text: string }).text, loadSeconds };
  } finally {
    await asr.dispose();
  }
}

const server = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  if (req.method === "POST" && req.url === "/transcribe") {
    transcribe(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: (err as Error)?.message ?? String(err) }));
    });
    return;
  }
  res.writeHead(404).end();
});
server.requestTimeout = 0;
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address() as AddressInfo;
  console.log(JSON.stringify({ url: `http://127.0.0.1:${port}` }));
});

// Never outlive the parent: it holds our stdin open for as long as it wants us running.
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
