import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { Hono } from "hono";
import type { AppEnv } from "./env.ts";

/**
 * /docs: Swagger UI on /openapi.json, served from the swagger-ui-dist package in node_modules (never
 * a CDN, so it works on machines without internet). "Authorize" takes the API key (as Bearer or
 * X-API-Key), kept in the page's memory only, and "Try it out" sends requests to this instance.
 */
const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
};
const DIST = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
const cache = new Map<string, Uint8Array<ArrayBuffer>>();

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>slotscribe API</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<style>body{margin:0}</style></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>`;

// Not persistAuthorization: local storage would keep the key in the browser profile, for good and
// readable by the status page's origin, which promises the key stays in its tab. Earlier releases
// persisted it, so what they left is removed.
const INIT = `localStorage.removeItem("authorized");
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#ui",
  deepLinking: true,
  tryItOutEnabled: true,
  displayOperationId: true,
  validatorUrl: null,
});`;

export default new Hono<AppEnv>()
  .get("/docs", (c) => {
    // Nothing from another origin; "Try it out" may call this instance and PUBLIC_URL. Swagger UI
    // sets inline styles, hence 'unsafe-inline' for styles only.
    const publicUrl = c.var.deps.config.PUBLIC_URL;
    const connect = ["'self'", ...(publicUrl ? [new URL(publicUrl).origin] : [])].join(" ");
    c.header(
      "content-security-policy",
      `default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src ${connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    );
    c.header("cache-control", "no-store");
    return c.html(PAGE);
  })
  .get("/docs/init.js", (c) => c.body(INIT, 200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-cache" }))
  .get("/docs/assets/:file", async (c) => {
    const file = c.req.param("file");
    const type = ASSETS[file];
    if (!type) return c.notFound();
    let bytes = cache.get(file);
    if (!bytes) cache.set(file, (bytes = new Uint8Array(await readFile(join(DIST, file)))));
    return c.body(bytes, 200, { "content-type": type, "cache-control": "public, max-age=86400" });
  });
