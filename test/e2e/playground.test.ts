// End to end: builds the playground (examples/playground) with Vite, serves it on 127.0.0.1, drives
// Debian's Chromium headless with playwright-core on SwiftShader's WebGPU, and checks diagnostics as
// you type, the tile map's block counts, and a kernel run against the float64 reference.
// Skips with the reason where /usr/bin/chromium is missing or WebGPU is unavailable in it.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { build } from "vite";
import { afterAll, describe, expect, it } from "vitest";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";

/** Debian's Chromium; TILEC_CHROMIUM points elsewhere. */
const CHROMIUM = process.env.TILEC_CHROMIUM ?? "/usr/bin/chromium";
const PLAYGROUND = fileURLToPath(new URL("../../examples/playground/", import.meta.url));
/** SwiftShader's WebGPU in headless Chromium (Debian 12, Chromium 156). */
const FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-angle=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--disable-gpu-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

const LAYOUT = "layout small { video 4 x 8 x 16  heads 2  head_dim 64  dtype fp32 }";
const GOOD = `${LAYOUT}
kernel band { layout small  mask temporal_band(1) and abs(q.row - k.row) <= 2  block 64 x 64  targets wgsl }
kernel tile { layout small  mask attention_tile(2)  block 48 x 48  targets wgsl }
`;
/** Line 3 misses the block's second size. */
const BROKEN = GOOD.replace("block 48 x 48", "block 48 x");

const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

function serve(root: string): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x").pathname;
    const file = path.join(root, path.normalize(url.endsWith("/") ? `${url}index.html` : url));
    readFile(file).then(
      (body) =>
        res
          .writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" })
          .end(body),
      () => res.writeHead(404).end(),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

interface Env {
  dir: string;
  server?: Server;
  browser?: Browser;
  page?: Page;
  url?: string;
  reason?: string;
}

/** Builds, serves and opens the page; `reason` says why the tests must skip. */
async function setUp(): Promise<Env> {
  const env: Env = { dir: await mkdtemp(path.join(tmpdir(), "tilec-e2e-")) };
  if (!existsSync(CHROMIUM)) return { ...env, reason: `${CHROMIUM} is missing (apt-get install chromium)` };
  try {
    await withTimeout(
      build({
        configFile: path.join(PLAYGROUND, "vite.config.ts"),
        logLevel: "warn",
        build: { outDir: path.join(env.dir, "site"), emptyOutDir: true },
      }),
      60_000,
      "building the playground",
    );
    env.server = await serve(path.join(env.dir, "site"));
    env.url = `http://127.0.0.1:${(env.server.address() as AddressInfo).port}/`;
    env.browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, timeout: 30_000 });
    env.page = await env.browser.newPage({ viewport: { width: 1400, height: 1000 } });
    env.page.setDefaultTimeout(15_000);
    await env.page.goto(env.url, { timeout: 15_000 });
    const adapter = await withTimeout(
      env.page.evaluate(async () => {
        const gpu = (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
        if (!gpu) return "navigator.gpu is missing";
        return (await gpu.requestAdapter()) ? "" : "navigator.gpu.requestAdapter() gave no adapter";
      }),
      20_000,
      "requesting a WebGPU adapter",
    );
    if (adapter) env.reason = `WebGPU is unavailable in ${CHROMIUM}: ${adapter}`;
  } catch (e) {
    env.reason = `could not start the playground in Chromium: ${(e as Error).message.split("\n")[0]}`;
  }
  return env;
}

/** Closes Chromium and the server and removes the temporary folder; never hangs. */
async function tearDown(env: Env): Promise<void> {
  await withTimeout(env.browser?.close() ?? Promise.resolve(), 10_000, "closing Chromium").catch(() => {});
  env.browser = undefined;
  const server = env.server;
  env.server = undefined;
  if (server)
    await withTimeout(
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
      5_000,
      "closing the server",
    ).catch(() => {});
  await rm(env.dir, { recursive: true, force: true });
}

const env = await setUp();
// Skipping: nothing of it is needed any more.
if (env.reason) await tearDown(env);

afterAll(() => tearDown(env));

describe.skipIf(!!env.reason)(
  `playground in headless Chromium on WebGPU${env.reason ? ` (skipped: ${env.reason})` : ""}`,
  () => {
    const page = () => env.page!;

    it("shows a syntax error with its line as you type, and clears it once fixed", async () => {
      await page().fill("#spec", BROKEN);
      const item = page().locator("#diagnostics li.error").first();
      await item.waitFor({ timeout: 10_000 });
      expect(await item.getAttribute("data-line")).toBe("3");
      expect(await item.locator(".pos").textContent()).toMatch(/^3:\d+$/);
      await page().locator('#gutter .mark.error[data-line="3"]').waitFor({ timeout: 5_000 });
      expect(await page().textContent("#summary")).toMatch(/^[1-9]\d* error/);
      expect(await page().isDisabled("#run")).toBe(true);

      await page().fill("#spec", GOOD);
      await page().waitForFunction(() => document.body.dataset.state === "ok", null, { timeout: 10_000 });
      expect(await page().textContent("#summary")).toBe("no problems");
      expect(await page().locator("#diagnostics li").count()).toBe(0);
      expect(await page().locator("#gutter .mark").count()).toBe(0);
    });

    it("draws each kernel's tile map with the compiler's block counts", async () => {
      const spec = compileSpec(GOOD).spec!;
      for (const name of ["tile", "band"]) {
        const { stats } = planKernel(spec.kernels.get(name)!);
        await page().selectOption("#kernel", name);
        await page().waitForSelector(`#tilemap[data-kernel="${name}"] svg`, { timeout: 5_000 });
        const map = page().locator("#tilemap");
        expect(await map.getAttribute("data-full")).toBe(String(stats.blocks.full));
        expect(await map.getAttribute("data-partial")).toBe(String(stats.blocks.partial));
        expect(await map.getAttribute("data-empty")).toBe(String(stats.blocks.empty));
        const svg = (await map.innerHTML()) ?? "";
        expect(svg).toContain(`full ${stats.blocks.full}`);
        expect(svg).toContain(`partial ${stats.blocks.partial}`);
        expect(await page().textContent("#stats")).toContain(`${(100 * stats.density).toFixed(1)} %`);
      }
    });

    it("runs the selected kernel on WebGPU within 1e-4 of the float64 reference and times it", async () => {
      // band: every computed block is partial, so the element mask is exercised on every block.
      await page().selectOption("#kernel", "band");
      await page().click("#run");
      await page().waitForSelector(
        '#result:is([data-state="ok"], [data-state="mismatch"], [data-state="error"])',
        {
          timeout: 60_000,
        },
      );
      const result = page().locator("#result");
      const text = (await result.textContent()) ?? "";
      expect(await result.getAttribute("data-state"), text).toBe("ok");
      expect(Number(await result.getAttribute("data-rel-error"))).toBeLessThan(1e-4);
      expect(Number(await result.getAttribute("data-ms"))).toBeGreaterThan(0);
      expect(text).toMatch(/Time: \d+\.\d+ ms/);
    }, 80_000);

    it("saves a screenshot of the tile map", async () => {
      // Kept after the run (overwritten by the next one) for a person to look at.
      const file = path.join(tmpdir(), "tilec-e2e-tilemap.png");
      await page().locator("#tilemap svg").screenshot({ path: file, timeout: 10_000 });
      const png = await readFile(file);
      expect((await stat(file)).size).toBeGreaterThan(1000);
      expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    });
  },
);
