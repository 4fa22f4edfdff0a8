import { benchCommand, BENCH_USAGE } from "./bench/command.ts";
import type { Command } from "../cli/run.ts";
import { modelsCommand, MODELS_USAGE } from "./models/command.ts";

/** The development tools' commands: they generate models and measure the service, and never run in it. */
export const TOOL_COMMANDS: readonly Command[] = [
  { name: "models", synopsis: "models generate   write a generated Whisper model directory", usage: MODELS_USAGE, run: modelsCommand },
  { name: "bench", synopsis: "bench             measure speed, memory and latency against the product targets", usage: BENCH_USAGE, run: benchCommand },
];
