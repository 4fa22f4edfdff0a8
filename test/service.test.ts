import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import OpenAI, { toFile } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runFfmpeg } from "../lib/audio/ffmpeg.ts";
import { writeAudioFile, type AudioFileFormat } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel, sharedDir } from "../tools/models/generate.ts";
import { WHISPER_LANGUAGE_NAMES } from "../lib/engine/languages.ts";
import { microTones, MICRO_TONES, type MicroPart } from "../tools/models/micro.ts";
import { startService, type ServiceProcess } from "./support/service-process.ts";

const API_KEY = `sk-test-${Math.random().toString(36).slice(2)}`;
const CONTAINERS: AudioFileFormat[] = ["wav", "mp3", "m4a", "ogg", "opus", "flac", "webm", "mp4", "mov"];

let work: string;
let serviceTmp: string;
let service: ServiceProcess;
let client: OpenAI;

async function audioFile(name: string, parts: MicroPart[], format?: AudioFileFormat): Promise<string> {
  const path = join(work, name);
  if (!existsSync(path)) await writeAudioFile(path, microTones(parts), { format });
  return path;
}

async function post(path: string, form: FormData, headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` }): Promise<Response> {
  return fetch(`${service.url}${path}`, { method: "POST", body: form, headers });
}

async function formWith(file: string | Blob, fields: Record<string, string> = {}): Promise<FormData> {
  const form = new FormData();
  form.set("file", typeof file === "string" ? new Blob([await readFile(file)]) : file, "upload.bin");
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  return form;
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-it-"));
  serviceTmp = await mkdtemp(join(tmpdir(), "slotscribe-svc-"));
  service = await startService({
    API_KEYS: `other-key,${API_KEY}`,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: join(work, "data"),
    TMPDIR: serviceTmp,
    MAX_UPLOAD_BYTES: "5MiB",
    MAX_AUDIO_DURATION: "10m",
  });
  client = new OpenAI({ apiKey: API_KEY, baseURL: `${service.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await service?.stop();
  await rm(work, { recursive: true, force: true });
  await rm(serviceTmp, { recursive: true, force: true });
});

describe("the OpenAI SDK against the real server", () => {
  it("transcribes to json by default", async () => {
    const file = await audioFile("bravo.wav", [{ word: "bravo", seconds: 5 }]);
    const out = await client.audio.transcriptions.create({ file: await toFile(readFile(file), "bravo.wav"), model: "whisper-1" });
    expect(out.text).toBe("bravo");
  });

  it("returns text, srt and vtt as the SDK expects them", async () => {
    const file = await audioFile("two-windows.wav", [
      { word: "alpha", seconds: 30 },
      { word: "delta", seconds: 12 },
    ]);
    const text = await client.audio.transcriptions.create({ file: await toFile(readFile(file), "a.wav"), model: "whisper-1", response_format: "text" });
    expect(text).toBe("alpha delta\n");
    const srt = await client.audio.transcriptions.create({ file: await toFile(readFile(file), "a.wav"), model: "whisper-1", response_format: "srt" });
    expect(srt).toBe("1\n00:00:00,000 --> 00:00:30,000\nalpha\n\n2\n00:00:30,000 --> 00:00:42,000\ndelta\n\n");
    const vtt = await client.audio.transcriptions.create({ file: await toFile(readFile(file), "a.wav"), model: "whisper-1", response_format: "vtt" });
    expect(vtt).toBe("WEBVTT\n\n00:00:00.000 --> 00:00:30.000\nalpha\n\n00:00:30.000 --> 00:00:42.000\ndelta\n\n");
  });

  it("gives verbose_json with every window in order and absolute segment times", async () => {
    const file = await audioFile("long.flac", [{ word: "echo", seconds: 30 }, { word: "charlie", seconds: 30 }, { silence: 30 }, { word: "alpha", seconds: 10 }, { silence: 5 }]);
    const out = await client.audio.transcriptions.create({
      file: await toFile(readFile(file), "long.flac"),
      model: "whisper-1",
      response_format: "verbose_json",
      timestamp_granularities: ["segment"],
    });
    expect(out.text).toBe("echo charlie alpha");
    expect((out as OpenAI.Audio.TranslationVerbose).language).toBe("english");
    expect(out.duration).toBeCloseTo(105, 0);
    const segments = out.segments!.map((s) => ({ text: s.text.trim(), start: Math.round(s.start), end: Math.round(s.end) }));
    expect(segments).toEqual([
      { text: "echo", start: 0, end: 30 },
      { text: "charlie", start: 30, end: 60 },
      { text: "alpha", start: 90, end: 100 },
    ]);
  });

  it("returns an empty transcript for silence, not an error and not someone else's text", async () => {
    await client.audio.transcriptions.create({ file: await toFile(readFile(await audioFile("charlie.wav", [{ word: "charlie", seconds: 4 }])), "c.wav"), model: "whisper-1" });
    const silent = await audioFile("silence.mp3", [{ silence: 20 }], "mp3");
    const out = await client.audio.transcriptions.create({ file: await toFile(readFile(silent), "s.mp3"), model: "whisper-1", response_format: "verbose_json" });
    expect(out.text).toBe("");
    expect(out.segments).toEqual([]);
  });

  it.each(CONTAINERS)("decodes a %s upload", async (format) => {
    const tone = MICRO_TONES[CONTAINERS.indexOf(format) % MICRO_TONES.length]!;
    const file = await audioFile(`tone.${format}`, [{ word: tone.word, seconds: 6 }], format);
    const out = await client.audio.transcriptions.create({ file: await toFile(readFile(file), `tone.${format}`), model: "whisper-1" });
    expect(out.text).toBe(tone.word);
  });

  it("downmixes stereo and resamples 44.1 kHz input", async () => {
    const path = join(work, "stereo44.wav");
    await writeAudioFile(path, microTones([{ word: "delta", seconds: 5 }]), { channels: 2, sampleRate: 44_100 });
    const out = await client.audio.transcriptions.create({ file: await toFile(readFile(path), "s.wav"), model: "whisper-1" });
    expect(out.text).toBe("delta");
  });

  it("gives every concurrent request its own audio's transcript", async () => {
    const words = Array.from({ length: 8 }, (_, i) => MICRO_TONES[i % MICRO_TONES.length]!.word);
    const files = await Promise.all(words.map((w, i) => audioFile(`concurrent-${i}.wav`, [{ silence: i % 3 }, { word: w, seconds: 4 + i }])));
    const outs = await Promise.all(files.map(async (f) => (await client.audio.transcriptions.create({ file: await toFile(readFile(f), "c.wav"), model: "whisper-1" })).text));
    expect(outs).toEqual(words);
  });

  it("transcribes a real speech clip from the shared set", async (ctx) => {
    const jfk = join(sharedDir(), "audio", "jfk", "jfk.wav");
    if (!existsSync(jfk)) ctx.skip();
    const out = await client.audio.transcriptions.create({ file: await toFile(readFile(jfk), "jfk.wav"), model: "whisper-1", response_format: "verbose_json" });
    expect(out.duration).toBeCloseTo(11, 0);
  });

  it("lists models, including the alias and the local model directories", async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toContain("whisper-1");
    expect(ids).toContain("generated/whisper-micro");
  });

  it("refuses translation on an English-only model with a clear 400", async () => {
    const file = await audioFile("bravo.wav", [{ word: "bravo", seconds: 5 }]);
    const err = await client.audio.translations.create({ file: await toFile(readFile(file), "b.wav"), model: "whisper-1" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(/English-only/);
  });
});

describe("multilingual models", () => {
  beforeAll(async () => {
    await generateModel({ kind: "tiny" });
  });

  it("detects the language when none is given, and uses a forced one", async () => {
    const file = await audioFile("speechlike.wav", [{ word: "charlie", seconds: 8 }]);
    const detected = await client.audio.transcriptions.create({ file: await toFile(readFile(file), "a.wav"), model: "generated/whisper-tiny", response_format: "verbose_json" });
    expect(Object.values(WHISPER_LANGUAGE_NAMES)).toContain(detected.language);
    const forced = await client.audio.transcriptions.create({
      file: await toFile(readFile(file), "a.wav"),
      model: "generated/whisper-tiny",
      language: "de",
      response_format: "verbose_json",
    });
    expect(forced.language).toBe("german");
    expect(forced.segments!.length).toBeGreaterThan(0);
  });

  it("translates with a multilingual model", async () => {
    const file = await audioFile("speechlike.wav", [{ word: "charlie", seconds: 8 }]);
    const out = await client.audio.translations.create({ file: await toFile(readFile(file), "a.wav"), model: "generated/whisper-tiny", response_format: "verbose_json" });
    expect((out as unknown as { task: string }).task).toBe("translate");
    // OpenAI's TranslationVerbose.language is "the language of the output translation (always english)".
    expect((out as OpenAI.Audio.TranslationVerbose).language).toBe("english");
    expect(out.text.length).toBeGreaterThan(0);
  });
});

describe("bad and hostile input", () => {
  const expectError = async (res: Response, status: number, code: string) => {
    expect(res.status).toBe(status);
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string; param: string | null; details?: { reason?: string } } };
    expect(body.error.code).toBe(code);
    expect(body.error.request_id).toBe(res.headers.get("x-request-id"));
    expect(body.error.message.length).toBeGreaterThan(5);
    return body.error;
  };

  // OpenAI answers a file it cannot read with 400 on its audio routes; the reason stays in details.
  const expectBadAudio = async (res: Response, reason: string) => {
    const error = await expectError(res, 400, "invalid_request");
    expect(error).toMatchObject({ param: "file", details: { reason } });
    return error;
  };

  it("answers non-media with 400, unsupported_media", async () => {
    const path = join(work, "notes.txt");
    await writeFile(path, "this is not audio ".repeat(200));
    const error = await expectBadAudio(await post("/v1/audio/transcriptions", await formWith(path)), "unsupported_media");
    expect(error.message).not.toContain(work);
  });

  it("answers an empty file with 400, unprocessable_audio", async () => {
    await expectBadAudio(await post("/v1/audio/transcriptions", await formWith(new Blob([]))), "unprocessable_audio");
  });

  it("answers a video without an audio track with 400, unprocessable_audio", async () => {
    const path = join(work, "video-only.mp4");
    await runFfmpeg(["-f", "lavfi", "-i", "color=c=black:s=64x64:r=5", "-t", "2", "-c:v", "mpeg4", "-y", path]);
    const error = await expectBadAudio(await post("/v1/audio/transcriptions", await formWith(path)), "unprocessable_audio");
    expect(error.message).toMatch(/no audio/);
  });

  it("answers audio shorter than a tenth of a second with 400 in OpenAI's words, and takes a tenth and more", async () => {
    for (const [name, seconds] of [
      ["short.wav", 0.05],
      ["short.flac", 0.09],
    ] as const) {
      const path = join(work, name);
      await runFfmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", String(seconds), "-ac", "1", "-ar", "16000", "-y", path]);
      const error = await expectBadAudio(await post("/v1/audio/transcriptions", await formWith(path)), "unprocessable_audio");
      expect(error.message).toBe("Audio file is too short. Minimum audio length is 0.1 seconds.");
      expect(error).toMatchObject({ details: { min_duration_seconds: 0.1 } });
    }
    const tenth = join(work, "tenth.wav");
    await runFfmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "0.1", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", "-y", tenth]);
    expect((await post("/v1/audio/transcriptions", await formWith(tenth))).status).toBe(200);
  });

  it("answers a truncated file with 400, unprocessable_audio", async () => {
    const whole = await readFile(await audioFile("tone.m4a", [{ word: "alpha", seconds: 6 }], "m4a"));
    const res = await post("/v1/audio/transcriptions", await formWith(new Blob([whole.subarray(0, 200)])));
    await expectBadAudio(res, "unprocessable_audio");
  });

  it("answers an upload over the size limit with 413", async () => {
    await expectError(await post("/v1/audio/transcriptions", await formWith(new Blob([new Uint8Array(6 * 2 ** 20)]))), 413, "payload_too_large");
  });

  it("answers a missing file, an unknown model, a bad format and an unknown language with 400", async () => {
    const wav = await audioFile("bravo.wav", [{ word: "bravo", seconds: 5 }]);
    const noFile = new FormData();
    noFile.set("model", "whisper-1");
    expect((await expectError(await post("/v1/audio/transcriptions", noFile), 400, "invalid_request")).message).toMatch(/file/);
    expect((await expectError(await post("/v1/audio/transcriptions", await formWith(wav, { model: "whisper-9" })), 400, "invalid_request")).message).toMatch(/model/);
    await expectError(await post("/v1/audio/transcriptions", await formWith(wav, { response_format: "docx" })), 400, "invalid_request");
    await expectError(await post("/v1/audio/transcriptions", await formWith(wav, { language: "klingon" })), 400, "invalid_request");
    // Words exist only in verbose_json.
    await expectError(await post("/v1/audio/transcriptions", await formWith(wav, { "timestamp_granularities[]": "word" })), 400, "invalid_request");
    await expectError(await post("/v1/audio/transcriptions", await formWith(wav, { model: "../../etc" })), 400, "invalid_request");
    // Names every object has as a property are names like any other.
    for (const name of ["constructor", "__proto__"]) {
      expect((await expectError(await post("/v1/audio/transcriptions", await formWith(wav, { model: name })), 400, "invalid_request")).message).toContain(`"${name}"`);
    }
  });

  it("answers unknown paths with 404 in the same shape", async () => {
    const res = await fetch(`${service.url}/v1/nothing`, { headers: { authorization: `Bearer ${API_KEY}` } });
    await expectError(res, 404, "not_found");
  });

  it("leaves no temp files behind, whatever the outcome", async () => {
    const [own, ...others] = await readdir(join(work, "data", "tmp"));
    expect(others).toEqual([]);
    expect(await readdir(join(work, "data", "tmp", own!))).toEqual([]);
    expect((await readdir(serviceTmp)).filter((name) => name.startsWith("slotscribe"))).toEqual([]);
  });
});

describe("authentication", () => {
  it("refuses a request without a key or with a wrong key with 401", async () => {
    const form = await formWith(await audioFile("bravo.wav", [{ word: "bravo", seconds: 5 }]));
    const attempts: Record<string, string>[] = [{}, { authorization: "Bearer nope" }, { "x-api-key": "nope" }];
    for (const headers of attempts) {
      const res = await post("/v1/audio/transcriptions", form, headers);
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
    }
    const sdk = new OpenAI({ apiKey: "wrong", baseURL: `${service.url}/v1`, maxRetries: 0 });
    await expect(sdk.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("accepts the key as Bearer or as X-API-Key", async () => {
    expect((await fetch(`${service.url}/v1/models`, { headers: { "x-api-key": API_KEY } })).status).toBe(200);
    expect((await fetch(`${service.url}/v1/models`, { headers: { authorization: "Bearer other-key" } })).status).toBe(200);
  });

  it("keeps probes and the API description public", async () => {
    for (const path of ["/healthz", "/readyz", "/openapi.json", "/docs"]) {
      expect((await fetch(`${service.url}${path}`)).status, path).toBe(200);
    }
    const doc = (await (await fetch(`${service.url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/healthz", "/readyz"]));
  });

  it("never writes the API key into its logs", () => {
    expect(JSON.stringify(service.logs)).not.toContain(API_KEY);
  });
});

describe("admission under a burst", () => {
  let busy: ServiceProcess;

  beforeAll(async () => {
    busy = await startService({
      ALLOW_ANONYMOUS: "true",
      WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
      DEFAULT_MODEL: "generated/whisper-micro",
      DATA_DIR: join(work, "data-busy"),
      WINDOW_SLOTS: "1",
      MAX_ACTIVE_JOBS: "1",
      QUEUE_SIZE: "2",
      QUEUE_TIMEOUT: "2m",
    });
  });
  afterAll(async () => {
    await busy?.stop();
  });

  it("serves what fits, queues up to the limit, and answers the rest 429 with Retry-After", async () => {
    const file = await audioFile("burst.wav", [
      { word: "alpha", seconds: 30 },
      { word: "bravo", seconds: 30 },
      { word: "charlie", seconds: 30 },
    ]);
    const body = await readFile(file);
    const send = () => {
      const form = new FormData();
      form.set("file", new Blob([body]), "burst.wav");
      return fetch(`${busy.url}/v1/audio/transcriptions`, { method: "POST", body: form });
    };
    const first = send();
    // Once the first request holds the only active place, two can wait and the rest are refused.
    await expect
      .poll(async () => ((await (await fetch(`${busy.url}/v1/capacity`)).json()) as { instance: { transcriptions: { active: number } } }).instance.transcriptions.active, {
        timeout: 30_000,
      })
      .toBe(1);
    const rest = await Promise.all(Array.from({ length: 6 }, send));
    const responses = [await first, ...rest];
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429, 429]);
    for (const res of responses) {
      if (res.status === 200) {
        expect(((await res.json()) as { text: string }).text).toBe("alpha bravo charlie");
      } else {
        expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
      }
    }
  });

  it("keeps answering /healthz while every slot is busy", async () => {
    const file = await audioFile("burst.wav", []);
    const form = new FormData();
    form.set("file", new Blob([await readFile(file)]), "burst.wav");
    const running = fetch(`${busy.url}/v1/audio/transcriptions`, { method: "POST", body: form });
    await expect
      .poll(async () => ((await (await fetch(`${busy.url}/v1/capacity`)).json()) as { instance: { windows: { inUse: number } } }).instance.windows.inUse, { timeout: 30_000 })
      .toBe(1);
    const health = await Promise.all(Array.from({ length: 20 }, () => fetch(`${busy.url}/healthz`)));
    expect(health.every((r) => r.status === 200)).toBe(true);
    expect((await running).status).toBe(200);
  });
});

describe("many uploads arriving at once", () => {
  it("takes them without a listener warning on stderr, where only JSON log lines belong", async () => {
    let stderr = "";
    const onStderr = (d: Buffer) => (stderr += d.toString());
    service.child.stderr!.on("data", onStderr);
    const { port } = new URL(service.url);
    const boundary = "slotscribe-burst";
    const head = `--${boundary}\r\ncontent-disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="a.wav"\r\ncontent-type: audio/wav\r\n\r\n`;
    // Each upload stalls mid-body, so all of them are being received at the same time.
    const sockets = Array.from({ length: 16 }, () =>
      connect(Number(port), "127.0.0.1", function (this: Socket) {
        this.write(
          `POST /v1/audio/transcriptions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${API_KEY}\r\ncontent-type: multipart/form-data; boundary=${boundary}\r\ncontent-length: 100000\r\n\r\n${head}${"x".repeat(1000)}`,
        );
      }),
    );
    try {
      await new Promise((r) => setTimeout(r, 1500));
      expect(sockets.every((s) => !s.destroyed)).toBe(true);
      expect(stderr).not.toMatch(/MaxListenersExceededWarning|Warning/);
    } finally {
      for (const s of sockets) s.destroy();
      service.child.stderr!.off("data", onStderr);
    }
  });
});

describe("an answer sent before the upload has arrived", () => {
  it("reaches a client on a connection that is not kept alive (no reset mid-upload)", async () => {
    const { port } = new URL(service.url);
    const body = Buffer.alloc(4 * 1024 * 1024, 1);
    const outcomes: string[] = [];
    for (let i = 0; i < 12; i++) {
      outcomes.push(
        await new Promise<string>((resolve) => {
          // agent: false sends Connection: close; the wrong key is refused before the body is read.
          const req = request(
            {
              host: "127.0.0.1",
              port: Number(port),
              method: "POST",
              path: "/v1/audio/transcriptions",
              agent: false,
              headers: { authorization: "Bearer wrong-key", "content-type": "application/octet-stream", "content-length": body.length },
            },
            (res) => {
              res.resume();
              res.on("end", () => resolve(String(res.statusCode)));
            },
          );
          req.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
          req.end(body);
        }),
      );
    }
    expect(outcomes).toEqual(Array(12).fill("401"));
  });
});
