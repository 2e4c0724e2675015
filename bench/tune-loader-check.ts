// The Node half of the package loader check (bench/tune-bench.sh): for osp29 kernels, random bf16
// q, k, v [1, 28800, 24, 96] are written as raw .bin files beside the outputs of the runtime's
// compile() (NVRTC; the cached tuned winner when there is one) and of the package's TypeScript
// loader (the package's cubin); bench/tune-loader-check.py then runs the Python loader on the same
// files and compares.
//   npx tsx bench/tune-loader-check.ts PKG_DIR IO_DIR [kernel ...]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { compileSpec } from "../compiler/pipeline.ts";
import { compile } from "../runtime/attention.ts";
import { CudaDevice } from "../runtime/cuda/device.ts";
import { randomArray } from "../runtime/reference.ts";

const [pkgDir, ioDir, ...names] = process.argv.slice(2);
if (!pkgDir || !ioDir) throw new Error("usage: tune-loader-check.ts PKG_DIR IO_DIR [kernel ...]");
const kernels = names.length ? names : ["full", "tile_2_6"];
mkdirSync(ioDir, { recursive: true });
const file = "examples/efficient-vdit/osp29.tile";
const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;
const pkg = (await import(resolve(pkgDir, "index.ts"))) as {
  attention: (n: string) => { run: (...a: unknown[]) => void; cuda: { config?: unknown } };
};
const manifest = JSON.parse(readFileSync(join(pkgDir, "manifest.json"), "utf8"));
const dev = CudaDevice.open();
const first = spec.kernels.get(kernels[0]!)!.layout;
const n = first.frames * first.height * first.width;
const elems = n * first.heads * first.headDim;
const inputs = [1, 2, 3].map((seed) => dev.fromHost(Float32Array.from(randomArray(elems, seed)), "bf16"));
inputs.forEach((b, i) => writeFileSync(join(ioDir, `${"qkv"[i]}.bin`), b.downloadBytes()));
const rows: Record<string, unknown>[] = [];
for (const name of kernels) {
  const attn = await compile(spec, { target: "cuda", kernel: name });
  const outRt = dev.allocElements("bf16", elems).poison();
  const outPkg = dev.allocElements("bf16", elems).poison();
  attn.run(inputs[0]!, inputs[1]!, inputs[2]!, outRt);
  pkg.attention(name).run(inputs[0]!, inputs[1]!, inputs[2]!, outPkg);
  dev.synchronize();
  const a = outRt.downloadBytes();
  const b = outPkg.downloadBytes();
  writeFileSync(join(ioDir, `${name}.runtime.bin`), a);
  writeFileSync(join(ioDir, `${name}.package.bin`), b);
  const fa = outRt.download() as Float32Array;
  const fb = outPkg.download() as Float32Array;
  let maxDiff = 0;
  let same = 0;
  for (let i = 0; i < fa.length; i++) {
    const d = Math.abs(fa[i]! - fb[i]!);
    if (!(d <= maxDiff)) maxDiff = d; // NaN sticks
    if (fa[i] === fb[i]) same++;
  }
  const row = {
    kernel: name,
    runtimeConfig: attn.ir.config,
    runtimeBlockQ: attn.ir.blockQ,
    packageConfig: manifest.kernels[name].cuda.config,
    packageBlockQ: manifest.kernels[name].cuda.blockQ,
    runtimeVsPackage: { maxAbsDiff: maxDiff, identicalFraction: same / fa.length },
  };
  rows.push(row);
  console.log(JSON.stringify(row));
  for (const x of [outRt, outPkg]) x.free();
  attn.free();
}
writeFileSync(
  join(ioDir, "meta.json"),
  JSON.stringify(
    { device: dev.info.name, shape: [1, n, first.heads, first.headDim], dtype: "bf16", rows },
    null,
    2,
  ),
);
for (const x of inputs) x.free();
