// The search's GPU evaluator: every candidate through its compiled tilec CUDA kernel, dense attention
// through the spec's dense kernel (or one synthesized from the candidates' layout and block size), and the
// output errors reduced on the device. Loaded lazily so the CPU search never touches the CUDA addon.
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import { sha256Hex } from "../compiler/hash.ts";
import { TRUE } from "../compiler/maskExpr.ts";
import { compile, type CudaAttention } from "../runtime/attention.ts";
import { CudaDevice, DeviceBuffer } from "../runtime/cuda/device.ts";
import { CudaSquaredError, type SquaredError } from "./cudaError.ts";
import { isDense, SearchError, type Candidate, type LayerQkv } from "./search.ts";

type Dtype = KernelSpec["layout"]["dtype"];

/** A dense kernel with the candidates' layout and blocks, for specs that declare none. */
function denseKernel(base: KernelSpec): KernelSpec {
  return {
    ...base,
    name: "tilec_search_dense",
    mask: TRUE,
    maskSource: "full",
    hash: sha256Hex(`dense-reference:${base.hash}`),
  };
}

export async function cudaEvaluator(spec: CheckedSpec, candidates: readonly Candidate[], cacheDir?: string) {
  const device = CudaDevice.open();
  const kernels: CudaAttention[] = [];
  const dispose = () => {
    for (const k of kernels) k.free();
  };
  let dense: CudaAttention;
  let errors: CudaSquaredError;
  try {
    // NVRTC runs off the main thread: compile every candidate at once.
    const compiled = await Promise.allSettled(
      candidates.map((c) => compile(spec, { target: "cuda", kernel: c.kernel.name, cacheDir })),
    );
    for (const r of compiled) if (r.status === "fulfilled") kernels.push(r.value);
    const failed = compiled.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const denseAt = candidates.findIndex(isDense);
    if (denseAt >= 0) dense = kernels[denseAt]!;
    else {
      const d = denseKernel(candidates[0]!.kernel);
      const withDense: CheckedSpec = { ...spec, kernels: new Map([...spec.kernels, [d.name, d]]) };
      dense = await compile(withDense, { target: "cuda", kernel: d.name, cacheDir });
      kernels.push(dense);
    }
    errors = await CudaSquaredError.create(cacheDir);
  } catch (e) {
    dispose();
    throw e;
  }
  const { dtype, batch: kernelBatch } = dense.ir;
  let outs: { dense: DeviceBuffer; candidate: DeviceBuffer } | undefined;
  const outputs = (elements: number) => {
    if (!outs || outs.dense.length !== elements) {
      outs?.dense.free();
      outs?.candidate.free();
      outs = {
        dense: device.allocElements(dtype, elements),
        candidate: device.allocElements(dtype, elements),
      };
    }
    return outs;
  };

  /** Runs dense + candidates on one group of `kernelBatch` samples; adds into `sums`. */
  const runGroup = (
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    sums: SquaredError[],
    progress?: (l: string) => void,
  ) => {
    const o = outputs(q.length);
    dense.run(q, k, v, o.dense.poison());
    progress?.("dense");
    candidates.forEach((c, i) => {
      const kernel = kernels[i]!;
      let e: SquaredError;
      if (kernel === dense)
        e = { sumSq: 0, refSq: errors.measure(o.dense, o.dense).refSq, count: o.dense.length };
      else {
        kernel.run(q, k, v, o.candidate.poison());
        e = errors.measure(o.candidate, o.dense);
      }
      const s = sums[i]!;
      sums[i] = { sumSq: s.sumSq + e.sumSq, refSq: s.refSq + e.refSq, count: s.count + e.count };
      progress?.(c.kernel.name);
    });
  };

  return {
    rows: dense.ir.seqLen,
    async evaluate(qkv: LayerQkv, progress: (label: string) => void): Promise<SquaredError[]> {
      const sums: SquaredError[] = candidates.map(() => ({ sumSq: 0, refSq: 0, count: 0 }));
      const { q, k, v, shape } = qkv;
      if (q instanceof DeviceBuffer || k instanceof DeviceBuffer || v instanceof DeviceBuffer) {
        for (const [name, b] of [
          ["q", q],
          ["k", k],
          ["v", v],
        ] as const)
          if (!(b instanceof DeviceBuffer) || b.dtype !== dtype)
            throw new SearchError(
              `${name} must be a ${dtype} device buffer like the others (the kernels take ${dtype})`,
            );
        if (shape.batch !== kernelBatch)
          throw new SearchError(
            `device-buffer calibration must have the layout's batch ${kernelBatch}, got ${shape.batch}`,
          );
        runGroup(q as DeviceBuffer, k as DeviceBuffer, v as DeviceBuffer, sums, progress);
        return sums;
      }
      // Host arrays: upload the layout's batch at a time (all at once when the batches agree).
      const groups = shape.batch === kernelBatch ? 1 : shape.batch;
      const per = (heads: number) => (shape.batch / groups) * shape.seqLen * heads * shape.headDim;
      for (let g = 0; g < groups; g++) {
        const slice = (x: Float32Array | Float64Array, heads: number) =>
          upload(device, x.subarray(g * per(heads), (g + 1) * per(heads)), dtype);
        const bufs = [slice(q, shape.heads), slice(k, shape.kvHeads), slice(v, shape.kvHeads)];
        try {
          runGroup(bufs[0]!, bufs[1]!, bufs[2]!, sums, g === groups - 1 ? progress : undefined);
        } finally {
          for (const b of bufs) b.free();
        }
      }
      return sums;
    },
    dispose() {
      outs?.dense.free();
      outs?.candidate.free();
      errors.free();
      dispose();
    },
  };
}

function upload(device: CudaDevice, x: Float32Array | Float64Array, dtype: Dtype): DeviceBuffer {
  return device.fromHost(x instanceof Float32Array ? x : Float32Array.from(x), dtype);
}
