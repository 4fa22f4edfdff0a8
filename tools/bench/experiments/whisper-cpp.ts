/**
 * whisper.cpp side by side: its own benchmark (whisper-bench: one encoder run and 256 single-token
 * decoder steps) on a q8_0 file of the same architecture and vocabulary as each generated model, on
 * the same threads, and what those figures make of the work slotscribe's speed file took.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { DEFAULT_TOKENS_PER_WINDOW } from "../../models/generate.ts";
import { writeWhisperCppModel } from "../../models/whisper-cpp.ts";
import { type Context, MODELS_DIR, type ModelKind, ROOT, TARGETS, recordTarget } from "../context.ts";
import { ms, num, renderTable, times } from "../report.ts";

const run = promisify(execFile);

/** Where tools/bench/build-whisper-cpp.sh puts the binaries; WHISPER_CPP_BIN overrides it. */
const WHISPER_CPP_BIN = process.env.WHISPER_CPP_BIN ?? join(ROOT, ".cache", "whisper.cpp", "build", "bin");

/** whisper-bench runs per model: the fastest encoder run and per-token step are its figures, as the bound takes its best window. */
const RUNS = 2;

interface SpeedResult {
  kind: string;
  dtype: string;
  rtf: number;
  audioSeconds: number;
  windows: number;
  textTokens: number;
  segments: number;
}

export interface WhisperBenchFigures {
  encodeMs: number;
  decodeMsPerToken: number;
}

/** The encoder's and the single-token decoder's per-run milliseconds from whisper-bench's timings. */
export function parseWhisperBench(output: string): WhisperBenchFigures {
  const perRun = (label: string) => {
    const m = new RegExp(`${label} time =\\s*[\\d.]+ ms /\\s*\\d+ runs \\(\\s*([\\d.]+) ms per run\\)`).exec(output);
    if (!m) throw new Error(`whisper-bench printed no ${label} time:\n${output.slice(-1500)}`);
    return Number(m[1]);
  };
  return { encodeMs: perRun("encode"), decodeMsPerToken: perRun("decode") };
}

async function benchModel(kind: ModelKind, dir: string, threads: number, log: (l: string) => void): Promise<WhisperBenchFigures> {
  const f16 = join(dir, `ggml-${kind}-f16.bin`);
  const q8 = join(dir, `ggml-${kind}-q8_0.bin`);
  const { parameters } = await writeWhisperCppModel(join(MODELS_DIR, "generated", `whisper-${kind}`), f16);
  log(`whisper.cpp ${kind}: wrote a ggml file of ${(parameters / 1e6).toFixed(1)}M parameters; quantizing to q8_0`);
  await run(join(WHISPER_CPP_BIN, "whisper-quantize"), [f16, q8, "q8_0"]);
  const runs: WhisperBenchFigures[] = [];
  for (let i = 0; i < RUNS; i++) {
    const { stderr, stdout } = await run(join(WHISPER_CPP_BIN, "whisper-bench"), ["-m", q8, "-t", String(threads)], { maxBuffer: 1 << 24 }).catch(
      (error: { signal?: string | null }) => {
        // A build from before tools/bench/build-whisper-cpp.sh fixed ggml's AMX kernels dies this way on AMX Xeons.
        if (error.signal) throw new Error(`whisper-bench was killed by ${error.signal}: rebuild it with tools/bench/build-whisper-cpp.sh`, { cause: error });
        throw error;
      },
    );
    runs.push(parseWhisperBench(stderr + stdout));
  }
  return { encodeMs: Math.min(...runs.map((r) => r.encodeMs)), decodeMsPerToken: Math.min(...runs.map((r) => r.decodeMsPerToken)) };
}

export async function whisperCppExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  if (!existsSync(join(WHISPER_CPP_BIN, "whisper-bench"))) {
    ctx.results.whisperCpp = { skipped: `no whisper-bench in ${WHISPER_CPP_BIN}` };
    ctx.options.print(
      `\n== whisper.cpp side by side: skipped, no whisper-bench in ${WHISPER_CPP_BIN} (bash tools/bench/build-whisper-cpp.sh <whisper.cpp source>, or set WHISPER_CPP_BIN) ==`,
    );
    return;
  }
  const threads = cpus().length;
  const speed = (ctx.results.speed as SpeedResult[] | undefined) ?? [];
  const rows: string[][] = [];
  const results: Record<string, unknown>[] = [];
  for (const kind of ctx.options.models) {
    log(`whisper.cpp ${kind}: q8_0 on ${threads} threads`);
    const figures = await benchModel(kind, ctx.tmp, threads, log);
    const windowMs = figures.encodeMs + DEFAULT_TOKENS_PER_WINDOW * figures.decodeMsPerToken;
    const ours = speed.find((s) => s.kind === kind && s.dtype === "q8");
    // The bound experiment's window on the same threads: onnxruntime alone, the engine without the service.
    const alone = ctx.bounds.get(`${kind}/q8`)?.solo;
    // The speed file's work for whisper.cpp: an encoder run per window, and a decoder step per text
    // token, per segment's two timestamps, per window's end-of-text and its start tokens (one call).
    const sameWork = ours?.windows ? (ours.windows * figures.encodeMs + (ours.textTokens + 2 * ours.segments + 2 * ours.windows) * figures.decodeMsPerToken) / 1000 : null;
    const theirsRtf = sameWork ? ours!.audioSeconds / sameWork : null;
    const ratio = theirsRtf && ours ? ours.rtf / theirsRtf : null;
    rows.push([
      `${kind} q8_0`,
      ms(figures.encodeMs, 0),
      ms(figures.decodeMsPerToken, 2),
      `${ms(windowMs, 0)} = ${times(30_000 / windowMs, 1)}`,
      alone ? `${ms(alone.windowMs, 0)} (${times(windowMs / alone.windowMs, 2)} faster)` : "-",
      theirsRtf ? times(theirsRtf, 1) : "-",
      ours ? times(ours.rtf, 1) : "-",
      ratio ? `${times(ratio, 2)} ${recordTarget(ctx, "whisper.cpp", ratio, times(ratio, 2), TARGETS.vsWhisperCpp[kind])}` : "-",
    ]);
    results.push({
      kind,
      threads,
      ...figures,
      windowMs,
      windowRtf: 30_000 / windowMs,
      onnxruntimeWindowMs: alone?.windowMs ?? null,
      speedFileSeconds: sameWork,
      speedFileRtf: theirsRtf,
      slotscribeRtf: ours?.rtf ?? null,
      ratio,
    });
  }
  ctx.results.whisperCpp = results;
  ctx.options.print(
    renderTable(
      `\n== whisper.cpp side by side (its whisper-bench, q8_0, ${threads} threads, flash attention as it defaults) ==`,
      [
        "model",
        "encoder run",
        "decoder step",
        `window (encoder + ${DEFAULT_TOKENS_PER_WINDOW} steps)`,
        "onnxruntime's window",
        "speed file's work",
        "slotscribe",
        "slotscribe vs whisper.cpp",
      ],
      rows,
      [
        "A ggml file of each generated model's architecture, vocabulary and mel filters (tools/models/whisper-cpp.ts, random weights:",
        "whisper.cpp's compute depends on the shapes), quantized by whisper-quantize. speed file's work: whisper.cpp's real time for the",
        "windows and tokens slotscribe decoded in the speed experiment (an encoder run per window; a step per text token, timestamp,",
        "end-of-text and start call), from its own figures: its mel, sampling, file reading and fallbacks are left out, all in its favour.",
        `slotscribe: the speed experiment's real time through the service (HTTP, ffmpeg, VAD included).${speed.length ? "" : " Not run: add speed to --only."}`,
        `window: ${num(DEFAULT_TOKENS_PER_WINDOW, 0)} steps, the engine issue's comparison; onnxruntime's window: the bound experiment's, the same`,
        `window through the export's graphs on the same threads (${ctx.bounds.size ? "onnxruntime alone, no service" : "not run: add --only bound"}).`,
      ],
    ),
  );
}
