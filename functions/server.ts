import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import type { Config } from "../lib/config.ts";
import { formatBytes } from "../lib/capacity/machine.ts";
import type { Logger } from "../lib/log.ts";
import { createServices, type Services } from "../lib/services.ts";
import { createApp } from "./app.ts";

export interface RunningServer {
  url: string;
  services: Services;
  close(): Promise<void>;
}

/** Builds the services, prints the capacity plan and listens. */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const services = await createServices(config, log);
  const { plan } = services;
  log.info(
    {
      memory: `${formatBytes(plan.machine.memoryBytes)} (${plan.machine.memorySource})`,
      cpus: `${plan.machine.cpus} (${plan.machine.cpuSource})`,
      models: plan.rows.map((r) => `${r.model} ${r.dtype}: ${formatBytes(r.footprint.residentBytes)} loaded, ${formatBytes(r.footprint.workingSetBytes)} per job${r.footprint.measured ? "" : " (estimated)"}`),
      slots: plan.slots,
      threadsPerJob: plan.threadsPerJob,
      limitedBy: plan.limitedBy,
      transcriptionsAtOnce: services.admission.stats.slots,
      queue: config.QUEUE_SIZE,
    },
    "capacity plan",
  );
  if (!plan.fits) log.warn("the configured models leave no memory for even one job; expect failures under load");
  if (!services.apiKeys.required) log.warn("ALLOW_ANONYMOUS=true: the API accepts requests without an API key");

  const app = createApp(services);
  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: config.PORT, hostname: config.HOST }, () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.HOST === "0.0.0.0" ? "127.0.0.1" : config.HOST}:${port}`;
  log.info({ url }, "listening");
  return {
    url,
    services,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await services.close();
    },
  };
}
