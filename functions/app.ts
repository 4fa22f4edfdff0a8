import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { PatternRouter } from "hono/router/pattern-router";
import { DomainError } from "../lib/errors.ts";
import capacity from "./capacity.ts";
import docs from "./docs.ts";
import extract from "./extract.ts";
import type { HttpDeps } from "./deps.ts";
import type { AppEnv } from "./env.ts";
import { forwardToWorker, WORKER_PATHS } from "./forward-to-worker.ts";
import healthz from "./healthz.ts";
import jobsCancel from "./jobs-cancel.ts";
import jobsCreate from "./jobs-create.ts";
import jobsGet from "./jobs-get.ts";
import jobsList from "./jobs-list.ts";
import jobsResult from "./jobs-result.ts";
import { handleError, logRequests, provide, requestOrigin, requireApiKey } from "./middleware.ts";
import metrics from "./metrics.ts";
import models from "./models.ts";
import modelsGet from "./models-get.ts";
import qstashCallbackAttempt from "./qstash-callback-attempt.ts";
import qstashCallbackFailed from "./qstash-callback-failed.ts";
import qstashRun from "./qstash-run.ts";
import qstashRunFailed from "./qstash-run-failed.ts";
import { signedTokenOnly } from "./qstash-inbox.ts";
import { corsFor } from "./cors.ts";
import { VERSION } from "../lib/version.ts";
import readyz from "./readyz.ts";
import statusPage from "./status-page.ts";
import transcriptions from "./transcriptions.ts";
import translations from "./translations.ts";

const JSON_BODY_MAX_BYTES = 64 * 1024;

/** The whole HTTP API over the given ports; tests call app.request() on it in process with fakes. */
export function createApp(deps: HttpDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>();
  app.use(provide(deps));
  app.use(logRequests());
  const origins = deps.config.CORS_ORIGINS;
  // Ahead of the key check: a browser's preflight carries no key. Errors keep these headers, so a
  // page can read a 401 or a 429's Retry-After too.
  if (origins.length > 0) app.use(corsFor(origins));
  app.use(requireApiKey);
  // Multipart framing adds a little to the file itself.
  const uploadMaxBytes = deps.config.MAX_UPLOAD_BYTES + 64 * 1024;
  const tooLarge = () => {
    throw new DomainError("payload_too_large", `The request body exceeds the upload limit of ${deps.config.MAX_UPLOAD_BYTES} bytes.`);
  };
  const uploadLimit = bodyLimit({ maxSize: uploadMaxBytes, onError: tooLarge });
  // A JSON request is a URL and a few fields; only uploads may be large.
  const jsonLimit = bodyLimit({
    maxSize: JSON_BODY_MAX_BYTES,
    onError: () => {
      throw new DomainError("payload_too_large", `A JSON body may be at most ${JSON_BODY_MAX_BYTES} bytes.`);
    },
  });
  // bodyLimit holds a body without a declared length in memory as it counts it, so only the bodies
  // read whole get it: JSON, and QStash's signed deliveries to /internal/, which may carry a whole
  // transcript. A form (multipart, or urlencoded) is limited while it streams, by its reader
  // (functions/multipart.ts), and any other body the routes refuse (415) without reading it; of those
  // only the declared length is checked here.
  // QStash delivers by POST only: another method is answered 405 by the routes, as anywhere else.
  app.on("POST", "/internal/qstash/*", signedTokenOnly);
  app.use((c, next) => {
    if (c.req.path.startsWith("/internal/")) return uploadLimit(c, next);
    if (/^application\/([\w.-]+\+)?json/i.test(c.req.header("content-type") ?? "")) return jsonLimit(c, next);
    if (Number(c.req.header("content-length") ?? 0) > uploadMaxBytes) tooLarge();
    return next();
  });
  if (deps.workerForwarder) {
    // Registered ahead of the routes for the same paths, which would parse the whole upload here.
    for (const path of WORKER_PATHS) app.post(path, forwardToWorker(deps.workerForwarder));
  }
  for (const routes of [
    healthz,
    readyz,
    models,
    modelsGet,
    capacity,
    transcriptions,
    translations,
    extract,
    jobsCreate,
    jobsList,
    jobsGet,
    jobsResult,
    jobsCancel,
    // Only QStash delivers to these, and only in cluster mode; elsewhere they are unknown paths.
    ...(deps.qstash ? [qstashRun, qstashRunFailed, qstashCallbackAttempt, qstashCallbackFailed] : []),
    statusPage,
  ])
    app.route("/", routes);
  // servers: PUBLIC_URL when set (behind a proxy), else the origin the client reached (as job links say), so
  // /docs' "Try it out" reaches this instance.
  app.doc31("/openapi.json", (c) => ({
    openapi: "3.1.0",
    info: {
      title: "slotscribe",
      version: VERSION,
      description: "Self-hostable Whisper transcription with admission control. Authenticate with an API key (API_KEYS) as a Bearer token or in X-API-Key.",
    },
    servers: [{ url: deps.baseUrl(requestOrigin(c)), description: "this instance" }],
    security: [{ bearer: [] as string[] }, { apiKey: [] as string[] }] as Record<string, string[]>[],
    tags: [
      { name: "audio", description: "OpenAI-compatible synchronous endpoints" },
      { name: "jobs", description: "Asynchronous jobs with signed callbacks" },
      { name: "service", description: "Probes and capacity" },
      { name: "internal", description: "QStash deliveries (cluster mode), signed with Upstash-Signature" },
    ],
  }));
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer", description: "An API key from API_KEYS" });
  app.openAPIRegistry.registerComponent("securitySchemes", "apiKey", { type: "apiKey", in: "header", name: "X-API-Key", description: "An API key from API_KEYS" });
  app.route("/", docs);
  app.route("/", metrics);
  const methodsOf = routeMethods(app);
  app.notFound((c) => {
    const allowed = methodsOf(c.req.path);
    // A route that takes the method and found nothing (an unknown file under /docs/assets/) is a 404.
    if (allowed.length === 0 || allowed.includes(c.req.method)) throw new DomainError("not_found", "No such endpoint.");
    c.header("allow", allowed.join(", "));
    throw new DomainError("method_not_allowed", `${c.req.method} is not allowed here: ${c.req.path} takes ${allowed.join(", ")}.`);
  });
  app.onError(handleError);
  return app;
}

/** The methods the app's routes take on a path (HEAD wherever GET), from its routes as registered. */
function routeMethods(app: OpenAPIHono<AppEnv>): (path: string) => string[] {
  let router: PatternRouter<string> | null = null;
  return (path) => {
    if (!router) {
      router = new PatternRouter<string>();
      // Middleware is registered for ALL methods; only routes say what a path takes.
      for (const r of app.routes) if (r.method !== "ALL") router.add(r.method, r.path, r.method);
    }
    const found = new Set<string>();
    for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE"]) if (router.match(method, path)[0].length > 0) found.add(method);
    if (found.has("GET")) found.add("HEAD");
    return [...found];
  };
}
