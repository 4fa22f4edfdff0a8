import { parseArgs } from "node:util";
import { type Dtype, EXPERIMENTS, type Experiment, MODEL_KINDS, type ModelKind } from "./context.ts";

export const BENCH_USAGE = `slotscribe bench [--quick] [--models tiny,base,small] [--dtypes q8,fp32] [--concurrency-models tiny[,base]] [--out bench-results] [--calibrate] [--only ${EXPERIMENTS.join(",")}]

Measures the service on generated architecture-faithful models (speed per model and dtype against
this machine's ONNX Runtime compute bound, where a window's time goes (features, encoder, decoder,
JavaScript), concurrency vs a naive model-per-request server,
head-of-line latency, /healthz while saturated, memory per slot, footprint probes, the Silero VAD's
share of the transcription time and a file with 30% non-speech, whisper.cpp side by side when
tools/bench/build-whisper-cpp.sh has built it) and prints each
figure next to its product target with PASS/MISS. Writes the results as JSON to
<out>/bench-<timestamp>.json. A full run takes about 40 min on 2 cores; --quick (tiny q8 only,
fewer concurrency levels and samples) about 6 min. --calibrate also writes the footprint-probe measurements
to lib/capacity/footprints.json. The concurrency sweep (1, 2, 4, 6, 8 requests; 1, 2, 4 with --quick)
runs on tiny q8; --concurrency-models tiny,base adds base q8 (about 15 min more).`;

export async function benchCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        quick: { type: "boolean", default: false },
        models: { type: "string" },
        dtypes: { type: "string" },
        out: { type: "string", default: "bench-results" },
        calibrate: { type: "boolean", default: false },
        only: { type: "string" },
        "concurrency-models": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${BENCH_USAGE}`);
    return 2;
  }
  if (values.help) {
    console.error(BENCH_USAGE);
    return 0;
  }
  const list = (text: string | undefined) =>
    (text ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  const models = (values.models ? list(values.models) : values.quick ? ["tiny"] : [...MODEL_KINDS]) as ModelKind[];
  const dtypes = (values.dtypes ? list(values.dtypes) : values.quick ? ["q8"] : ["q8", "fp32"]) as Dtype[];
  const concurrencyModels = values["concurrency-models"] ? (list(values["concurrency-models"]) as ModelKind[]) : undefined;
  const only = values.only ? (list(values.only) as Experiment[]) : undefined;
  const bad = [
    ...[...models, ...(concurrencyModels ?? [])].filter((m) => !MODEL_KINDS.includes(m)).map((m) => `unknown model "${m}" (one of ${MODEL_KINDS.join(", ")})`),
    ...dtypes.filter((d) => d !== "q8" && d !== "fp32").map((d) => `unknown dtype "${d}" (q8 or fp32)`),
    ...(only ?? []).filter((e) => !EXPERIMENTS.includes(e)).map((e) => `unknown experiment "${e}" (one of ${EXPERIMENTS.join(", ")})`),
  ];
  if (bad.length || models.length === 0 || dtypes.length === 0) {
    console.error(`${bad.join("\n") || "no models or dtypes"}\n\n${BENCH_USAGE}`);
    return 2;
  }

  // The benchmark itself (and what it imports) loads only when the command runs.
  const { cleanupNow } = await import("./processes.ts");
  const { runBench } = await import("./run.ts");
  // Servers and probes are child processes: never leave one behind.
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\nbench: ${signal}, stopping servers and removing temp files`);
    cleanupNow();
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  process.once("SIGHUP", onSignal);
  process.once("exit", cleanupNow);

  const { failures } = await runBench({
    quick: values.quick,
    models,
    dtypes,
    out: values.out,
    calibrate: values.calibrate,
    concurrencyModels,
    only,
    print: (text) => console.log(text),
    log: (line) => console.error(line),
  });
  return failures ? 1 : 0;
}
