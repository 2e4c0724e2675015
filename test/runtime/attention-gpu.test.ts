// Generated CUDA kernels against the float64 reference, on a real GPU. Skips (with the reason) where
// there is none. Every case: fresh random inputs, output and LSE poisoned before the launch.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { KernelSpec } from "../../compiler/check.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { seqLen } from "../../compiler/layout.ts";
import type { CudaArch } from "../../backends/cuda/target.ts";
import { compile } from "../../runtime/attention.ts";
import { available, CudaDevice } from "../../runtime/cuda/index.ts";
import { checkKernel, jumpingKeys, sampleRows } from "../support/attentionCheck.ts";
import { Rng, randomMask } from "../support/random.ts";

const cuda = available();
// On an sm_90 device compile() picks the wgmma template where it applies; the sm_80 template is
// checked there too, by asking for sm_80 explicitly.
const hopper = cuda.ok && CudaDevice.open().arch === "sm_90";
const PATHS: { name: string; arch?: CudaArch }[] = hopper
  ? [{ name: "default (sm_90a wgmma template where it applies)" }, { name: "sm_80 template", arch: "sm_80" }]
  : [{ name: "default" }];
const TOL = { bf16: 1e-2, fp16: 1e-2, fp32: 1e-4 } as const;

function kernelOf(text: string, name = "k"): KernelSpec {
  const r = compileSpec(text, "gpu-test.tile");
  if (!r.spec)
    throw new Error(r.diagnostics.map((d) => `${d.span.line}:${d.span.col} ${d.message}`).join("\n"));
  return r.spec.kernels.get(name)!;
}

async function expectCorrect(
  kernel: KernelSpec,
  seed: number,
  opts: {
    rows?: number[];
    layout?: "bshd" | "bhsd";
    arch?: CudaArch;
    keyGain?: (token: number) => number;
  } = {},
) {
  const attn = await compile(
    {
      file: "t",
      layouts: new Map(),
      masks: new Map(),
      models: new Map(),
      kernels: new Map([[kernel.name, kernel]]),
    },
    { target: "cuda", arch: opts.arch },
  );
  try {
    const r = checkKernel(attn, kernel, {
      seed,
      rows: opts.rows,
      layout: opts.layout,
      keyGain: opts.keyGain,
    });
    const label = `${kernel.name}: ${kernel.maskSource} (${kernel.layout.dtype}, d=${kernel.layout.headDim}, ${kernel.blockQ}x${kernel.blockKv}, ${opts.layout ?? "bshd"}, template ${attn.compiled.template})`;
    expect(r.unwritten, `${label}: unwritten outputs`).toBe(0);
    expect(r.nonFinite, label).toBe(0);
    expect(r.maskedRowsOk, `${label}: fully masked rows must give 0 and lse -inf`).toBe(true);
    expect(r.relError, label).toBeLessThan(TOL[kernel.layout.dtype]);
    expect(r.lseError, label).toBeLessThan(kernel.layout.dtype === "fp32" ? 1e-4 : 2e-2);
    return r;
  } finally {
    attn.free();
  }
}

const small = (dtype: string, d: number, extra = "") =>
  `layout L { video 3 x 7 x 11 text 17 after batch 2 heads 4 kv_heads 2 head_dim ${d} dtype ${dtype} ${extra} }`;

describe.skipIf(!cuda.ok).each(PATHS)(
  `generated CUDA kernels on the GPU${cuda.ok ? "" : ` (skipped: ${cuda.reason})`}: $name`,
  ({ arch }) => {
    it.each([
      ["bf16", 64],
      ["bf16", 96],
      ["bf16", 128],
      ["fp16", 64],
      ["fp16", 96],
      ["fp32", 64],
      ["fp32", 96],
    ] as const)("%s head_dim %i, odd length 248, GQA, random masks", async (dtype, d) => {
      const r = new Rng(d * 7 + dtype.length);
      for (let i = 0; i < 3; i++) {
        const mask = randomMask(r);
        // fp32 tiles are 4-byte: 128 x 128 would exceed shared memory (and is rejected with that reason).
        const block = r.pick(
          dtype === "fp32"
            ? ["64 x 64", "64 x 32", "128 x 32"]
            : ["64 x 64", "128 x 64", "64 x 128", "128 x 128", "64 x 32"],
        );
        const k = kernelOf(`${small(dtype, d)}\nkernel k { layout L mask ${mask} block ${block} }`);
        await expectCorrect(k, 100 + i, { arch });
      }
    });

    // The wgmma template exponentiates against the running max without computing the tile's row
    // maxima, and a warp recomputes its rows of S (mma.sync from shared memory) when a row's partial
    // sum passes 2^14; keys growing 12x and then 200x by thirds of the sequence make every row's max
    // jump by ~16 and then ~270 binary orders from one key tile to the next, so those tiles take
    // that path (P would overflow to inf otherwise). Head dims 64 and 128 read 128-byte swizzled
    // tiles, 96 64-byte ones.
    it("scores that jump between key tiles by orders of magnitude", async () => {
      for (const [dtype, d] of [
        ["bf16", 64],
        ["bf16", 96],
        ["bf16", 128],
        ["fp16", 96],
      ] as const) {
        const k = kernelOf(
          `layout L { video 4 x 9 x 13 text 17 after heads 2 head_dim ${d} dtype ${dtype} }\nkernel k { layout L mask full block 128 x 128 }`,
        );
        await expectCorrect(k, 11, { arch, keyGain: jumpingKeys(seqLen(k.layout)) });
      }
    });

    it("[batch, heads, seq, dim] strides", async () => {
      await expectCorrect(
        kernelOf(`${small("bf16", 64)}\nkernel k { layout L mask causal_frames or q.text block 64 x 64 }`),
        5,
        { layout: "bhsd", arch },
      );
    });

    it("fully masked rows write 0 and lse -inf", async () => {
      const r = await expectCorrect(
        kernelOf(
          `${small("bf16", 64)}\nkernel k { layout L mask q.video and q.frame != 1 and k.video block 64 x 64 }`,
        ),
        6,
        { arch },
      );
      expect(r.maskedRowsOk).toBe(true);
    });

    it("MQA (one kv head) and a single-token sequence", async () => {
      await expectCorrect(
        kernelOf(
          `layout L { video 5 x 9 x 13 heads 3 kv_heads 1 head_dim 64 dtype fp16 }\nkernel k { layout L mask temporal_band(1) block 128 x 64 }`,
        ),
        7,
        { arch },
      );
      await expectCorrect(
        kernelOf(
          `layout L { video 1 x 1 x 1 heads 2 head_dim 64 }\nkernel k { layout L mask full block 64 x 64 }`,
        ),
        8,
        { arch },
      );
    });

    it("1,000 launches and 20 compile/free cycles leak no device memory", async () => {
      const k = kernelOf(`${small("bf16", 64)}\nkernel k { layout L mask attention_tile(1) block 64 x 64 }`);
      const dev = CudaDevice.open();
      const spec = {
        file: "t",
        layouts: new Map(),
        masks: new Map(),
        models: new Map(),
        kernels: new Map([[k.name, k]]),
      };
      const warm = await compile(spec, { target: "cuda", arch });
      warm.free();
      dev.synchronize();
      const before = dev.memInfo().free;
      const n = 2 * 248 * 4 * 64;
      const [q, kk, v, o] = [0, 1, 2, 3].map(() => dev.allocElements("bf16", n).zero());
      for (let c = 0; c < 20; c++) {
        const attn = await compile(spec, { target: "cuda", arch });
        for (let i = 0; i < 50; i++) attn.run(q!, kk!, v!, o!);
        attn.free();
      }
      dev.synchronize();
      for (const b of [q, kk, v, o]) b!.free();
      expect(dev.memInfo().free).toBe(before);
    });

    const examples = [
      "efficient-vdit/osp29.tile",
      "efficient-vdit/osp93.tile",
      "cogvideox/cogvideox5b.tile",
      "sta/sta.tile",
      "causal/causal_frames.tile",
    ];
    for (const file of examples) {
      it(`every kernel of examples/${file} (full length, 2 heads, sampled rows)`, async () => {
        const spec = compileSpec(readFileSync(`examples/${file}`, "utf8"), file).spec!;
        for (const k of spec.kernels.values()) {
          // Full sequence and the real plan; heads reduced so the float64 reference stays quick.
          const kvHeads = k.layout.kvHeads === k.layout.heads ? 2 : 1;
          const reduced: KernelSpec = { ...k, layout: { ...k.layout, heads: 2, kvHeads, batch: 1 } };
          await expectCorrect(reduced, 11, { rows: sampleRows(seqLen(k.layout), k.blockQ, 40, 3), arch });
        }
      });
    }
  },
);
