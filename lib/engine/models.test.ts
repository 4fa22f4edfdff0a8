import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DomainError } from "../errors.ts";
import { HUB_MODELS, ModelCatalog, OPENAI_ALIAS } from "./models.ts";

function refusal(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DomainError);
    return err as DomainError;
  }
  throw new Error("expected the model to be refused");
}

describe("ModelCatalog in hub mode", () => {
  const catalog = new ModelCatalog({ defaultModel: "base.en", dtype: "q8" });

  it("is not offline", () => {
    expect(catalog.offline).toBe(false);
  });

  it("maps short ids to their hub exports", () => {
    expect(catalog.resolve("tiny.en")).toEqual({ name: "tiny.en", id: "onnx-community/whisper-tiny.en", dtype: "q8" });
    expect(catalog.resolve("medium").id).toBe("Xenova/whisper-medium");
    expect(catalog.resolve("large-v3-turbo").id).toBe("onnx-community/whisper-large-v3-turbo");
    // Word timestamps need these exports; the README's example asks for one by its short id.
    expect(catalog.resolve("base.en_timestamped").id).toBe("onnx-community/whisper-base.en_timestamped");
    expect(catalog.resolve("tiny_timestamped").id).toBe("onnx-community/whisper-tiny_timestamped");
  });

  it("knows the hub's timestamped export of a model, by short id or hub id, and no other", () => {
    expect(catalog.timestamped(catalog.resolve("whisper-1"))).toEqual({ name: "base.en_timestamped", id: "onnx-community/whisper-base.en_timestamped", dtype: "q8" });
    expect(catalog.timestamped(catalog.resolve("onnx-community/whisper-small"))?.id).toBe("onnx-community/whisper-small_timestamped");
    // The hub publishes none for these: a guessed id would be a failed download.
    expect(catalog.timestamped(catalog.resolve("medium"))).toBeNull();
    expect(catalog.timestamped(catalog.resolve("someone/whisper-custom"))).toBeNull();
    expect(catalog.timestamped(catalog.resolve("tiny_timestamped"))).toBeNull();
  });

  it("maps whisper-1 and an omitted model to the default model", () => {
    const expected = { name: "base.en", id: "onnx-community/whisper-base.en", dtype: "q8" };
    expect(catalog.resolve(OPENAI_ALIAS)).toEqual(expected);
    expect(catalog.resolve(undefined)).toEqual(expected);
    expect(catalog.resolve("")).toEqual(expected);
  });

  it("passes the configured dtype through", () => {
    expect(new ModelCatalog({ defaultModel: "tiny", dtype: "fp32" }).resolve("whisper-1")).toMatchObject({ id: "onnx-community/whisper-tiny", dtype: "fp32" });
  });

  it("accepts a full hub id as given", () => {
    expect(catalog.resolve("distil-whisper/distil-small.en")).toEqual({
      name: "distil-whisper/distil-small.en",
      id: "distil-whisper/distil-small.en",
      dtype: "q8",
    });
  });

  it.each(["whisper-2", "gpt-4o-transcribe", "huge", "a/b/c", "/etc/passwd", "../models", "org/..", "with space/model"])(
    "refuses %j as an invalid request naming the model parameter",
    (name) => {
      const err = refusal(() => catalog.resolve(name));
      expect(err.code).toBe("invalid_request");
      expect(err.details).toEqual({ param: "model" });
      expect(err.message).toContain(JSON.stringify(name));
    },
  );

  it("lists whisper-1 and every short id", async () => {
    expect(await catalog.list()).toEqual([OPENAI_ALIAS, ...Object.keys(HUB_MODELS)]);
  });
});

describe("ModelCatalog with a local models directory", () => {
  let root: string;
  let catalog: ModelCatalog;

  function model(path: string, { onnx = true } = {}): void {
    mkdirSync(join(root, path), { recursive: true });
    writeFileSync(join(root, path, "config.json"), "{}");
    if (onnx) mkdirSync(join(root, path, "onnx"));
  }

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "slotscribe-models-"));
    model("generated/whisper-x");
    model("generated/whisper-x_timestamped");
    model("onnx-community/whisper-tiny.en");
    model("generated/whisper-x.partial-1234"); // a generator run still in progress
    model("generated/.hidden-model");
    model("generated/config-only", { onnx: false });
    mkdirSync(join(root, "generated/empty"), { recursive: true });
    // A model-shaped sibling of the models directory that ../ would reach.
    mkdirSync(join(`${root}-outside`, "onnx"), { recursive: true });
    writeFileSync(join(`${root}-outside`, "config.json"), "{}");
    catalog = new ModelCatalog({ defaultModel: "generated/whisper-x", dtype: "q8", localDir: root });
  });

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(`${root}-outside`, { recursive: true, force: true });
  });

  it("is offline", () => {
    expect(catalog.offline).toBe(true);
  });

  it("resolves a model by its path below the directory", () => {
    expect(catalog.resolve("generated/whisper-x")).toEqual({ name: "generated/whisper-x", id: "generated/whisper-x", dtype: "q8" });
  });

  it("maps whisper-1 to the default model", () => {
    expect(catalog.resolve("whisper-1").id).toBe("generated/whisper-x");
  });

  it("resolves a short id when its hub export exists locally", () => {
    expect(catalog.resolve("tiny.en")).toEqual({ name: "tiny.en", id: "onnx-community/whisper-tiny.en", dtype: "q8" });
  });

  it("knows a model's timestamped export when its directory is beside it", () => {
    expect(catalog.timestamped(catalog.resolve("whisper-1"))).toEqual({ name: "generated/whisper-x_timestamped", id: "generated/whisper-x_timestamped", dtype: "q8" });
    expect(catalog.timestamped(catalog.resolve("tiny.en"))).toBeNull();
  });

  it("refuses a short id whose hub export is not in the directory", () => {
    const err = refusal(() => catalog.resolve("base.en"));
    expect(err.code).toBe("invalid_request");
    expect(err.message).toContain("WHISPER_MODELS_DIR");
  });

  it("refuses a name every object has as a property as an unknown model, not as an alias or a hub id", () => {
    const aliased = new ModelCatalog({ ...catalog.options, aliases: { fast: "generated/whisper-x" } });
    for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const err = refusal(() => aliased.resolve(name));
      expect(err.code, name).toBe("invalid_request");
      expect(err.message, name).toContain(`"${name}"`);
    }
    for (const name of ["constructor", "valueOf"])
      expect(refusal(() => new ModelCatalog({ defaultModel: "base.en", dtype: "q8", aliases: {} }).resolve(name)).message).toContain(`"${name}"`);
  });

  it("refuses a missing model directory", () => {
    expect(refusal(() => catalog.resolve("generated/whisper-y")).code).toBe("invalid_request");
    expect(refusal(() => catalog.resolve("generated/empty")).code).toBe("invalid_request");
  });

  it('refuses a model directory written with an empty or "." path step, naming the id', () => {
    for (const name of ["generated/whisper-x/", "generated//whisper-x", "./generated/whisper-x", "generated/./whisper-x"]) {
      const err = refusal(() => catalog.resolve(name));
      expect(err.code, name).toBe("invalid_request");
      expect(err.message, name).toContain('"generated/whisper-x"?');
    }
  });

  it("refuses paths that escape the directory, even to a model-shaped directory", () => {
    const outside = `../${basename(root)}-outside`;
    for (const name of [outside, `generated/../${outside}`, `${root}-outside`, "..", "../", "/etc", "/"]) {
      const err = refusal(() => catalog.resolve(name));
      expect(err.code, name).toBe("invalid_request");
      // The message echoes what was asked for, never where the models directory is.
      expect(err.message.replaceAll(name, ""), name).not.toContain(root);
    }
  });

  it("lists whisper-1, short ids found locally and every complete model directory", async () => {
    expect(await catalog.list()).toEqual([OPENAI_ALIAS, "tiny.en", "generated/whisper-x", "generated/whisper-x_timestamped", "onnx-community/whisper-tiny.en"]);
  });

  it("leaves out staging directories, hidden directories and directories without onnx/", async () => {
    const listed = await catalog.list();
    expect(listed.some((name) => name.includes(".partial-"))).toBe(false);
    expect(listed).not.toContain("generated/.hidden-model");
    expect(listed).not.toContain("generated/config-only");
    expect(listed).not.toContain("generated/empty");
  });

  it("lists only whisper-1 for a directory that does not exist", async () => {
    const missing = new ModelCatalog({ defaultModel: "x/y", dtype: "q8", localDir: join(root, "does-not-exist") });
    expect(await missing.list()).toEqual([OPENAI_ALIAS]);
  });
});
