/**
 * OpenAI parity, driven by the official SDK against real server processes on the designed micro
 * model: streaming, aliases, models.retrieve, the error shape, verbose_json's decoding statistics,
 * token logprobs, prompts, the temperature fallback and word timestamps.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI, { toFile } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runFfmpeg } from "../lib/audio/ffmpeg.ts";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel, sharedDir } from "../tools/models/generate.ts";
import { microTones, type MicroPart } from "../tools/models/micro.ts";
import { startService, type ServiceProcess } from "./support/service-process.ts";

const TIMESTAMPED = "generated/whisper-micro_timestamped";
const API_KEY = `sk-test-${Math.random().toString(36).slice(2)}`;
let work: string;
const services: ServiceProcess[] = [];

async function serve(env: Record<string, string> = {}): Promise<OpenAI> {
  const service = await startService({
    API_KEYS: API_KEY,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: join(work, `data-${services.length}`),
    ...env,
  });
  services.push(service);
  return new OpenAI({ apiKey: API_KEY, baseURL: `${service.url}/v1`, maxRetries: 0 });
}

/** A VBR mp3 of two lavfi sources one after the other, without the Xing frame that tells its length. */
async function lameWithoutToc(path: string, first: string, second: string): Promise<void> {
  const concat = "[0][1]concat=n=2:v=0:a=1";
  await runFfmpeg(["-f", "lavfi", "-i", first, "-f", "lavfi", "-i", second, "-filter_complex", concat, "-c:a", "libmp3lame", "-q:a", "0", "-write_xing", "0", "-y", path]);
}

async function audio(name: string, parts: MicroPart[]) {
  const path = join(work, name);
  await writeAudioFile(path, microTones(parts));
  return toFile(readFile(path), name);
}

let client: OpenAI;
beforeAll(async () => {
  await generateModel({ kind: "micro" });
  await generateModel({ kind: "micro", timestamped: true });
  work = await mkdtemp(join(tmpdir(), "slotscribe-openai-"));
  client = await serve();
});

afterAll(async () => {
  await Promise.all(services.map((s) => s.stop()));
  await rm(work, { recursive: true, force: true });
});

const TWO_WINDOWS: MicroPart[] = [
  { word: "alpha", seconds: 30 },
  { word: "delta", seconds: 12 },
];

describe("OpenAI parity through the official SDK", () => {
  it("streams a transcript.text.delta per window, in order, then transcript.text.done", async () => {
    const stream = await client.audio.transcriptions.create({ file: await audio("two.wav", TWO_WINDOWS), model: "whisper-1", stream: true });
    const events: { type: string; delta?: string; text?: string }[] = [];
    for await (const event of stream) events.push(event as never);
    expect(events.map((e) => e.type)).toEqual(["transcript.text.delta", "transcript.text.delta", "transcript.text.done"]);
    expect(events.slice(0, 2).map((e) => e.delta!.trim())).toEqual(["alpha", "delta"]);
    expect(events[2]!.text).toBe("alpha delta");
    // Shown one after the other, the deltas read as the final text.
    expect(events[0]!.delta! + events[1]!.delta!).toBe(events[2]!.text);
    // The SDK types this event's usage only as token usage ("for models billed by token usage"): the
    // duration usage of json and verbose_json would read as tokens that are not there.
    expect(events[2]).not.toHaveProperty("usage");
  });

  it("refuses a stream it cannot start with the status a request without stream gets", async () => {
    const notAudio = await client.audio.transcriptions
      .create({ file: await toFile(Buffer.from("not audio at all"), "x.wav"), model: "whisper-1", stream: true })
      .catch((err: unknown) => err);
    expect(notAudio).toBeInstanceOf(OpenAI.BadRequestError);
    expect(notAudio).toMatchObject({ status: 400, code: "invalid_request", type: "invalid_request_error", param: "file" });
    const unknownModel = await client.audio.transcriptions
      .create({ file: await audio("m.wav", [{ word: "bravo", seconds: 3 }]), model: "generated/whisper-micro/", stream: true })
      .catch((err: unknown) => err);
    expect(unknownModel).toBeInstanceOf(OpenAI.BadRequestError);
    expect(unknownModel).toMatchObject({ status: 400, param: "model" });
    const tooShort = await client.audio.transcriptions
      .create({ file: await audio("blip.wav", [{ word: "bravo", seconds: 0.05 }]), model: "whisper-1", stream: true })
      .catch((err: unknown) => err);
    expect(tooShort).toBeInstanceOf(OpenAI.BadRequestError);
    expect(tooShort).toMatchObject({ status: 400, param: "file", message: expect.stringContaining("Minimum audio length is 0.1 seconds") });
  });

  it("refuses audio over MAX_AUDIO_DURATION before its stream starts, by a WAV's header or a decode at ffmpeg's speed, and takes a file whose container overstates its length", async () => {
    const short = await serve({ MAX_AUDIO_DURATION: "35s" });
    for (const name of ["long.wav", "long.mp3"]) {
      const refused = await short.audio.transcriptions.create({ file: await audio(name, TWO_WINDOWS), model: "whisper-1", stream: true }).catch((err: unknown) => err);
      expect(refused, name).toBeInstanceOf(OpenAI.BadRequestError);
      expect(refused, name).toMatchObject({ status: 400, param: "file", message: expect.stringContaining("longer than the limit of 35 s") });
    }
    // 2 s of silence, then noise, in a VBR mp3 without a TOC: ffmpeg estimates 92 s from the first frames' rate, for 20 s.
    const overstated = join(work, "overstated.mp3");
    await lameWithoutToc(overstated, "anullsrc=r=16000:cl=mono:d=2", "anoisesrc=r=16000:d=18:a=0.5");
    const taken = await short.audio.transcriptions.create({ file: await toFile(readFile(overstated), "overstated.mp3"), model: "whisper-1", response_format: "verbose_json" });
    expect(taken.duration).toBeCloseTo(20, 0);
  });

  it("reports a failure after the stream started as an error event the SDK raises", async () => {
    const short = await serve({ MAX_AUDIO_DURATION: "35s" });
    // The one overlong file nothing sees ahead: 2 s of noise, then silence, in a VBR mp3 without a TOC, estimated at 12 s for 60.
    const understated = join(work, "understated.mp3");
    await lameWithoutToc(understated, "anoisesrc=r=16000:d=2:a=0.5", "anullsrc=r=16000:cl=mono:d=58");
    const stream = await short.audio.transcriptions.create({ file: await toFile(readFile(understated), "understated.mp3"), model: "whisper-1", stream: true });
    const failure = await (async () => {
      for await (const _ of stream) void _;
    })().catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    expect(failure).toMatchObject({ code: "invalid_request", type: "invalid_request_error", param: "file", message: expect.stringContaining("35") });
  });

  it("accepts OpenAI's newer model names as aliases of the default model", async () => {
    // The names the SDK's AudioModel type lists, but for whisper-1 and the diarizing model (no speaker labels here).
    for (const model of ["gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15"]) {
      const out = await client.audio.transcriptions.create({ file: await audio("bravo.wav", [{ word: "bravo", seconds: 5 }]), model });
      expect(out.text, model).toBe("bravo");
    }
    const listed = (await client.models.list()).data.map((m) => m.id);
    expect(listed).toEqual(expect.arrayContaining(["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15", "generated/whisper-micro"]));
  });

  it("retrieves a model, and says which parameter is wrong in OpenAI's error shape", async () => {
    expect(await client.models.retrieve("whisper-1")).toMatchObject({ id: "whisper-1", object: "model" });
    const missing = await client.models.retrieve("whisper-9").catch((err: unknown) => err);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect(missing).toMatchObject({ status: 404, code: "not_found", type: "invalid_request_error", param: "model" });
    const badLanguage = await client.audio.transcriptions
      .create({ file: await audio("b2.wav", [{ word: "bravo", seconds: 3 }]), model: "whisper-1", language: "xx" })
      .catch((err: unknown) => err);
    expect(badLanguage).toBeInstanceOf(OpenAI.BadRequestError);
    expect(badLanguage).toMatchObject({ status: 400, code: "invalid_request", type: "invalid_request_error", param: "language" });
    // The micro model is English-only: another language would come out as English words.
    const french = await client.audio.transcriptions
      .create({ file: await audio("b3.wav", [{ word: "bravo", seconds: 3 }]), model: "whisper-1", language: "fr" })
      .catch((err: unknown) => err);
    expect(french).toBeInstanceOf(OpenAI.BadRequestError);
    expect(french).toMatchObject({ param: "language", message: expect.stringContaining("English-only") });
    expect((await client.audio.transcriptions.create({ file: await audio("b4.wav", [{ word: "bravo", seconds: 3 }]), model: "whisper-1", language: "en" })).text).toBe("bravo");
    const unauthorized = await new OpenAI({ apiKey: "sk-wrong", baseURL: client.baseURL, maxRetries: 0 }).models.list().catch((err: unknown) => err);
    expect(unauthorized).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(unauthorized).toMatchObject({ status: 401, type: "invalid_request_error" });
  });

  it("answers a file that is not audio with 400, as OpenAI does", async () => {
    const err = await client.audio.transcriptions.create({ file: await toFile(Buffer.from("plain text, not audio"), "notes.mp3"), model: "whisper-1" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ param: "file", type: "invalid_request_error" });
  });

  it("gives verbose_json every segment statistic with real values, and usage", async () => {
    const out = await client.audio.transcriptions.create({ file: await audio("two-v.wav", TWO_WINDOWS), model: "whisper-1", response_format: "verbose_json" });
    expect(out.segments!.map((s) => s.text.trim())).toEqual(["alpha", "delta"]);
    const [first, second] = out.segments!;
    // seek: each segment's window offset in 10 ms frames; the second window starts at 30 s.
    expect([first!.seek, second!.seek]).toEqual([0, 3000]);
    for (const s of out.segments!) {
      expect(s.temperature).toBe(0);
      // The micro model is certain of its words and of speech.
      expect(s.avg_logprob).toBeLessThanOrEqual(0);
      expect(s.avg_logprob).toBeGreaterThan(-0.01);
      expect(s.no_speech_prob).toBeGreaterThanOrEqual(0);
      expect(s.no_speech_prob).toBeLessThan(0.01);
      expect(s.compression_ratio).toBeGreaterThan(0);
      // Opening timestamp, the word, closing timestamp: real ids from the model's vocabulary.
      expect(s.tokens).toHaveLength(3);
    }
    expect((out as unknown as { usage: unknown }).usage).toEqual({ type: "duration", seconds: 42 });
  });

  it("returns token log-probabilities with include[]=logprobs", async () => {
    const out = await client.audio.transcriptions.create({ file: await audio("lp.wav", [{ word: "charlie", seconds: 6 }]), model: "whisper-1", include: ["logprobs"] });
    expect(out.logprobs).toHaveLength(1);
    expect(out.logprobs![0]).toMatchObject({ token: " charlie" });
    expect(out.logprobs![0]!.logprob).toBeLessThanOrEqual(0);
    expect(out.logprobs![0]!.bytes).toEqual([...Buffer.from(" charlie")]);
  });

  it("streams each window's token log-probabilities with its delta, and all of them with transcript.text.done", async () => {
    const stream = await client.audio.transcriptions.create({ file: await audio("two-lp.wav", TWO_WINDOWS), model: "whisper-1", stream: true, include: ["logprobs"] });
    const events: { type: string; delta?: string; logprobs?: { token: string; logprob: number }[] }[] = [];
    for await (const event of stream) events.push(event as never);
    const deltas = events.filter((e) => e.type === "transcript.text.delta");
    expect(deltas).toHaveLength(2);
    // The first delta drops its text's leading space, which its first token keeps.
    for (const d of deltas)
      expect(
        d
          .logprobs!.map((l) => l.token)
          .join("")
          .trimStart(),
      ).toBe(d.delta!.trimStart());
    expect(events.at(-1)!.logprobs).toEqual(deltas.flatMap((d) => d.logprobs));
    const plain = await client.audio.transcriptions.create({ file: await audio("two.wav", TWO_WINDOWS), model: "whisper-1", stream: true });
    for await (const event of plain) expect("logprobs" in event, event.type).toBe(false);
  });

  it("puts the prompt in the decoder's context: after one the micro model writes its word capitalised", async () => {
    const file = () => audio("echo.wav", [{ word: "echo", seconds: 6 }]);
    expect((await client.audio.transcriptions.create({ file: await file(), model: "whisper-1" })).text).toBe("echo");
    const prompted = await client.audio.transcriptions.create({ file: await file(), model: "whisper-1", prompt: "alpha bravo", response_format: "verbose_json" });
    expect(prompted.text).toBe("Echo");
    expect(prompted.segments!.map((s) => [s.start, s.end, s.temperature])).toEqual([[0, 6, 0]]);
  });

  it("takes a prompt as long as a previous chunk's transcript, as OpenAI's long-file recipe sends it, and decodes as with its end", async () => {
    const file = () => audio("echo.wav", [{ word: "echo", seconds: 6 }]);
    // Past the 64 KiB any other form field may hold.
    const transcript = "and so the meeting went on, alpha bravo charlie. ".repeat(3000);
    expect(transcript.length).toBeGreaterThan(64 * 1024);
    const long = await client.audio.transcriptions.create({ file: await file(), model: "whisper-1", prompt: transcript, response_format: "verbose_json" });
    const end = await client.audio.transcriptions.create({ file: await file(), model: "whisper-1", prompt: transcript.slice(-2000), response_format: "verbose_json" });
    expect(long.text).toBe("Echo");
    expect(long.segments).toEqual(end.segments);
    const tooLong = await client.audio.transcriptions.create({ file: await file(), model: "whisper-1", prompt: "a".repeat(256 * 1024 + 1) }).catch((e: unknown) => e);
    expect(tooLong).toBeInstanceOf(OpenAI.BadRequestError);
    expect(tooLong).toMatchObject({ status: 400, param: "prompt", message: expect.stringContaining(String(256 * 1024)) });
  });

  it("retries a 429 after its Retry-After when the file is uploaded as the README's example uploads it", async () => {
    // One place and no queue, held by a transcription far longer than the example takes to start: 30
    // minutes in which every decode fails Whisper's checks, so each window tries every temperature.
    const holder = await serve({ MAX_ACTIVE_JOBS: "1", QUEUE_SIZE: "0", COMPRESSION_RATIO_THRESHOLD: "0.1" });
    const { url } = services.at(-1)!;
    const hold = new AbortController();
    const holding = holder.audio.transcriptions
      .create(
        {
          file: await audio(
            "hold.flac",
            Array.from({ length: 60 }, () => ({ word: "alpha" as const, seconds: 30 })),
          ),
          model: "whisper-1",
        },
        { signal: hold.signal },
      )
      .catch((err: unknown) => err);
    await expect
      .poll(
        async () =>
          ((await (await fetch(`${url}/v1/capacity`, { headers: { authorization: `Bearer ${API_KEY}` } })).json()) as { instance: { transcriptions: { active: number } } }).instance
            .transcriptions.active,
      )
      .toBe(1);

    const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
    const example = /With the official SDK.*\n\n```js\n([\s\S]*?)```/.exec(readme)![1]!;
    await writeAudioFile(join(work, "meeting.wav"), microTones([{ word: "bravo", seconds: 3 }]));
    const code = example
      .replaceAll('"change-me"', JSON.stringify(API_KEY))
      .replaceAll('"http://localhost:8080/v1"', JSON.stringify(`${url}/v1`))
      .replaceAll('"meeting.m4a"', JSON.stringify(join(work, "meeting.wav")));
    // Run as a user runs it, with the SDK's defaults; OPENAI_LOG shows its attempts.
    const run = spawn(process.execPath, ["--input-type=module", "-e", code], { env: { ...process.env, OPENAI_LOG: "info" }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    run.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    run.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => run.once("close", resolve));

    // Refused while the place is taken, then sent again once it is free (a client that goes away frees it).
    await expect.poll(() => output, { timeout: 60_000 }).toMatch(/failed with status 429 .*(retrying|cannot be retried)/);
    hold.abort();
    await holding;
    expect(await exited, output).toBe(0);
    expect(output).toMatch(/failed with status 429 .* - retrying, 2 attempts remaining/);
    expect(output).toMatch(/succeeded with status 200/);
    expect(output.trim().split("\n").at(-1)).toBe("bravo");
  });

  it("recovers from a decode that loops: greedy repeats the stutter tone's word, a hotter decode closes it, the same on every run, with BEST_OF samples a temperature", async () => {
    const stutter = async () =>
      client.audio.transcriptions.create({
        file: await audio("stutter.wav", [{ silence: 0.3 }, { word: "foxtrot", seconds: 6 }]),
        model: "whisper-1",
        response_format: "verbose_json",
      });
    const first = await stutter();
    const [segment] = first.segments!;
    // Greedy decoding says "foxtrot" until the length limit, which Whisper's compression check rejects.
    expect(segment!.temperature).toBeGreaterThan(0);
    expect(segment!.compression_ratio).toBeLessThanOrEqual(2.4);
    expect(segment!.avg_logprob).toBeGreaterThan(-1);
    const words = first.text.split(" ");
    expect(new Set(words)).toEqual(new Set(["foxtrot"]));
    expect(words.length).toBeLessThan(20);
    expect([segment!.start, segment!.end]).toEqual([0.3, 6.3]);
    expect((await stutter()).segments).toEqual(first.segments);

    // Each hotter attempt kept the best of BEST_OF (5) sampled decodes; one sample a temperature decodes otherwise.
    const single = await serve({ BEST_OF: "1" });
    const once = await single.audio.transcriptions.create({
      file: await audio("stutter.wav", [{ silence: 0.3 }, { word: "foxtrot", seconds: 6 }]),
      model: "whisper-1",
      response_format: "verbose_json",
    });
    expect(once.segments!.map((s) => [s.text, s.temperature, s.avg_logprob])).not.toEqual(first.segments!.map((s) => [s.text, s.temperature, s.avg_logprob]));
  });

  it("warns at start-up when THREADS asks for more threads than the cores", async () => {
    await serve({ THREADS: "3", CPUS: "2" });
    expect(services.at(-1)!.logs.filter((l) => String(l.msg).startsWith("THREADS is more than the cores"))).toEqual([expect.objectContaining({ level: 40, threads: 3, cpus: 2 })]);
    await serve({ THREADS: "2", CPUS: "2" });
    expect(services.at(-1)!.logs.some((l) => String(l.msg).startsWith("THREADS"))).toBe(false);
  });

  it("searches BEAM_SIZE beams at temperature 0: the stutter that greedy decoding loops on closes without a fallback", async () => {
    const beams = await serve({ BEAM_SIZE: "5", WINDOW_SLOTS: "8" });
    const plan = services.at(-1)!.logs.find((l) => l.msg === "capacity plan") as { decoding?: string } | undefined;
    expect(plan?.decoding).toBe("beam search, 5 beams: 1 window at once");
    const out = await beams.audio.transcriptions.create({
      file: await audio("stutter.wav", [{ silence: 1 }, { word: "foxtrot", seconds: 6 }]),
      model: "whisper-1",
      response_format: "verbose_json",
    });
    expect(out.segments!.map((s) => [s.start, s.end, s.temperature])).toEqual([[1, 7, 0]]);
    const words = out.text.split(" ");
    expect(new Set(words)).toEqual(new Set(["foxtrot"]));
    expect(words.length).toBeLessThan(20);
  });

  it("falls back to hotter temperatures when a decode fails Whisper's checks, deterministically", async () => {
    // Every text the micro model writes compresses worse than this threshold, so every temperature fails
    // and Whisper keeps the hottest decode.
    const strict = await serve({ COMPRESSION_RATIO_THRESHOLD: "0.1" });
    const first = await strict.audio.transcriptions.create({ file: await audio("fb.wav", [{ word: "bravo", seconds: 8 }]), model: "whisper-1", response_format: "verbose_json" });
    expect(first.segments!.map((s) => s.temperature)).toEqual([1]);
    expect(first.text).toBe("bravo");
    const again = await strict.audio.transcriptions.create({ file: await audio("fb.wav", [{ word: "bravo", seconds: 8 }]), model: "whisper-1", response_format: "verbose_json" });
    expect(again.segments).toEqual(first.segments);
    const fromHot = await strict.audio.transcriptions.create({
      file: await audio("fb.wav", [{ word: "bravo", seconds: 8 }]),
      model: "whisper-1",
      response_format: "verbose_json",
      temperature: 0.8,
    });
    expect(fromHot.segments!.map((s) => s.temperature)).toEqual([1]);
  });

  it("times each word at its tone's edges with timestamp_granularities[]=word on a _timestamped model", async () => {
    const spoken: MicroPart[] = [
      { silence: 1 },
      { word: "alpha", seconds: 3 },
      { silence: 2 },
      { word: "charlie", seconds: 4 },
      { silence: 1.5 },
      { word: "bravo", seconds: 2 },
      { silence: 1 },
    ];
    const edges = [
      ["alpha", 1, 4],
      ["charlie", 6, 10],
      ["bravo", 11.5, 13.5],
    ] as const;
    const out = await client.audio.transcriptions.create({
      file: await audio("words.wav", spoken),
      model: TIMESTAMPED,
      response_format: "verbose_json",
      timestamp_granularities: ["word", "segment"],
    });
    expect(out.words!.map((w) => w.word)).toEqual(edges.map(([word]) => word));
    out.words!.forEach((w, i) => {
      expect(Math.abs(w.start - edges[i]![1]), `${w.word} start ${w.start}`).toBeLessThan(0.1);
      expect(Math.abs(w.end - edges[i]![2]), `${w.word} end ${w.end}`).toBeLessThan(0.1);
    });
    // Segments stay: one per tone here, as Whisper starts a segment at a pause.
    expect(out.segments!.map((s) => s.text.trim())).toEqual(["alpha", "charlie", "bravo"]);

    // Without the brackets, as plain form posts spell it.
    const form = new FormData();
    form.set("file", new Blob([await readFile(join(work, "words.wav"))]), "words.wav");
    form.set("model", TIMESTAMPED);
    form.set("response_format", "verbose_json");
    form.set("timestamp_granularities", "word");
    const plain = await fetch(`${client.baseURL}/audio/transcriptions`, { method: "POST", headers: { authorization: `Bearer ${API_KEY}` }, body: form });
    expect(plain.status).toBe(200);
    const wordsOnly = (await plain.json()) as { words: unknown; segments?: unknown };
    expect(wordsOnly.words).toEqual(out.words);
    // Asked for words alone, OpenAI leaves the segments out.
    expect(wordsOnly).not.toHaveProperty("segments");

    // Indexed, as qs- and PHP-style encoders write arrays: the same request.
    form.delete("timestamp_granularities");
    form.set("timestamp_granularities[0]", "word");
    form.set("timestamp_granularities[1]", "segment");
    const indexed = await fetch(`${client.baseURL}/audio/transcriptions`, { method: "POST", headers: { authorization: `Bearer ${API_KEY}` }, body: form });
    expect(indexed.status).toBe(200);
    expect(await indexed.json()).toMatchObject({ words: out.words, segments: out.segments });

    // A value that is not a granularity is refused naming the ones there are.
    form.delete("timestamp_granularities[1]");
    form.set("timestamp_granularities[0]", "word,segment");
    const refusedValue = await fetch(`${client.baseURL}/audio/transcriptions`, { method: "POST", headers: { authorization: `Bearer ${API_KEY}` }, body: form });
    expect(refusedValue.status).toBe(400);
    expect(((await refusedValue.json()) as { error: { message: string } }).error.message).toMatch(/segment, word/);

    // Words exist only in verbose_json: OpenAI refuses them with any other format.
    for (const response_format of ["json", "text", "srt"] as const) {
      const refused = await client.audio.transcriptions
        .create({ file: await audio("words.wav", spoken), model: TIMESTAMPED, response_format, timestamp_granularities: ["word"] })
        .catch((e: unknown) => e);
      expect(refused, response_format).toBeInstanceOf(OpenAI.BadRequestError);
      expect(refused).toMatchObject({ status: 400, param: "timestamp_granularities[]" });
    }
    const segmentsInJson = await client.audio.transcriptions.create({
      file: await audio("words.wav", spoken),
      model: TIMESTAMPED,
      response_format: "json",
      timestamp_granularities: ["segment"],
    });
    expect(segmentsInJson.text).toBe("alpha charlie bravo");
  });

  it("takes chunking_strategy as the SDK sends it: server_vad settings where Silero cuts the audio, a 400 where nothing can be tuned", async (ctx) => {
    const bravo = () => audio("cs.wav", [{ word: "bravo", seconds: 3 }]);
    const serverVad = { type: "server_vad" as const, threshold: 0.6, prefix_padding_ms: 100, silence_duration_ms: 300 };
    expect((await client.audio.transcriptions.create({ file: await bravo(), model: "whisper-1", chunking_strategy: "auto" })).text).toBe("bravo");
    // These servers cut the tones with the energy gate (vitest.config.ts), which has no settings.
    const refused = await client.audio.transcriptions.create({ file: await bravo(), model: "whisper-1", chunking_strategy: serverVad }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect(refused).toMatchObject({ status: 400, param: "chunking_strategy" });
    expect((refused as Error).message).toContain("VAD=energy");

    const jfk = join(sharedDir(), "audio", "jfk", "jfk.wav");
    if (!existsSync(jfk)) ctx.skip();
    const silero = await serve({ VAD: "silero" });
    const speech = () => toFile(readFile(jfk), "jfk.wav");
    const out = await silero.audio.transcriptions.create({ file: await speech(), model: "whisper-1", response_format: "verbose_json", chunking_strategy: serverVad });
    expect(out.text.length).toBeGreaterThan(0);
    expect(out.duration).toBeCloseTo(11, 0);
    const bad = await silero.audio.transcriptions.create({ file: await speech(), model: "whisper-1", chunking_strategy: { ...serverVad, threshold: 2 } }).catch((e: unknown) => e);
    expect(bad).toMatchObject({ status: 400, param: "chunking_strategy" });
  });

  it("times words for whisper-1, as OpenAI does: the default model has no cross-attention outputs, its timestamped export decodes", async () => {
    const spoken: MicroPart[] = [{ silence: 1 }, { word: "bravo", seconds: 3 }, { silence: 1 }];
    for (const model of ["whisper-1", "generated/whisper-micro"]) {
      const out = await client.audio.transcriptions.create({ file: await audio("w1.wav", spoken), model, response_format: "verbose_json", timestamp_granularities: ["word"] });
      expect(
        out.words!.map((w) => w.word),
        model,
      ).toEqual(["bravo"]);
      expect(Math.abs(out.words![0]!.start - 1), model).toBeLessThan(0.1);
      expect(Math.abs(out.words![0]!.end - 4), model).toBeLessThan(0.1);
      expect(out.text, model).toBe("bravo");
    }
  });

  it("refuses word timestamps on a model without cross-attention outputs and no timestamped export beside it, naming the export to add", async () => {
    // A models directory holding the micro model alone.
    const models = join(work, "models-without-export");
    await mkdir(join(models, "generated"), { recursive: true });
    await symlink(join(DEFAULT_MODELS_DIR, "generated", "whisper-micro"), join(models, "generated", "whisper-micro"));
    const alone = await serve({ WHISPER_MODELS_DIR: models });
    const err = await alone.audio.transcriptions
      .create({ file: await audio("w.wav", [{ word: "alpha", seconds: 3 }]), model: "whisper-1", response_format: "verbose_json", timestamp_granularities: ["word"] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ status: 400, type: "invalid_request_error", param: "timestamp_granularities[]" });
    expect((err as Error).message).toContain(`"${TIMESTAMPED}"`);
  });
});
