import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DomainError } from "../errors.ts";
import { type OutboundPolicy, parseAllowlist, type ResolvedAddress } from "./outbound-policy.ts";
import { downloadToFile, OutboundNetworkError, safeFetch } from "./safe-fetch.ts";

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected the promise to reject");
}

async function expectDomainError(promise: Promise<unknown>, code: DomainError["code"], message?: RegExp): Promise<DomainError> {
  const err = await rejection(promise);
  expect(err).toBeInstanceOf(DomainError);
  const domainError = err as DomainError;
  expect(domainError.code).toBe(code);
  if (message) expect(domainError.message).toMatch(message);
  return domainError;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

const routes: Record<string, Route> = {
  "/hello": (_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" }).end("hello world");
  },
  "/echo": (req, res, body) => {
    res.writeHead(200, { "content-type": "application/json" }).end(
      JSON.stringify({
        method: req.method,
        host: req.headers.host,
        authorization: req.headers.authorization ?? null,
        contentLength: req.headers["content-length"] ?? null,
        body,
      }),
    );
  },
  "/redirect": (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    res.writeHead(Number(url.searchParams.get("status") ?? 302), { location: url.searchParams.get("to") ?? "/" }).end();
  },
  "/loop": (_req, res) => {
    res.writeHead(302, { location: "/loop" }).end();
  },
  "/chunked-2000": (_req, res) => {
    res.writeHead(200);
    res.write("x".repeat(1000));
    res.end("x".repeat(1000));
  },
  "/declared-2000": (_req, res) => {
    res.writeHead(200, { "content-length": "2000" }).end("x".repeat(2000));
  },
  "/hang": () => {},
  "/stall-body": (_req, res) => {
    res.writeHead(200);
    res.write("partial");
  },
  "/drop-mid-body": (_req, res) => {
    res.writeHead(200, { "content-length": "100" });
    res.write("partial", () => res.socket?.destroy());
  },
  "/missing": (_req, res) => {
    res.writeHead(404).end("not here");
  },
  "/overloaded": (_req, res) => {
    res.writeHead(503).end("later");
  },
};

let server: http.Server;
let port: number;
let origin: string;
let tempDir: string;
const loopbackOnly: OutboundPolicy = parseAllowlist("127.0.0.1/32");

/** Resolves `names` to fixed answers, counting calls, instead of asking real DNS. */
function fakeResolver(names: Record<string, string[]>) {
  const calls: string[] = [];
  const resolve = async (hostname: string): Promise<ResolvedAddress[]> => {
    calls.push(hostname);
    const answers = names[hostname];
    if (!answers) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    return answers.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };
  return { resolve, calls };
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      const route = routes[new URL(req.url ?? "/", "http://x").pathname];
      if (route) route(req, res, body);
      else res.writeHead(500).end("no such route");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
  origin = `http://127.0.0.1:${port}`;
  tempDir = await mkdtemp(join(tmpdir(), "safe-fetch-test-"));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(tempDir, { recursive: true, force: true });
});

describe("safeFetch refusals", () => {
  const nothingAllowed = parseAllowlist(undefined);

  it.each([
    ["http://127.0.0.1/", /127\.0\.0\.1 is a loopback address/],
    ["http://10.0.0.1/", /10\.0\.0\.1 is a private address/],
    ["http://169.254.169.254/latest/meta-data/", /169\.254\.169\.254 is a cloud metadata address/],
    ["http://[::1]/", /::1 is a loopback address/],
    ["http://[::ffff:127.0.0.1]/", /::ffff:7f00:1 is a loopback address/],
    ["http://0.0.0.0/", /0\.0\.0\.0 is an unspecified/],
    ["http://[fd00:ec2::254]/", /fd00:ec2::254 is a cloud metadata address/],
    ["http://2130706433/", /127\.0\.0\.1 is a loopback address/],
    ["http://0x7f.1/", /127\.0\.0\.1 is a loopback address/],
    ["http://localhost/", /localhost resolves to a loopback address/],
  ])("refuses %s", async (url, message) => {
    await expectDomainError(safeFetch(url, {}, nothingAllowed), "forbidden", message);
  });

  it.each(["file:///etc/passwd", "ftp://example.com/file", "gopher://example.com/", "data:text/plain,hi"])("refuses the non-http scheme of %s", async (url) => {
    await expectDomainError(safeFetch(url, {}, nothingAllowed), "forbidden", /scheme .* is not allowed/);
  });

  it("refuses URLs carrying credentials and strings that are not URLs", async () => {
    await expectDomainError(safeFetch("http://user:pw@example.com/", {}, nothingAllowed), "invalid_request", /credentials/);
    await expectDomainError(safeFetch("not a url", {}, nothingAllowed), "invalid_request", /not a valid URL/);
  });

  it("refuses a hostname that resolves to a private address without echoing the address", async () => {
    const { resolve } = fakeResolver({ "internal.example": ["10.1.2.3"] });
    const err = await expectDomainError(safeFetch("http://internal.example/", {}, { allow: [], resolve }), "forbidden", /internal\.example resolves to a private address/);
    expect(err.message).not.toContain("10.1.2.3");
  });

  it("refuses a hostname when any one of its addresses is refused", async () => {
    const { resolve } = fakeResolver({ "mixed.example": ["93.184.215.14", "::ffff:169.254.169.254"] });
    await expectDomainError(safeFetch("http://mixed.example/", {}, { allow: [], resolve }), "forbidden", /cloud metadata address/);
  });

  it("reports a host that does not resolve as an invalid request", async () => {
    const { resolve } = fakeResolver({});
    await expectDomainError(safeFetch("http://nowhere.example/", {}, { allow: [], resolve }), "invalid_request", /could not resolve host nowhere\.example/);
  });

  it("refuses a loopback address outside the allow-listed CIDR", async () => {
    await expectDomainError(safeFetch(`http://127.0.0.2:${port}/hello`, {}, loopbackOnly), "forbidden", /127\.0\.0\.2 is a loopback/);
  });
});

describe("safeFetch against an allow-listed local server", () => {
  it("returns the status, headers and body of an allow-listed address", async () => {
    const res = await safeFetch(`${origin}/hello`, {}, loopbackOnly);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain");
    expect(await res.text()).toBe("hello world");
  });

  it("sends the method, body and a Content-Length", async () => {
    const res = await safeFetch(`${origin}/echo`, { method: "POST", body: '{"a":1}' }, loopbackOnly);
    expect(await res.json()).toMatchObject({ method: "POST", body: '{"a":1}', contentLength: "7" });
  });

  it("connects an allow-listed hostname to the address it resolved once, keeping the Host header", async () => {
    const { resolve, calls } = fakeResolver({ "media.internal": ["127.0.0.1"] });
    const res = await safeFetch(`http://media.internal:${port}/echo`, {}, { allow: ["media.internal"], resolve });
    expect(await res.json()).toMatchObject({ host: `media.internal:${port}` });
    expect(calls).toEqual(["media.internal"]);
  });

  it("allows a hostname whose resolved address is inside an allow-listed CIDR", async () => {
    const { resolve } = fakeResolver({ "svc.internal": ["127.0.0.1"] });
    const res = await safeFetch(`http://svc.internal:${port}/hello`, {}, { allow: ["127.0.0.0/30"], resolve });
    expect(await res.text()).toBe("hello world");
  });

  it("returns a non-2xx response rather than throwing", async () => {
    const res = await safeFetch(`${origin}/missing`, {}, loopbackOnly);
    expect(res.status).toBe(404);
    expect(await res.text()).toBe("not here");
  });

  it("reports a refused connection as a retryable OutboundNetworkError", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const err = await rejection(safeFetch(`http://127.0.0.1:${closedPort}/`, {}, loopbackOnly));
    expect(err).toBeInstanceOf(OutboundNetworkError);
    expect((err as OutboundNetworkError).cause).toMatchObject({ code: "ECONNREFUSED" });
  });

  it("reports a connection dropped mid-body as an OutboundNetworkError", async () => {
    const res = await safeFetch(`${origin}/drop-mid-body`, {}, loopbackOnly);
    expect(await rejection(res.text())).toBeInstanceOf(OutboundNetworkError);
  });
});

describe("safeFetch redirects", () => {
  const redirect = (to: string, status = 302) => `${origin}/redirect?status=${status}&to=${encodeURIComponent(to)}`;

  it("follows a redirect to an allowed address", async () => {
    const res = await safeFetch(redirect("/hello"), {}, loopbackOnly);
    expect(await res.text()).toBe("hello world");
  });

  it("refuses a redirect hop to a loopback address outside the allow-list", async () => {
    await expectDomainError(safeFetch(redirect(`http://127.0.0.2:${port}/hello`), {}, loopbackOnly), "forbidden", /127\.0\.0\.2 is a loopback address/);
  });

  it("refuses a redirect hop to a hostname resolving to a private address", async () => {
    const { resolve } = fakeResolver({ "internal.example": ["10.0.0.7"] });
    await expectDomainError(
      safeFetch(redirect(`http://internal.example:${port}/hello`), {}, { allow: ["127.0.0.1/32"], resolve }),
      "forbidden",
      /internal\.example resolves to a private address/,
    );
  });

  it("refuses a redirect hop to a non-http scheme", async () => {
    await expectDomainError(safeFetch(redirect("file:///etc/passwd"), {}, loopbackOnly), "forbidden", /scheme file:/);
  });

  it("turns a POST into a body-less GET on 303", async () => {
    const res = await safeFetch(redirect("/echo", 303), { method: "POST", body: "payload" }, loopbackOnly);
    expect(await res.json()).toMatchObject({ method: "GET", body: "" });
  });

  it("keeps method and body on 307", async () => {
    const res = await safeFetch(redirect("/echo", 307), { method: "POST", body: "payload" }, loopbackOnly);
    expect(await res.json()).toMatchObject({ method: "POST", body: "payload" });
  });

  it("drops the Authorization header on a redirect to another origin only", async () => {
    const { resolve } = fakeResolver({ "media.internal": ["127.0.0.1"] });
    const policy = { allow: ["127.0.0.1/32", "media.internal"], resolve };
    const init = { headers: { authorization: "Bearer secret" } };

    const sameOrigin = await safeFetch(redirect("/echo"), init, policy);
    expect(await sameOrigin.json()).toMatchObject({ authorization: "Bearer secret" });
    const crossOrigin = await safeFetch(redirect(`http://media.internal:${port}/echo`), init, policy);
    expect(await crossOrigin.json()).toMatchObject({ authorization: null });
  });

  it("fails after maxRedirects hops, for good: the same URL redirects as far next time", async () => {
    expect((await expectDomainError(safeFetch(`${origin}/loop`, {}, loopbackOnly), "upstream_failed", /more than 5/)).retryable).toBe(false);
    await expectDomainError(
      safeFetch(redirect("/hello"), { maxRedirects: 0 }, loopbackOnly),
      "upstream_failed",
      /answered 302, a redirect to .*hello: redirects are not followed here/,
    );
  });
});

describe("safeFetch limits", () => {
  it("refuses a declared Content-Length over maxBytes before reading the body", async () => {
    await expectDomainError(safeFetch(`${origin}/declared-2000`, { maxBytes: 1999 }, loopbackOnly), "payload_too_large", /exceeds 1999 bytes/);
  });

  it("fails reading an undeclared body once it passes maxBytes", async () => {
    const res = await safeFetch(`${origin}/chunked-2000`, { maxBytes: 1500 }, loopbackOnly);
    await expectDomainError(res.text(), "payload_too_large", /exceeds 1500 bytes/);
  });

  it("accepts a body of exactly maxBytes", async () => {
    const res = await safeFetch(`${origin}/chunked-2000`, { maxBytes: 2000 }, loopbackOnly);
    expect((await res.text()).length).toBe(2000);
  });

  it("times out waiting for response headers", async () => {
    await expectDomainError(safeFetch(`${origin}/hang`, { timeoutMs: 200 }, loopbackOnly), "timeout", /timed out after 200 ms/);
  });

  it("times out while the body stalls, since the deadline covers reading it", async () => {
    const res = await safeFetch(`${origin}/stall-body`, { timeoutMs: 300 }, loopbackOnly);
    expect(res.status).toBe(200);
    await expectDomainError(res.text(), "timeout");
  });

  it("times out a resolver that never answers", async () => {
    const policy = { allow: [], resolve: () => new Promise<ResolvedAddress[]>(() => {}) };
    await expectDomainError(safeFetch("http://slow-dns.example/", { timeoutMs: 100 }, policy), "timeout");
  });

  it("rejects with the caller's abort reason", async () => {
    const controller = new AbortController();
    const pending = safeFetch(`${origin}/hang`, { signal: controller.signal }, loopbackOnly);
    setTimeout(() => controller.abort(new Error("caller gave up")), 50);
    expect(await rejection(pending)).toMatchObject({ message: "caller gave up" });
  });
});

describe("downloadToFile", () => {
  it("streams the body to disk and reports its size and type", async () => {
    const path = join(tempDir, "hello.txt");
    const result = await downloadToFile(`${origin}/hello`, path, { maxBytes: 1000 }, loopbackOnly);
    expect(result).toEqual({ bytes: 11, contentType: "text/plain" });
    expect(await readFile(path, "utf8")).toBe("hello world");
  });

  it("removes the partial file when the body passes maxBytes", async () => {
    const path = join(tempDir, "too-big.bin");
    await expectDomainError(downloadToFile(`${origin}/chunked-2000`, path, { maxBytes: 1500 }, loopbackOnly), "payload_too_large");
    expect(existsSync(path)).toBe(false);
  });

  it("removes the partial file when the body stalls past the timeout", async () => {
    const path = join(tempDir, "stalled.bin");
    await expectDomainError(downloadToFile(`${origin}/stall-body`, path, { maxBytes: 1000, timeoutMs: 200 }, loopbackOnly), "timeout");
    expect(existsSync(path)).toBe(false);
  });

  it("fails on a non-2xx status without creating a file, for good on a 4xx, worth another try on a 5xx", async () => {
    const path = join(tempDir, "missing.bin");
    const err = await expectDomainError(downloadToFile(`${origin}/missing`, path, { maxBytes: 1000 }, loopbackOnly), "upstream_failed", /HTTP 404/);
    expect(err.details).toEqual({ status: 404 });
    expect(err.retryable).toBe(false);
    expect(existsSync(path)).toBe(false);
    const overloaded = await expectDomainError(downloadToFile(`${origin}/overloaded`, path, { maxBytes: 1000 }, loopbackOnly), "upstream_failed", /HTTP 503/);
    expect(overloaded.retryable).toBe(true);
  });

  it("reports a host that refuses the connection, or breaks it off mid-body, as upstream_failed worth another try", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const path = join(tempDir, "refused-connection.bin");
    const refused = await expectDomainError(
      downloadToFile(`http://127.0.0.1:${closedPort}/x.mp3`, path, { maxBytes: 1000 }, loopbackOnly),
      "upstream_failed",
      /127\.0\.0\.1.*ECONNREFUSED/,
    );
    expect(refused.retryable).toBe(true);
    const broken = await expectDomainError(downloadToFile(`${origin}/drop-mid-body`, path, { maxBytes: 1000 }, loopbackOnly), "upstream_failed", /broke/);
    expect(broken.retryable).toBe(true);
    expect(existsSync(path)).toBe(false);
  });

  it("refuses a disallowed URL without creating a file", async () => {
    const path = join(tempDir, "refused.bin");
    await expectDomainError(downloadToFile("http://169.254.169.254/", path, { maxBytes: 1000 }, loopbackOnly), "forbidden");
    expect(existsSync(path)).toBe(false);
  });
});
