/**
 * Who gives a transcription's room back. A job's run brings the room it was admitted with (in
 * cluster mode, its lease) and must hold it until the job's outcome is stored: a repeated delivery
 * that found the job running with no lease took it for one whose instance died and ran it again.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { LeaseStore } from "./admission/ports.ts";
import { Limiter } from "./admission/limiter.ts";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones } from "../tools/models/micro.ts";
import { loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { createServices, type Services } from "./services.ts";
import { type Admission, TranscriptionService, type TranscriptionServiceDeps } from "./transcription-service.ts";

let work: string;
let services: Services;
let clip: string;

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-transcription-"));
  clip = join(work, "bravo.wav");
  await writeAudioFile(clip, microTones([{ word: "bravo", seconds: 4 }]));
  const config = loadConfig({ API_KEYS: "sk-room", WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR, DEFAULT_MODEL: "generated/whisper-micro", DATA_DIR: join(work, "data"), VAD: "energy" });
  services = await createServices(config, createLogger("silent"), { listenUrl: "http://127.0.0.1:1", env: {} });
});
afterAll(async () => {
  await services?.close(AbortSignal.timeout(10_000));
  await rm(work, { recursive: true, force: true });
});

/** Room as a job's run holds it: released only when the run says so. */
function broughtRoom() {
  const room = { released: 0, lost: new Promise<void>(() => undefined), release: async () => void room.released++ };
  return room satisfies Admission;
}

describe("a transcription's room", () => {
  it("that the caller brought is still held when the transcription returns, and when it fails", async () => {
    const transcription = services.transcriber!.transcription;
    const room = broughtRoom();
    const transcript = await transcription.transcribeFile(clip, { id: "job_held", task: "transcribe" }, { admitted: room });
    expect(transcript.text.trim()).toBe("bravo");
    expect(room.released).toBe(0);

    const failing = broughtRoom();
    const notAudio = join(work, "not-audio.wav");
    await writeFile(notAudio, "not audio at all");
    await expect(transcription.transcribeFile(notAudio, { id: "job_failed", task: "transcribe" }, { admitted: failing })).rejects.toMatchObject({
      code: "unsupported_media",
    });
    expect(failing.released).toBe(0);
  });

  it("that it took itself is given back when it returns", async () => {
    const { transcription, admission } = services.transcriber!;
    const transcript = await transcription.transcribeFile(clip, { id: "req_own", task: "transcribe" }, { wait: "queue" });
    expect(transcript.text.trim()).toBe("bravo");
    expect(admission.stats.inUse).toBe(0);
    expect((await services.leases.snapshot()).held).toBe(0);
  });
});

describe("a synchronous request's wait for room", () => {
  afterEach(() => vi.useRealTimers());

  it("is one QUEUE_TIMEOUT for the place here and the cluster's lease together, not one each", async () => {
    vi.useFakeTimers();
    const admission = new Limiter({ permits: 1, queueSize: 4, queueTimeoutMs: 1000, retryAfterSeconds: () => 1 });
    const busy = admission.tryAcquire()!;
    // A cluster at its cap for as long as this test looks.
    const leases = { kind: "upstash", tryAcquire: vi.fn(async () => null), holdWhileFetching: vi.fn(), revoke: vi.fn(), snapshot: vi.fn(), close: vi.fn() } satisfies LeaseStore;
    const service = new TranscriptionService({ admission, compute: admission, leases, clusterWaitMs: 1000, instanceId: "test" } as unknown as TranscriptionServiceDeps);
    let answer: unknown = null;
    service.admit("req_waiting", "queue").then(
      (admitted) => (answer = admitted),
      (err: unknown) => (answer = err),
    );
    // The place here frees after 900 ms of the second: 100 ms are left for the cluster.
    await vi.advanceTimersByTimeAsync(900);
    expect(service.waitingForLease).toBe(0);
    busy.release();
    await vi.advanceTimersByTimeAsync(50);
    // Admitted here, waiting for the cluster: shown apart from those running.
    expect(service.waitingForLease).toBe(1);
    await vi.advanceTimersByTimeAsync(350);
    expect(answer).toMatchObject({ code: "rate_limited" });
    expect(service.waitingForLease).toBe(0);
    expect(leases.tryAcquire).toHaveBeenCalled();
    expect(admission.stats.inUse).toBe(0);
  });
});
