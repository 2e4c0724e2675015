// The DiT's WGSL tiled matrix product against a float64 product, on SwiftShader (CPU Vulkan) through
// Dawn, or on the machine's GPU with TILEC_WEBGPU_GPU=1. Skips with the reason where neither exists.
import { afterAll, describe, expect, it } from "vitest";
import { WgslMatmul } from "../../runtime/dit/webgpu/matmul.ts";
import { linear } from "../../runtime/dit/cpu.ts";
import { randomArray, relativeError } from "../../runtime/reference.ts";
import { openNodeDevice, openSwiftShader } from "../../runtime/webgpu/node.ts";

const onGpu = process.env.TILEC_WEBGPU_GPU === "1";
const ss = onGpu
  ? { device: await openNodeDevice({ backend: "vulkan", powerPreference: "high-performance" }), reason: "" }
  : await openSwiftShader();
const dev = ss.device;
afterAll(() => dev?.destroy());

describe.skipIf(!dev)(`WGSL matmul${dev ? "" : ` (skipped: ${ss.reason})`}`, () => {
  it.each([
    [64, 64, 16, true],
    [37, 29, 45, false],
    [130, 70, 100, true],
    [1, 96, 32, true],
  ] as const)(
    "C[%i, %i] = A·Bᵀ over K = %i (bias %s) equals the float64 product",
    async (m, n, k, withBias) => {
      const mm = await WgslMatmul.create(dev!);
      const a = randomArray(m * k, m);
      const b = randomArray(n * k, n + 1);
      const bias = randomArray(n, k + 2);
      const ta = dev!.upload(a, "f32");
      const tb = dev!.upload(b, "f32");
      const tbias = dev!.upload(bias, "f32");
      const tc = dev!.empty(m * n, "f32"); // NaN: unwritten outputs fail the comparison
      try {
        await dev!.scoped("matmul", () => mm.run(ta, tb, tc, m, n, k, withBias ? tbias : undefined));
        const got = await dev!.download(tc);
        const want = linear(a, m, k, b, withBias ? bias : undefined, n);
        expect(relativeError(got, want)).toBeLessThan(1e-5);
      } finally {
        for (const t of [ta, tb, tbias, tc]) t.buffer.destroy();
        mm.destroy();
      }
    },
  );
});
