import { Hono } from "hono";
import type { AppEnv } from "./env.ts";

/** Prometheus text format; behind the API key like the rest (Prometheus sends it as a bearer token). */
export default new Hono<AppEnv>().get("/metrics", async (c) => {
  const { registry } = c.var.deps.metrics;
  return c.body(await registry.metrics(), 200, { "content-type": registry.contentType });
});
