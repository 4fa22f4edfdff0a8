import { createReadStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { createRoute, z } from "@hono/zod-openapi";
import { assertOutboundAllowed } from "../lib/net/outbound-policy.ts";
import { downloadToFile } from "../lib/net/safe-fetch.ts";
import { scratchName } from "../lib/scratch.ts";
import { transcriberOf } from "./deps.ts";
import { errorResponses } from "./env.ts";
import { FileField, isJson, readForm, readJson, uploadRoute, urlField } from "./upload.ts";

const FORMATS = { wav: "audio/wav", mp3: "audio/mpeg", opus: "audio/ogg" } as const;
const Format = z.enum(["wav", "mp3", "opus"]).default("wav").openapi({ description: "wav is 16 kHz mono PCM; opus comes in an Ogg container." });

const ExtractForm = z.object({ file: FileField, format: Format });
const ExtractJson = z.object({ url: urlField("url"), format: Format });

export const route = createRoute({
  method: "post",
  operationId: "extractAudio",
  tags: ["audio"],
  path: "/v1/audio/extract",
  summary: "Extract the audio track of an uploaded or URL-given media file (wav 16 kHz mono, mp3 or opus)",
  request: {
    body: {
      content: {
        "multipart/form-data": { schema: ExtractForm },
        "application/json": { schema: ExtractJson },
      },
    },
  },
  responses: {
    200: {
      description: "The audio.",
      content: { "audio/wav": { schema: z.string().openapi({ format: "binary" }) }, "audio/mpeg": { schema: z.string() }, "audio/ogg": { schema: z.string() } },
    },
    ...errorResponses(400, 403, "request_timeout", 413, 415, "unprocessable_audio", 429, 502, 503, 504),
  },
});

export default uploadRoute(route, async (c) => {
  const deps = c.var.deps;
  const { transcription } = transcriberOf(deps);
  transcription.assertRoom();
  const body = isJson(c) ? await readJson(c, ExtractJson) : await readForm(c, ExtractForm);

  const input = "url" in body ? join(deps.tempDir, scratchName(".input")) : body.file.path;
  const output = join(deps.tempDir, scratchName(`.${body.format === "opus" ? "ogg" : body.format}`));
  const cleanup = () => Promise.all([rm(input, { force: true }), rm(output, { force: true })]);
  try {
    if ("url" in body) {
      await assertOutboundAllowed(body.url, deps.policy, { param: "url" });
      await downloadToFile(body.url, input, { maxBytes: deps.config.MAX_DOWNLOAD_BYTES, timeoutMs: deps.config.DOWNLOAD_TIMEOUT, signal: c.req.raw.signal }, deps.policy);
    }
    await transcription.extract(input, output, body.format, c.req.raw.signal);
    const { size } = await stat(output);
    const stream = createReadStream(output);
    stream.once("close", () => void cleanup());
    return c.body(Readable.toWeb(stream) as ReadableStream, 200, {
      "content-type": FORMATS[body.format],
      "content-length": String(size),
      "content-disposition": `attachment; filename="audio.${body.format === "opus" ? "ogg" : body.format}"`,
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
});
