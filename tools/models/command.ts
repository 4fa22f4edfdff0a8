import { parseArgs } from "node:util";
import { DEFAULT_MODELS_DIR, GENERATED_KINDS, generateModel, type GeneratedKind } from "./generate.ts";

export const MODELS_USAGE = `slotscribe models generate <${GENERATED_KINDS.join("|")}> [--out DIR] [--tokens-per-window N] [--metadata DIR] [--timestamped]

Writes a Whisper model directory in the transformers.js layout to DIR/<model id> (default
${DEFAULT_MODELS_DIR}) and prints the model id and path. Point WHISPER_MODELS_DIR at DIR and
request the printed id as the model. --timestamped writes the <model id>_timestamped variant, whose
decoder also outputs cross-attentions (for timestamp_granularities[]=word), as the hub publishes it.`;

export async function modelsCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        out: { type: "string" },
        "tokens-per-window": { type: "string" },
        metadata: { type: "string" },
        timestamped: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    console.error(`slotscribe models: ${(err as Error).message}\n\n${MODELS_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [action, kind] = positionals;
  if (values.help) {
    console.log(MODELS_USAGE);
    return 0;
  }
  if (action !== "generate" || !kind) {
    console.error(MODELS_USAGE);
    return 2;
  }
  if (!(GENERATED_KINDS as readonly string[]).includes(kind)) {
    console.error(`unknown model kind "${kind}"; one of ${GENERATED_KINDS.join(", ")}`);
    return 2;
  }
  const tokensPerWindow = values["tokens-per-window"] === undefined ? undefined : Number(values["tokens-per-window"]);
  if (tokensPerWindow !== undefined && !(Number.isInteger(tokensPerWindow) && tokensPerWindow > 0)) {
    console.error(`slotscribe models: --tokens-per-window must be a positive whole number, got "${values["tokens-per-window"]}"`);
    return 2;
  }
  let model;
  try {
    model = await generateModel({
      kind: kind as GeneratedKind,
      out: values.out,
      tokensPerWindow,
      metadataDir: values.metadata,
      timestamped: values.timestamped,
      log: (line) => console.error(line),
    });
  } catch (err) {
    // A folder it cannot write, metadata it cannot read: the reason, not a stack.
    console.error(`slotscribe models: ${(err as Error).message}`);
    return 1;
  }
  const megabytes = Object.values(model.files).reduce((a, b) => a + b, 0) / 1e6;
  console.error(
    `${model.reused ? "reused" : "generated"} ${model.id}: ${(model.parameters / 1e6).toFixed(2)}M parameters, ${megabytes.toFixed(1)} MB, ${model.seconds.toFixed(1)} s`,
  );
  console.log(`${model.id}\t${model.path}`);
  return 0;
}
