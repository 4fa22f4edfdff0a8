import { createReadStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { createRoute, z } from "@hono/zod-openapi";
import { AppError } from "../lib/errors.ts";
import { downloadToFile, assertOutboundAllowed } from "../lib/net/safe-fetch.ts";
import { scratchName } from "../lib/scratch.ts";
import { transcriberOf } from "../lib/services.ts";
import { errorResponses, router } from "./env.ts";
import { FileField, saveUpload, urlField } from "./upload.ts";

const FORMATS = { wav: "audio/wav", mp3: "audio/mpeg", opus: "audio/ogg" } as const;
const Format = z.enum(["wav", "mp3", "opus"]).default("wav").openapi({ description: "wav is 16 kHz mono PCM; opus comes in an Ogg container." });

export const route = createRoute({
  method: "post",
  operationId: "extractAudio",
  tags: ["audio"],
  path: "/v1/audio/extract",
  summary: "Extract the audio track of an uploaded or URL-given media file (wav 16 kHz mono, mp3 or opus)",
  request: {
    body: {
      content: {
        "multipart/form-data": { schema: z.object({ file: FileField, format: Format }) },
        "application/json": { schema: z.object({ url: urlField("url"), format: Format }) },
      },
    },
  },
  responses: {
    200: { description: "The audio.", content: { "audio/wav": { schema: z.string().openapi({ format: "binary" }) }, "audio/mpeg": { schema: z.string() }, "audio/ogg": { schema: z.string() } } },
    ...errorResponses(400, 403, 413, 415, 422, 429),
  },
});

export default router().openapi(route, async (c) => {
  const services = c.get("services");
  const contentType = c.req.header("content-type") ?? "";
  const body = contentType.includes("application/json") ? c.req.valid("json") : contentType.includes("multipart/form-data") ? c.req.valid("form") : null;
  if (!body) throw new AppError("unsupported_media", "Send multipart/form-data (with a file) or application/json (with a url).");

  const input = join(services.tempDir, scratchName(".input"));
  const output = join(services.tempDir, scratchName(`.${body.format === "opus" ? "ogg" : body.format}`));
  const cleanup = () => Promise.all([rm(input, { force: true }), rm(output, { force: true })]);
  try {
    if ("url" in body) {
      await assertOutboundAllowed(body.url, services.policy);
      await downloadToFile(body.url, input, { maxBytes: services.config.MAX_DOWNLOAD_BYTES, timeoutMs: services.config.DOWNLOAD_TIMEOUT, signal: c.req.raw.signal }, services.policy);
    } else {
      await saveUpload(services, body.file, input);
    }
    await transcriberOf(services).transcription.extract(input, output, body.format, c.req.raw.signal);
    const { size } = await stat(output);
    const stream = createReadStream(output);
    stream.once("close", () => void cleanup());
    return c.body(Readable.toWeb(stream) as ReadableStream, 200, {
      "content-type": FORMATS[body.format],
      "content-length": String(size),
      "content-disposition": `attachment; filename="audio.${body.format === "opus" ? "ogg" : body.format}"`,
    }) as never;
  } catch (err) {
    await cleanup();
    throw err;
  }
});
