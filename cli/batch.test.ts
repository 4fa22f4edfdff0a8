import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones, type MicroPart, type MicroWord } from "../tools/models/micro.ts";
import { eventually, startService, type ServiceProcess } from "../test/support/service-process.ts";
import { batchCommand, MANIFEST_NAME, parseList, readInputs, renderBatchProgress, urlStem, type ManifestEntry } from "./batch.ts";
import { startCli } from "../test/support/cli-process.ts";

const _ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const KEY = `sk-batch-${Math.random().toString(36).slice(2)}`;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let work: string;

function start(args: string[]) {
  return startCli(["batch", ...args], { SLOTSCRIBE_URL: "", SLOTSCRIBE_API_KEY: "" });
}

function batch(args: string[]): Promise<Run> {
  return start(args).done;
}

async function tones(path: string, parts: MicroPart[]): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeAudioFile(path, microTones(parts));
  return path;
}

/** The srt the micro model gives for one tone from the start: one cue naming it. */
function oneCue(word: MicroWord, seconds: number): string {
  return `1\n00:00:00,000 --> 00:00:${String(seconds).padStart(2, "0")},000\n${word}\n\n`;
}

async function manifest(out: string): Promise<Record<string, ManifestEntry>> {
  return (JSON.parse(await readFile(join(out, MANIFEST_NAME), "utf8")) as { inputs: Record<string, ManifestEntry> }).inputs;
}

/** Every file below `dir`, as sorted relative paths. */
async function tree(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "slotscribe-batch-"));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("batch inputs and progress (no server)", () => {
  it("refuses a list line with a scheme it cannot fetch, rather than read it as a path", () => {
    expect(() => parseList("rec/a.wav\nftp://example.com/x.mp3\n", "/lists")).toThrow(/only http\(s\) URLs.*ftp:\/\/example\.com\/x\.mp3/);
  });

  it("reads a list: paths relative to the list, URLs, no blanks, comments or repeats", () => {
    const inputs = parseList("# overnight\n\nrec/a.wav\n  /abs/b.mp3  \nhttps://cdn.example/x/Talk%20One.m4a?sig=1\nrec/a.wav\r\n", "/lists");
    expect(inputs.map(({ id, label, stem, source }) => ({ id, label, stem, source }))).toEqual([
      { id: "/lists/rec/a.wav", label: "rec/a.wav", stem: "a", source: { file: "/lists/rec/a.wav" } },
      { id: "/abs/b.mp3", label: "/abs/b.mp3", stem: "b", source: { file: "/abs/b.mp3" } },
      {
        id: "https://cdn.example/x/Talk%20One.m4a?sig=1",
        label: "https://cdn.example/x/Talk%20One.m4a?sig=1",
        stem: urlStem("https://cdn.example/x/Talk%20One.m4a?sig=1"),
        source: { url: "https://cdn.example/x/Talk%20One.m4a?sig=1" },
      },
    ]);
  });

  it("names a URL's transcript safely after its last path segment, with a hash of the whole URL", () => {
    const hash = (url: string) => createHash("sha256").update(url).digest("hex").slice(0, 8);
    const url = "https://cdn.example/x/Talk%20One.m4a?sig=1";
    expect(urlStem(url)).toBe(`Talk_One-${hash(url)}`);
    expect(urlStem("https://cdn.example/x/Talk%20One.m4a?sig=2")).not.toBe(urlStem(url));
    expect(urlStem("http://h/..%2F..%2Fetc%2Fpasswd")).toMatch(/^etc_passwd-[0-9a-f]{8}$/);
    expect(urlStem("http://media.example/")).toMatch(/^media.example-[0-9a-f]{8}$/);
    expect(urlStem("http://h/%E0%A4%A.wav")).toMatch(/^E0_A4_A-[0-9a-f]{8}$/);
  });

  it("scans a directory recursively and sorted, for media only, without dotfiles, keeping names apart", async () => {
    const dir = join(work, "scan");
    for (const name of ["b.wav", "a/z.MP3", "a/notes.txt", ".hidden/x.wav", "._b.wav", "meeting.wav", "meeting.m4a"]) {
      await mkdir(dirname(join(dir, name)), { recursive: true });
      await writeFile(join(dir, name), "x");
    }
    await symlink(join(dir, "b.wav"), join(dir, "linked.wav"));
    const inputs = await readInputs(dir);
    expect(inputs.map((i) => i.label)).toEqual(["a/z.MP3", "b.wav", "linked.wav", "meeting.m4a", "meeting.wav"]);
    const stems = inputs.map((i) => i.stem);
    expect(stems.slice(0, 3)).toEqual(["a/z", "b", "linked"]);
    expect(stems[3]).toMatch(/^meeting-[0-9a-f]{8}$/);
    expect(stems[4]).toMatch(/^meeting-[0-9a-f]{8}$/);
    expect(stems[3]).not.toBe(stems[4]);
  });

  it("draws files done, audio done and an ETA from the rate so far, fitted to the width", () => {
    const tally = { total: 20, finished: 5, failed: 1, processed: 4, audioSeconds: 750, elapsedMs: 60_000 };
    // 15 to go at 15 s each.
    expect(renderBatchProgress(tally, 0)).toBe("5/20 files (1 failed)  12:30 audio  ETA 3:45");
    const line = renderBatchProgress(tally, 80);
    expect(line).toHaveLength(80);
    expect(line).toMatch(/^\[#{8}\.{25}\] 5\/20 files/);
    expect(renderBatchProgress({ ...tally, processed: 0, finished: 1, failed: 0, audioSeconds: 0 }, 0)).toBe("1/20 files  ETA ?");
    expect(renderBatchProgress({ ...tally, finished: 20 }, 0)).toMatch(/ETA 0:00$/);
  });

  it("exits 0 with a note when there is nothing to transcribe", async () => {
    await mkdir(join(work, "empty"));
    const run = await batch([join(work, "empty"), "--out", join(work, "empty-out")]);
    expect(run).toMatchObject({ code: 0, stderr: `slotscribe: nothing to transcribe in ${join(work, "empty")}\n` });
  });

  it("exits 2 with the usage on a bad command line, before any request", async () => {
    const list = join(work, "usage-list.txt");
    await writeFile(list, "a.wav\n");
    const media = join(work, "single.wav");
    await writeFile(media, "x");
    const cases: [string[], RegExp][] = [
      [[], /missing the directory or list/],
      [[list], /missing --out/],
      [[list, "--out", join(work, "o"), "--concurrency", "0"], /--concurrency must be a positive whole number/],
      [[list, "--out", join(work, "o"), "--format", "docx"], /unknown format "docx"/],
      [[join(work, "nowhere"), "--out", join(work, "o")], /no such directory or list file/],
      [[media, "--out", join(work, "o")], /a media file, not a list/],
      [[list, "--out", list], /is not a directory/],
      [[list, "--out", join(work, "o"), "--server", "ftp://x"], /Invalid server URL/],
      [[list, "--out", join(work, "o"), "--api-key", "sk-batch-secret€"], /the API key \(--api-key or SLOTSCRIBE_API_KEY\) cannot be sent/],
    ];
    for (const [args, message] of cases) {
      const stderr: string[] = [];
      const spy = vi.spyOn(console, "error").mockImplementation((line: string) => void stderr.push(line));
      try {
        expect(await batchCommand(args), args.join(" ")).toBe(2);
      } finally {
        spy.mockRestore();
      }
      expect(stderr.join("\n")).toMatch(message);
      expect(stderr.join("\n")).toContain("slotscribe batch <dir|list>");
      expect(stderr.join("\n")).not.toContain("sk-batch-secret");
    }
    expect(await readdir(work)).not.toContain("o");
  });
});

describe("batch against a server that restarts", () => {
  it("waits out its 503s with Retry-After, past the client's own retries, instead of failing the inputs sent meanwhile", async () => {
    let unavailable = 5;
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      req.resume().on("end", () => {
        if (unavailable-- > 0) {
          res.writeHead(503, { "content-type": "application/json", "retry-after": "0" });
          return void res.end(JSON.stringify({ error: { code: "unavailable", message: "Starting up.", request_id: "req_1" } }));
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ task: "transcribe", language: "english", duration: 2, text: " Back.", segments: [{ id: 0, start: 0, end: 2, text: " Back." }] }));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const dir = join(work, "restarts");
      await mkdir(dir);
      await writeFile(join(dir, "call.wav"), Buffer.alloc(100, 1));
      const out = join(work, "restarts-out");
      const run = await batch([dir, "--out", out, "--server", `http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
      expect(run.code, run.stderr).toBe(0);
      expect(await readFile(join(out, "call.txt"), "utf8")).toBe("Back.\n");
      expect(requests).toEqual(Array(6).fill("POST /v1/audio/transcriptions"));
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe("batch interrupted", () => {
  it.for([
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)("by %s without --async, says the uploads in flight were dropped rather than that jobs continue", async ([signal, code]) => {
    const requests: string[] = [];
    // A server that takes the upload and is still transcribing it.
    const server = createServer((req) => {
      requests.push(`${req.method} ${req.url}`);
      req.resume();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const dir = join(work, `interrupted-${signal}`);
      await mkdir(dir);
      await writeFile(join(dir, "call.wav"), Buffer.alloc(100, 1));
      const { child, done } = start([dir, "--out", join(work, `interrupted-${signal}-out`), "--server", `http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
      await vi.waitFor(() => expect(requests).toEqual(["POST /v1/audio/transcriptions"]), { timeout: 10_000 });
      child.kill(signal);
      const run = await done;
      expect(run.code).toBe(code);
      expect(run.stderr.trimEnd().split("\n").at(-1)).toBe(
        `slotscribe: interrupted (${signal}); the transcriptions in flight were dropped, and no job was left on the server. Run the same command again to resume.`,
      );
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe("batch against no server", () => {
  it("stops at the first input it cannot send rather than fail every one the same way, and says so", async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const closed = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
    await new Promise((r) => probe.close(r));
    const dir = join(work, "no-server");
    await mkdir(dir);
    for (const name of ["a", "b", "c"]) await writeFile(join(dir, `${name}.wav`), Buffer.alloc(100, 1));
    const run = await batch([dir, "--concurrency", "1", "--out", join(work, "no-server-out"), "--server", closed]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^batch: 0 done, 0 skipped, 1 failed of 3/m);
    expect(run.stderr).toMatch(
      new RegExp(`^stopped: network_error: cannot reach ${closed}: .*; 2 inputs not sent \\(check --server or SLOTSCRIBE_URL, and that the server is running\\)$`, "m"),
    );
  });
});

describe("batch against the real server", () => {
  let service: ServiceProcess;
  let media: Server;
  let mediaUrl: string;
  let connection: string[];

  const requests = (status: number, path: string) => service.logs.filter((l) => l.msg === "request" && l.status === status && l.path === path).length;
  const jobCount = async () => {
    const res = await fetch(`${service.url}/v1/jobs?limit=100`, { headers: { authorization: `Bearer ${KEY}` } });
    return ((await res.json()) as { data: unknown[] }).data.length;
  };

  beforeAll(async () => {
    await generateModel({ kind: "micro" });
    const served = await tones(join(work, "served", "clip.wav"), [{ word: "echo", seconds: 7 }]);
    media = createServer(async (req, res) => {
      if (req.url?.startsWith("/clips/clip.wav")) res.writeHead(200, { "content-type": "audio/wav" }).end(await readFile(served));
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => media.listen(0, "127.0.0.1", r));
    mediaUrl = `http://127.0.0.1:${(media.address() as AddressInfo).port}`;
    const serviceTmp = join(work, "service-tmp");
    await mkdir(serviceTmp);
    // One transcription at a time and one waiting, so four at once provoke 429s.
    service = await startService({
      API_KEYS: KEY,
      WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
      DEFAULT_MODEL: "generated/whisper-micro",
      DATA_DIR: join(work, "data"),
      TMPDIR: serviceTmp,
      WINDOW_SLOTS: "1",
      MAX_ACTIVE_JOBS: "1",
      QUEUE_SIZE: "1",
      JOB_QUEUE_SIZE: "1",
      OUTBOUND_ALLOWLIST: "127.0.0.1",
    });
    connection = ["--server", service.url, "--api-key", KEY];
  });

  afterAll(async () => {
    await service?.stop();
    await new Promise((r) => media?.close(r));
  });

  describe("a directory of tones", () => {
    const dir = () => join(work, "tones");
    const out = () => join(work, "tones-out");
    const expected: Record<string, string> = {
      "a/one.srt": oneCue("alpha", 4),
      "a/two.srt": oneCue("bravo", 5),
      "b/three.srt": oneCue("charlie", 6),
      "four.srt": oneCue("delta", 3),
      "five.srt": oneCue("echo", 4),
      "six.srt": `${oneCue("alpha", 30)}2\n00:00:30,000 --> 00:00:35,000\nbravo\n\n`,
    };

    beforeAll(async () => {
      await tones(join(dir(), "a", "one.wav"), [{ word: "alpha", seconds: 4 }]);
      await tones(join(dir(), "a", "two.mp3"), [{ word: "bravo", seconds: 5 }]);
      await tones(join(dir(), "b", "three.wav"), [{ word: "charlie", seconds: 6 }]);
      await tones(join(dir(), "four.mp3"), [{ word: "delta", seconds: 3 }]);
      await tones(join(dir(), "five.wav"), [{ word: "echo", seconds: 4 }]);
      await tones(join(dir(), "six.mp3"), [
        { word: "alpha", seconds: 30 },
        { word: "bravo", seconds: 5 },
      ]);
      await writeFile(join(dir(), "README.txt"), "not audio, and not taken for it");
    });

    it("transcribes every file four at a time, waiting out the 429s, into srt files with the right words", async () => {
      const refusedBefore = requests(429, "/v1/audio/transcriptions");
      const run = await batch([dir(), "--concurrency", "4", "--format", "srt", "--out", out(), ...connection]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe("");
      expect(requests(429, "/v1/audio/transcriptions") - refusedBefore).toBeGreaterThan(0);
      expect(run.stderr).toMatch(/rate limited.*retrying in \d+ s/);

      expect(await tree(out())).toEqual([MANIFEST_NAME, ...Object.keys(expected)].sort());
      for (const [name, srt] of Object.entries(expected)) expect(await readFile(join(out(), name), "utf8"), name).toBe(srt);

      const lines = run.stderr.split("\n").filter((line) => line.startsWith("["));
      expect(lines).toHaveLength(6);
      expect(lines.map((line) => /^\[(\d)\/6\]/.exec(line)?.[1])).toEqual(["1", "2", "3", "4", "5", "6"]);
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^\\[\\d/6\\] ok six\\.mp3 -> ${out()}/six\\.srt \\(35\\.0 s audio in \\d+\\.\\d s\\)$`)));
      expect(run.stderr).toMatch(/^batch: 6 done, 0 skipped, 0 failed of 6 in \d+:\d\d$/m);
      expect(run.stderr).toMatch(/^audio: 57\.0 s \(0:57\) transcribed in \d+\.\d s, \d+\.\dx realtime$/m);

      const entries = await manifest(out());
      expect(Object.keys(entries).sort()).toEqual(["a/one.wav", "a/two.mp3", "b/three.wav", "five.wav", "four.mp3", "six.mp3"].map((f) => join(dir(), f)).sort());
      expect(Object.values(entries).every((e) => e.status === "done")).toBe(true);
      expect(entries[join(dir(), "six.mp3")]).toMatchObject({ output: "six.srt", audioSeconds: 35 });
    });

    it("skips every file on a rerun, sending nothing", async () => {
      const before = service.logs.length;
      const mtimes = await Promise.all(Object.keys(expected).map(async (name) => (await stat(join(out(), name))).mtimeMs));
      const run = await batch([dir(), "--concurrency", "4", "--format", "srt", "--out", out(), ...connection]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr.match(/^\[\d\/6\] skipped \(done\) /gm)).toHaveLength(6);
      expect(run.stderr).toMatch(/^batch: 0 done, 6 skipped, 0 failed of 6/m);
      expect(service.logs.slice(before).filter((l) => l.msg === "request")).toEqual([]);
      expect(await Promise.all(Object.keys(expected).map(async (name) => (await stat(join(out(), name))).mtimeMs))).toEqual(mtimes);
    });

    it("redoes only the one whose transcript was deleted", async () => {
      await rm(join(out(), "b", "three.srt"));
      const before = requests(200, "/v1/audio/transcriptions");
      const run = await batch([dir(), "--concurrency", "4", "--format", "srt", "--out", out(), ...connection]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toMatch(/^\[\d\/6\] ok b\/three\.wav -> .*\/b\/three\.srt \(6\.0 s audio in /m);
      expect(run.stderr.match(/ skipped \(done\) /g)).toHaveLength(5);
      expect(requests(200, "/v1/audio/transcriptions") - before).toBe(1);
      expect(await readFile(join(out(), "b", "three.srt"), "utf8")).toBe(expected["b/three.srt"]);
    });
  });

  it("reports a file that is not media as failed, finishes the others and exits 1", async () => {
    const dir = join(work, "mixed");
    await tones(join(dir, "good-1.wav"), [{ word: "bravo", seconds: 3 }]);
    await tones(join(dir, "good-2.mp3"), [{ word: "delta", seconds: 3 }]);
    await writeFile(join(dir, "notes.wav"), "minutes of the meeting, not audio\n".repeat(50));
    const out = join(work, "mixed-out");
    const run = await batch([dir, "--concurrency", "4", "--format", "text", "--out", out, ...connection]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toMatch(/^\[\d\/3\] failed notes\.wav: unsupported_media: .+ \(request req_\S+\)$/m);
    expect(run.stderr).toMatch(/^batch: 2 done, 0 skipped, 1 failed of 3/m);
    expect(run.stderr).toMatch(/^failed:\n {2}notes\.wav: unsupported_media: /m);
    expect(await tree(out)).toEqual([MANIFEST_NAME, "good-1.txt", "good-2.txt"]);
    expect(await readFile(join(out, "good-2.txt"), "utf8")).toBe("delta\n");
    expect((await manifest(out))[join(dir, "notes.wav")]).toMatchObject({ status: "failed", error: expect.stringMatching(/^unsupported_media: /) });

    // The failure is tried again on a rerun; what was done is not.
    const rerun = await batch([dir, "--format", "text", "--out", out, ...connection]);
    expect(rerun.code).toBe(1);
    expect(rerun.stderr).toMatch(/^batch: 0 done, 2 skipped, 1 failed of 3/m);
  });

  it("stops at a key the server refuses rather than fail every file the same way, and says so", async () => {
    const dir = join(work, "refused-key");
    for (const word of ["alpha", "bravo", "charlie"] as const) await tones(join(dir, `${word}.wav`), [{ word, seconds: 2 }]);
    const out = join(work, "refused-key-out");
    const wrongKey = connection.map((arg) => (arg === KEY ? "sk-wrong" : arg));
    const run = await batch([dir, "--concurrency", "1", "--out", out, ...wrongKey]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^batch: 0 done, 0 skipped, 1 failed of 3/m);
    expect(run.stderr).toMatch(/^stopped: unauthorized: .*; 2 inputs not sent/m);
  });

  it("runs a list's URL as a job fetched from the URL, beside its files, with a safe name", async () => {
    const dir = join(work, "listed");
    await tones(join(dir, "media", "local.wav"), [{ word: "charlie", seconds: 5 }]);
    const url = `${mediaUrl}/clips/clip.wav?token=abc`;
    const list = join(dir, "urls.txt");
    await writeFile(list, `# tonight\n\nmedia/local.wav\n${url}\n`);
    const out = join(work, "listed-out");
    const jobsBefore = await jobCount();
    const run = await batch([list, "--concurrency", "2", "--format", "vtt", "--out", out, ...connection]);
    expect(run.code, run.stderr).toBe(0);
    const urlName = `clip-${createHash("sha256").update(url).digest("hex").slice(0, 8)}.vtt`;
    expect(await tree(out)).toEqual([MANIFEST_NAME, urlName, "local.vtt"].sort());
    expect(await readFile(join(out, urlName), "utf8")).toBe("WEBVTT\n\n00:00:00.000 --> 00:00:07.000\necho\n\n");
    expect(await readFile(join(out, "local.vtt"), "utf8")).toBe("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\ncharlie\n\n");
    expect(run.stderr).toContain(`ok ${url} -> ${join(out, urlName)} (7.0 s audio in `);
    expect(await jobCount()).toBe(jobsBefore + 1);
    expect((await manifest(out))[url]).toMatchObject({ status: "done", jobId: expect.stringMatching(/^job_/), output: urlName });
  });

  it("submits a failed job afresh on a rerun, even when the manifest that recorded it is lost", async () => {
    const list = join(work, "missing.txt");
    const url = `${mediaUrl}/clips/missing.wav`;
    await writeFile(list, `${url}\n`);
    const out = join(work, "missing-out");
    const args = [list, "--format", "text", "--out", out, ...connection];
    const jobsBefore = await jobCount();

    const first = await batch(args);
    expect(first.code).toBe(1);
    expect(first.stderr).toMatch(new RegExp(`^\\[1/1\\] failed ${url}: \\w+: .+ \\(job job_\\w+\\)$`, "m"));
    expect((await manifest(out))[url]).toMatchObject({ status: "failed", failedJobs: 1 });
    expect((await manifest(out))[url]?.jobId).toBeUndefined();
    expect(await jobCount()).toBe(jobsBefore + 1);

    expect((await batch(args)).code).toBe(1);
    expect(await jobCount()).toBe(jobsBefore + 2);

    // Without the manifest, the idempotency keys of the two earlier attempts give back their failed
    // jobs; the third attempt gets a key, and a job, of its own.
    await rm(join(out, MANIFEST_NAME));
    expect((await batch(args)).code).toBe(1);
    expect(await jobCount()).toBe(jobsBefore + 3);
    expect((await manifest(out))[url]).toMatchObject({ status: "failed", failedJobs: 3 });
  });

  it("with --async, resumes waiting on a job submitted before an interruption instead of submitting it again", async () => {
    const dir = join(work, "long");
    // Long enough that the job is still going when the first run is killed.
    const words = ["alpha", "bravo", "charlie"] as const;
    const parts: MicroPart[] = Array.from({ length: 12 }, (_, i) => ({ word: words[i % words.length]!, seconds: 30 }));
    await tones(join(dir, "lecture.mp3"), parts);
    const out = join(work, "long-out");
    const args = [dir, "--async", "--format", "text", "--out", out, ...connection];
    const jobsBefore = await jobCount();

    const first = start(args);
    const submitted = await eventually(async () => {
      const entry = (await manifest(out))[join(dir, "lecture.mp3")];
      if (!entry?.jobId) throw new Error("not submitted yet");
      return entry;
    });
    first.child.kill("SIGKILL");
    await first.done;
    expect(await tree(out)).toEqual([MANIFEST_NAME]);

    const rerun = await batch(args);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(await readFile(join(out, "lecture.txt"), "utf8")).toBe(`${parts.map((p) => ("word" in p ? p.word : "")).join(" ")}\n`);
    expect(await jobCount()).toBe(jobsBefore + 1);
    expect((await manifest(out))[join(dir, "lecture.mp3")]).toMatchObject({ status: "done", jobId: submitted.jobId, audioSeconds: 360 });

    // Another format into another folder (no manifest there): the same job, rendered anew.
    const srtOut = join(work, "long-srt");
    const srt = await batch([dir, "--async", "--format", "srt", "--out", srtOut, ...connection]);
    expect(srt.code, srt.stderr).toBe(0);
    expect(await readFile(join(srtOut, "lecture.srt"), "utf8")).toMatch(/^1\n00:00:00,000 --> /);
    expect(await jobCount()).toBe(jobsBefore + 1);
  });
});
