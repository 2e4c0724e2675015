// The DiT's kernel launchers (runtime/dit/kernels.ts) against the kernels' C signatures in
// kernels/dit.cu, without a GPU: every launcher passes as many arguments as its kernel takes, each
// of the C parameter's kind (pointer, int, u64, float). A mismatch would launch with garbage.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { KernelArg } from "../../runtime/cuda/device.ts";
import { DIT_KERNEL_SOURCE_PATH, DitKernels } from "../../runtime/dit/kernels.ts";

type Kind = "ptr" | "i32" | "u64" | "f32";

/** Parameter kinds of every `extern "C" __global__` kernel in dit.cu. */
function signatures(): Map<string, Kind[]> {
  const src = readFileSync(DIT_KERNEL_SOURCE_PATH, "utf8");
  const out = new Map<string, Kind[]>();
  for (const m of src.matchAll(/extern "C" __global__ void (\w+)\(([^)]*)\)/g)) {
    const kinds = m[2]!.split(",").map((p): Kind => {
      const t = p.trim();
      if (t.includes("*")) return "ptr";
      if (/^(const )?int\b/.test(t)) return "i32";
      if (/^(const )?u64\b/.test(t)) return "u64";
      if (/^(const )?float\b/.test(t)) return "f32";
      throw new Error(`unknown parameter type: ${t}`);
    });
    out.set(m[1]!, kinds);
  }
  return out;
}

function kindOf(a: KernelArg): Kind {
  const key = Object.keys(a as object)[0];
  if (key === "ptr" || key === "i32" || key === "u64" || key === "f32") return key;
  throw new Error(`unexpected argument ${JSON.stringify(a)}`);
}

describe("DiT kernel launchers", () => {
  const sigs = signatures();
  const launched: { name: string; args: readonly KernelArg[] }[] = [];
  const fakeModule = {
    getKernel: (name: string) => ({
      launch: (_: unknown, args: readonly KernelArg[]) => launched.push({ name, args }),
    }),
    unload: () => {},
  };
  // The constructor is private (load() compiles with NVRTC); the fake module only records launches.
  const k = new (DitKernels as unknown as new (m: unknown, s: null) => DitKernels)(fakeModule, null);
  const buf = { ptrAt: () => 4096n, length: 64, dtype: "fp32" } as never;
  const d = { B: 1, C: 4, T: 2, H: 4, W: 4, p: 2 };

  it("pass each kernel's parameters in number and kind", () => {
    k.patchify(buf, buf, d);
    k.unpatchify(buf, buf, buf, d);
    k.latentRows(buf, buf, { ...d, start: 1, count: 3 });
    k.latentRows(buf, buf, { ...d, start: 1, count: 3 }, true);
    k.projToRows(buf, buf, buf, 3, 4, 2);
    k.normModulate(buf, buf, buf, buf, {
      rows: 2,
      C: 8,
      tokens: 2,
      tembStride: 48,
      chunkStride: 8,
      shiftIdx: 0,
      scaleIdx: 1,
      eps: 1e-6,
    });
    k.gateResidual(buf, buf, buf, buf, buf, { rows: 2, C: 8, tokens: 2, tembStride: 48, gateIdx: 2 });
    k.biasActBf16(buf, buf, 2, 8, 1);
    k.biasActF32(buf, buf, buf, null, 2, 8, 2);
    k.qkvBiasRope(buf, buf, buf, buf, {
      M: 4,
      tokens: 2,
      start: 5,
      heads: 2,
      D: 6,
      T: 2,
      H: 2,
      W: 2,
      scales: [1, 1, 1],
      base: 10000,
    });
    k.softmaxRows(buf, buf, 4, 8, 5);
    k.castBf16(buf, buf, 8);
    k.lincomb(buf, 1, buf, 2, buf, 3, buf, 8);
    k.randomUniform(buf, 1, 0.5);
    k.randomNormal(buf, 1);
    const names = new Set(launched.map((l) => l.name));
    // Every kernel of dit.cu has a launcher, and was exercised above.
    expect([...names].sort()).toEqual([...sigs.keys()].sort());
    for (const { name, args } of launched) expect(args.map(kindOf), name).toEqual(sigs.get(name));
  });
});
