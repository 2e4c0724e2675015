// The generated backward kernels against the float64 reference, on a real GPU. Skips (with the
// reason) where there is none. Every case: fresh random inputs, dq/dk/dv poisoned before the launch,
// bf16/fp16 relative error of each gradient < 2e-2, fully masked rows give zero gradients (no NaN).
import { describe, expect, it } from "vitest";
import type { KernelSpec } from "../../compiler/check.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import type { CudaArch } from "../../backends/cuda/target.ts";
import { compile } from "../../runtime/attention.ts";
import { available, CudaDevice } from "../../runtime/cuda/index.ts";
import { checkBackward } from "../support/backwardCheck.ts";
import { Rng, randomMask } from "../support/random.ts";

const cuda = available();
// On an sm_90 device the wgmma dK/dV kernel is the default for head dims 64/96/128; the mma.sync one
// is checked there too, by asking for sm_80.
const hopper = cuda.ok && CudaDevice.open().arch === "sm_90";
const PATHS: { name: string; arch?: CudaArch }[] = hopper
  ? [{ name: "default (sm_90a wgmma dK/dV)" }, { name: "sm_80 template", arch: "sm_80" }]
  : [{ name: "default" }];
const TOL = 2e-2;

function kernelOf(text: string, name = "k"): KernelSpec {
  const r = compileSpec(text, "bwd-gpu-test.tile");
  if (!r.spec)
    throw new Error(r.diagnostics.map((d) => `${d.span.line}:${d.span.col} ${d.message}`).join("\n"));
  return r.spec.kernels.get(name)!;
}

async function expectGradients(
  kernel: KernelSpec,
  seed: number,
  opts: { layout?: "bshd" | "bhsd"; arch?: CudaArch; deterministic?: boolean; runs?: number } = {},
) {
  const attn = await compile(
    {
      file: "t",
      layouts: new Map(),
      masks: new Map(),
      models: new Map(),
      kernels: new Map([[kernel.name, kernel]]),
    },
    { target: "cuda", arch: opts.arch, backward: true, tuned: false },
  );
  try {
    const results = checkBackward(attn, kernel, { seed, ...opts });
    const label = `${kernel.maskSource} (${kernel.layout.dtype}, d=${kernel.layout.headDim}, heads ${kernel.layout.heads}/${kernel.layout.kvHeads}, ${opts.layout ?? "bshd"}, ${opts.deterministic ? "deterministic" : "atomic dQ"}, backward ${attn.backwardCompiled!.source.template})`;
    for (const r of results) {
      expect(r.unwritten, `${label}: unwritten gradients`).toBe(0);
      expect(r.nonFinite, label).toBe(0);
      expect(r.maskedRowsZero, `${label}: fully masked rows must get zero dq`).toBe(true);
      expect(r.dq, `${label}: dq`).toBeLessThan(TOL);
      expect(r.dk, `${label}: dk`).toBeLessThan(TOL);
      expect(r.dv, `${label}: dv`).toBeLessThan(TOL);
    }
    return results;
  } finally {
    attn.free();
  }
}

const small = (dtype: string, d: number, heads = 4, kvHeads = 2) =>
  `layout L { video 3 x 7 x 11 text 17 after batch 2 heads ${heads} kv_heads ${kvHeads} head_dim ${d} dtype ${dtype} }`;

describe.skipIf(!cuda.ok).each(PATHS)(
  `generated CUDA backward kernels on the GPU${cuda.ok ? "" : ` (skipped: ${cuda.reason})`}: $name`,
  ({ arch }) => {
    it.each([
      ["bf16", 64],
      ["bf16", 96],
      ["bf16", 128],
      ["fp16", 64],
      ["fp16", 96],
      ["fp16", 128],
    ] as const)("%s head_dim %i, odd length 248, GQA, random masks, both dQ variants", async (dtype, d) => {
      const r = new Rng(d * 13 + dtype.length);
      for (let i = 0; i < 2; i++) {
        const mask = randomMask(r);
        const k = kernelOf(`${small(dtype, d)}\nkernel k { layout L mask ${mask} block 128 x 128 }`);
        await expectGradients(k, 200 + i, { arch, deterministic: i === 1 });
      }
    });

    it("fully masked rows and columns (no NaN, zero gradients), MQA, [batch, heads, seq, dim] strides", async () => {
      // Rows of the first frame see nothing; the text tokens are never attended.
      const k = kernelOf(
        `${small("bf16", 64, 4, 1)}\nkernel k { layout L mask q.video and q.frame != 0 and k.video block 64 x 64 }`,
      );
      const [r] = await expectGradients(k, 7, { arch, layout: "bhsd" });
      expect(r!.maskedRows).toBeGreaterThan(0);
      await expectGradients(k, 8, { arch, deterministic: true });
    });

    it("Attention Tile masks (partial blocks decided by sub-tile classes) and a sliding window (element masks)", async () => {
      for (const mask of [
        "attention_tile(2) or q.text or k.text",
        "abs(q.frame - k.frame) <= 1 and abs(q.row - k.row) <= 2",
      ]) {
        const k = kernelOf(`${small("bf16", 96, 4, 4)}\nkernel k { layout L mask ${mask} block 128 x 128 }`);
        await expectGradients(k, 31, { arch });
      }
    });

    it("deterministic: two runs give bit-identical gradients", async () => {
      const k = kernelOf(
        `${small("bf16", 96)}\nkernel k { layout L mask causal_frames or q.text block 128 x 128 }`,
      );
      const [a, b] = await expectGradients(k, 41, { arch, deterministic: true, runs: 2 });
      for (let i = 0; i < 3; i++) expect(Buffer.compare(a!.bits[i]!, b!.bits[i]!), `gradient ${i}`).toBe(0);
    });
  },
);
