// `tilec tune` and `tilec build` from the command line: usage errors, --json, the cache, stable builds.
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { mainAsync } from "../../cli/main.ts";
import { available } from "../../runtime/cuda/index.ts";
import { findSwiftShader } from "../../runtime/webgpu/node.ts";

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((s) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, "write").mockImplementation((s) => ((err += String(s)), true));
  try {
    return { code: await mainAsync(args), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

const dir = mkdtempSync(join(tmpdir(), "tilec-cli-tune-"));
const spec = join(dir, "sw.tile");
writeFileSync(
  spec,
  "layout L { video 2 x 4 x 8 batch 1 heads 2 head_dim 16 dtype fp32 }\nkernel k { layout L mask attention_tile(1) block 64 x 64 targets cuda, wgsl }\n",
);
const saved = process.env.TILEC_CACHE_DIR;
afterEach(() => {
  if (saved === undefined) delete process.env.TILEC_CACHE_DIR;
  else process.env.TILEC_CACHE_DIR = saved;
});

describe("tilec tune / build CLI", () => {
  it("rejects bad numbers and unknown kernels with exit 2", async () => {
    const bad = await run(["tune", spec, "--top", "0"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--top takes a positive integer, not '0'/);
    const unknown = await run(["tune", spec, "--kernel", "nope"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/has no kernel 'nope'; its kernels are: k/);
    expect((await run(["tune", spec, "--target", "metal"])).code).toBe(2);
  });

  it.skipIf(available().ok)("says plainly when there is no CUDA device", async () => {
    const r = await run(["tune", spec, "--target", "cuda"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^tilec: cannot tune for CUDA on this machine: /);
  });

  it.skipIf(!findSwiftShader())(
    "tune --json on SwiftShader stores winners, --no-save does not; emit then uses them",
    async () => {
      process.env.TILEC_CACHE_DIR = join(dir, "cache-a");
      // The smallest WGSL tuning run: one candidate beside the default, one timed repetition.
      const quickTune = [
        "tune",
        spec,
        "--target",
        "wgsl",
        "--swiftshader",
        "--top",
        "1",
        "--reps",
        "1",
        "--no-progress",
      ];
      const r = await run([...quickTune, "--json", "--no-save"]);
      expect(r.code, r.err).toBe(0);
      expect(JSON.parse(r.out).kernels[0].winner.status).toBe("ok");
      expect(existsSync(join(dir, "cache-a", "tune.json"))).toBe(false);
      process.env.TILEC_CACHE_DIR = join(dir, "cache-b");
      const t = await run(quickTune);
      expect(t.code, t.err).toBe(0);
      expect(t.out).toMatch(/winners stored in .*cache-b\/tune\.json/);
      expect(t.out).toMatch(/pruned \d+ of \d+ before compiling/);
      const e = await run(["emit", spec, "--target", "wgsl", "-o", join(dir, "emit")]);
      expect(e.code).toBe(0);
      expect(e.out).toMatch(/^k: .*tuned on google swiftshader/m);
      const plain = await run(["emit", spec, "--target", "wgsl", "--no-tuned", "-o", join(dir, "emit2")]);
      expect(plain.out).not.toMatch(/tuned/);
    },
    120_000,
  );

  it("build writes a package, then nothing on an unchanged rerun", async () => {
    const out = join(dir, "pkg");
    const first = await run(["build", spec, "-o", out, "--no-nvcc", "--no-tuned"]);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toMatch(/: \d+ written, 0 unchanged, 0 removed/);
    const again = await run(["build", spec, "-o", out, "--no-nvcc", "--no-tuned"]);
    expect(again.out).toMatch(/: 0 written, \d+ unchanged, 0 removed/);
    expect((await run(["build", spec])).code).toBe(2); // -o is required
  });
});
