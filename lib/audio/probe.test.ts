import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { probeDurationSeconds } from "./probe.ts";
import { writeAudioFile } from "../../tools/audio/synth.ts";
import { isRunning, stuckFfmpeg, stuckFfmpegPid } from "../../test/support/stuck-ffmpeg.ts";

let dir: string;
let server: Server;
let serverUrl: string;
const requested: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "slotscribe-probe-"));
  await writeAudioFile(path.join(dir, "seven-seconds.wav"), [{ tone: 440, seconds: 7 }]);
  server = createServer((req, res) => {
    requested.push(req.url ?? "");
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  serverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

describe("probeDurationSeconds", () => {
  it("reads the duration a media file declares", async () => {
    expect(await probeDurationSeconds(path.join(dir, "seven-seconds.wav"))).toBeCloseTo(7, 1);
  });

  // An upload is a client's file: as in decoding, it may not lead ffmpeg to other files or the network.
  it.each([
    // The concat demuxer opens the file it names to read its streams: a duration means it did.
    ["a concat script naming a file beside it", "ffconcat version 1.0\nfile seven-seconds.wav\nduration 7\n"],
    ["an HLS playlist naming a file beside it", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:7.0,\nseven-seconds.wav\n#EXT-X-ENDLIST\n"],
    ["an HLS playlist naming a URL", () => `#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:7.0,\n${serverUrl}/segment.ts\n#EXT-X-ENDLIST\n`],
  ])("reports nothing for %s", async (_name, content) => {
    const upload = path.join(dir, `upload-${Math.random().toString(36).slice(2)}`);
    await writeFile(upload, typeof content === "function" ? content() : content);
    expect(await probeDurationSeconds(upload)).toBeNull();
    expect(requested).toEqual([]);
  });
});

describe("probeDurationSeconds with an ffmpeg that gets no further with the file", () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it("gives up, killing it, as unprocessable audio (422)", { timeout: 30_000 }, async () => {
    const ffmpeg = await stuckFfmpeg(dir);
    vi.stubEnv("FFMPEG_PATH", ffmpeg);
    await expect(probeDurationSeconds(path.join(dir, "seven-seconds.wav"), { stallMs: 500 })).rejects.toMatchObject({
      code: "unprocessable_audio",
      message: "audio could not be decoded: ffmpeg got no further with the file for 0.5 s",
    });
    expect(isRunning(await stuckFfmpegPid(ffmpeg))).toBe(false);
  });

  it("stops it at once when its signal aborts, with the abort's reason", { timeout: 30_000 }, async () => {
    const ffmpeg = await stuckFfmpeg(dir);
    vi.stubEnv("FFMPEG_PATH", ffmpeg);
    const controller = new AbortController();
    const probe = probeDurationSeconds(path.join(dir, "seven-seconds.wav"), { signal: controller.signal });
    const pid = await stuckFfmpegPid(ffmpeg);
    const reason = new Error("job canceled");
    controller.abort(reason);
    await expect(probe).rejects.toBe(reason);
    expect(isRunning(pid)).toBe(false);
  });
});
