import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";
import { DomainError } from "../errors.ts";
import type { ModelSpec } from "./protocol.ts";

/** Short ids to the published ONNX exports that transformers.js loads from the hub. */
export const HUB_MODELS: Record<string, string> = {
  tiny: "onnx-community/whisper-tiny",
  "tiny.en": "onnx-community/whisper-tiny.en",
  base: "onnx-community/whisper-base",
  "base.en": "onnx-community/whisper-base.en",
  small: "onnx-community/whisper-small",
  "small.en": "onnx-community/whisper-small.en",
  medium: "Xenova/whisper-medium",
  "medium.en": "Xenova/whisper-medium.en",
  "large-v3-turbo": "onnx-community/whisper-large-v3-turbo",
  // The exports with cross-attention outputs, which word timestamps need.
  ...Object.fromEntries(["tiny", "tiny.en", "base", "base.en", "small", "small.en"].map((name) => [`${name}_timestamped`, `onnx-community/whisper-${name}_timestamped`])),
};

export const OPENAI_ALIAS = "whisper-1";

/**
 * The model for whisper-1 and requests that name none. Multilingual, as OpenAI's whisper-1 is: an
 * English-only default answered translations and any language but English with a 400, and decoded
 * speech in other languages as English. base.en stays a choice for English alone.
 */
export const DEFAULT_MODEL = "base";

/** How the hub names a model's export with cross-attention outputs (onnx-community/whisper-base.en_timestamped), needed for word timestamps. */
export const TIMESTAMPED_SUFFIX = "_timestamped";

export interface ModelCatalogOptions {
  defaultModel: string;
  dtype: "q8" | "fp32";
  /** Set: models are directories below it and nothing is downloaded. */
  localDir?: string;
  /** Other names for models (OpenAI's model names); null stands for the default model. */
  aliases?: Record<string, string | null>;
}

/**
 * Turns what a client asks for ("whisper-1", "base.en", "generated/whisper-micro") into the model
 * transformers.js loads. With a local directory, a model's id is its path below that directory, as
 * transformers.js names local models; short ids then resolve to the hub id's path there.
 */
export class ModelCatalog {
  constructor(readonly options: ModelCatalogOptions) {}

  get offline(): boolean {
    return this.options.localDir !== undefined;
  }

  resolve(requested: string | undefined): ModelSpec & { name: string } {
    // Own keys only: a name such as "constructor" is a property of every object, not an alias.
    const aliases = this.options.aliases ?? {};
    const alias = requested !== undefined && Object.hasOwn(aliases, requested) ? aliases[requested] : undefined;
    const name = !requested || requested === OPENAI_ALIAS || alias === null ? this.options.defaultModel : (alias ?? requested);
    const found = this.locate(name);
    if ("why" in found) throw unknownModel(name, found.why);
    return { name, id: found.id, dtype: this.options.dtype };
  }

  /**
   * The export of `model` with cross-attention outputs (its weights, and what word timestamps need),
   * when one is known to be there: a directory beside it offline, else one the hub is known to
   * publish; a guessed hub id would only be a failed download. Null for an export already timestamped.
   */
  timestamped(model: { name: string; id: string }): (ModelSpec & { name: string }) | null {
    if (model.id.endsWith(TIMESTAMPED_SUFFIX)) return null;
    const name = `${model.name}${TIMESTAMPED_SUFFIX}`;
    const found = this.locate(name);
    if ("why" in found || found.id !== `${model.id}${TIMESTAMPED_SUFFIX}`) return null;
    if (!this.offline && !Object.values(HUB_MODELS).includes(found.id)) return null;
    return { name, id: found.id, dtype: this.options.dtype };
  }

  /** Why a model named in the settings cannot be loaded here, or null when it can be (as far as can be known before loading it). */
  problemWith(name: string): string | null {
    const found = this.locate(name);
    return "why" in found ? `"${name}": ${found.why}` : null;
  }

  private locate(name: string): { id: string } | { why: string } {
    const hub = Object.hasOwn(HUB_MODELS, name) ? HUB_MODELS[name] : undefined;
    const id = hub ?? name;
    if (this.options.localDir) {
      const root = resolve(this.options.localDir);
      const dir = resolve(root, id);
      if (dir !== root && !dir.startsWith(root + sep)) return { why: "a model id names a directory inside WHISPER_MODELS_DIR" };
      // A trailing or doubled slash names the same directory, but not a model id the loader can use.
      const canonical = relative(root, dir).split(sep).join("/");
      if (canonical !== id) return { why: `a model id has no empty or "." path steps: ${JSON.stringify(canonical)}?` };
      if (!existsSync(join(dir, "config.json"))) return { why: `no model directory ${JSON.stringify(id)} (with its config.json) in WHISPER_MODELS_DIR` };
    } else if (!hub && (!/^[\w.-]+\/[\w.-]+$/.test(name) || name.includes(".."))) {
      // ".." is no valid hub id (transformers.js refuses it too) and would reach outside the model cache.
      return { why: "not a known Whisper model" };
    }
    return { id };
  }

  /** Model names a client can ask for. */
  async list(): Promise<string[]> {
    const aliases = Object.keys(this.options.aliases ?? {});
    if (!this.options.localDir) return [OPENAI_ALIAS, ...aliases, ...Object.keys(HUB_MODELS)];
    const root = resolve(this.options.localDir);
    const found: string[] = [];
    const walk = async (dir: string, depth: number): Promise<void> => {
      if (existsSync(join(dir, "config.json")) && existsSync(join(dir, "onnx"))) {
        found.push(relative(root, dir).split(sep).join("/"));
        return;
      }
      if (depth === 0) return;
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory() && !e.name.startsWith(".") && !e.name.includes(".partial-")) await walk(join(dir, e.name), depth - 1);
    };
    await walk(root, 3);
    const shortIds = Object.entries(HUB_MODELS)
      .filter(([, hub]) => found.includes(hub))
      .map(([short]) => short);
    return [OPENAI_ALIAS, ...aliases, ...shortIds, ...found.sort()];
  }
}

function unknownModel(name: string, why = "not a known Whisper model"): DomainError {
  return new DomainError("invalid_request", `Unknown model "${name}": ${why}. GET /v1/models lists the available ones.`, {
    details: { param: "model" },
  });
}
