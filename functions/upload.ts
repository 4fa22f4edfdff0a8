import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { z } from "@hono/zod-openapi";
import { AppError } from "../lib/errors.ts";
import { scratchName } from "../lib/scratch.ts";
import type { Services } from "../lib/services.ts";

export const FileField = z
  .instanceof(File, {
    error: (issue) => (Array.isArray(issue.input) ? `send one file in the multipart field "file", not ${issue.input.length}` : 'a file is required in the multipart field "file"'),
  })
  .openapi({ type: "string", format: "binary", description: "The audio or video file." });

/**
 * A model id as clients send it. Ids are paths below WHISPER_MODELS_DIR, where a "." or ".." step
 * that stays inside it still is no model transformers.js loads; the length bound keeps a huge
 * field out of the messages that name it.
 */
export const ModelField = z
  .string()
  .max(256)
  .refine((id) => !id.includes("\\") && !id.split("/").some((step) => step === "." || step === ".."), {
    message: 'model may not contain "." or ".." path steps or backslashes',
  })
  .default("whisper-1")
  .openapi({ example: "whisper-1" });

/** Fetched media and callback URLs: http(s), and short enough to repeat in a message or log line. */
export function urlField(name: string) {
  return z.url({ protocol: /^https?$/, message: `${name} must be an http(s) URL` }).max(8192);
}

/** Writes an uploaded file to `path`, refusing it when over the upload limit; nothing is left on failure. */
export async function saveUpload(services: Services, file: File, path: string): Promise<void> {
  if (file.size > services.config.MAX_UPLOAD_BYTES) {
    throw new AppError("payload_too_large", `The file is ${file.size} bytes; the limit is ${services.config.MAX_UPLOAD_BYTES}.`);
  }
  try {
    await pipeline(Readable.fromWeb(file.stream() as WebReadableStream), createWriteStream(path));
  } catch (err) {
    await rm(path, { force: true });
    throw err;
  }
}

/** Spools an upload to a path of its own, runs `use` on it and always removes it. */
export async function withUpload<T>(services: Services, file: File, use: (path: string) => Promise<T>): Promise<T> {
  const path = join(services.tempDir, scratchName(".upload"));
  try {
    await saveUpload(services, file, path);
    return await use(path);
  } finally {
    await rm(path, { force: true });
  }
}
