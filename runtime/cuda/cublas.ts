// Row-major matrix products on cuBLAS (native/cublas.cc loads libcublas at run time).
//
//   C[m, n] = alpha · A[m, k] · op(B) + beta · C      op(B) = Bᵀ when B is stored [n, k] (a linear
//                                                   layer's weight), else B stored [k, n]
//
// over `batch` matrices at fixed element strides. cuBLAS is column-major: a row-major matrix is the
// column-major transpose, so the call computes Cᵀ = op(B)ᵀ · Aᵀ with the operands swapped.
import { loadAddon, tryLoadAddon } from "./addon.ts";
import type { DeviceBuffer, Stream } from "./device.ts";
import type { DType } from "./dtype.ts";

type GemmType = "bf16" | "fp16" | "fp32";

interface CublasAddon {
  cublasAvailable(): { ok: boolean; reason?: string; path?: string };
  cublasGemm(o: {
    transA: boolean;
    transB: boolean;
    m: number;
    n: number;
    k: number;
    alpha: number;
    beta: number;
    a: bigint;
    lda: number;
    strideA: number;
    aType: GemmType;
    b: bigint;
    ldb: number;
    strideB: number;
    bType: GemmType;
    c: bigint;
    ldc: number;
    strideC: number;
    cType: GemmType;
    batch: number;
    stream: unknown;
  }): void;
  cublasVersion(): number;
}

function addon(): CublasAddon {
  return loadAddon() as unknown as CublasAddon;
}

/** Whether cuBLAS can be loaded; never throws. */
export function cublasAvailable(): { ok: boolean; reason?: string; path?: string } {
  const r = tryLoadAddon();
  if ("error" in r) return { ok: false, reason: r.error };
  const a = r.addon as unknown as Partial<CublasAddon>;
  if (!a.cublasAvailable) return { ok: false, reason: "the CUDA addon predates cuBLAS: npm run build:addon" };
  return a.cublasAvailable();
}

/** e.g. 130100 for cuBLAS 13.1.0 (needs an initialized device). */
export function cublasVersion(): number {
  return addon().cublasVersion();
}

/** One operand: a buffer, the element offset of its first matrix, its row stride and batch stride. */
export interface MatrixRef {
  readonly buf: DeviceBuffer;
  /** Element offset of the first matrix (default 0). */
  readonly offset?: number;
  /** Elements between consecutive rows (default: the row length). */
  readonly ld?: number;
  /** Elements between consecutive matrices of a batch (default 0: the same matrix each time). */
  readonly stride?: number;
}

export interface GemmOptions {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly a: MatrixRef;
  readonly b: MatrixRef;
  readonly c: MatrixRef;
  /** B is stored [n, k] and used transposed (the default, as for y = x·Wᵀ), or stored [k, n]. */
  readonly transB?: boolean;
  readonly alpha?: number;
  readonly beta?: number;
  readonly batch?: number;
  readonly stream?: Stream | null;
}

function gemmType(d: DType, name: string): GemmType {
  if (d === "bf16" || d === "fp16" || d === "fp32") return d;
  throw new TypeError(`${name} is ${d}; cuBLAS products take bf16, fp16 or fp32 buffers`);
}

/** Checks that every matrix of the batch lies inside its buffer (cuBLAS would read out of bounds). */
function checkExtent(name: string, r: MatrixRef, rows: number, cols: number, batch: number): number {
  const ld = r.ld ?? cols;
  if (ld < cols) throw new RangeError(`${name}: row stride ${ld} < row length ${cols}`);
  const stride = r.stride ?? 0;
  const last = (r.offset ?? 0) + (batch - 1) * stride + (rows - 1) * ld + cols;
  if (rows > 0 && cols > 0 && last > r.buf.length)
    throw new RangeError(`${name}: ${batch}×[${rows}, ${cols}] (ld ${ld}) overruns ${r.buf.length} elements`);
  return ld;
}

/** Row-major batched C = alpha·A·op(B) + beta·C with fp32 accumulation. */
export function gemm(o: GemmOptions): void {
  const { m, n, k } = o;
  const transB = o.transB ?? true;
  const batch = o.batch ?? 1;
  const lda = checkExtent("A", o.a, m, k, batch);
  const ldb = transB ? checkExtent("B", o.b, n, k, batch) : checkExtent("B", o.b, k, n, batch);
  const ldc = checkExtent("C", o.c, m, n, batch);
  const ptr = (r: MatrixRef) => r.buf.ptrAt(r.offset ?? 0);
  addon().cublasGemm({
    // Column-major: Cᵀ[n, m] = op(B)ᵀ[n, k] · Aᵀ[k, m].
    transA: transB,
    transB: false,
    m: n,
    n: m,
    k,
    alpha: o.alpha ?? 1,
    beta: o.beta ?? 0,
    a: ptr(o.b),
    lda: ldb,
    strideA: o.b.stride ?? 0,
    aType: gemmType(o.b.buf.dtype, "B"),
    b: ptr(o.a),
    ldb: lda,
    strideB: o.a.stride ?? 0,
    bType: gemmType(o.a.buf.dtype, "A"),
    c: ptr(o.c),
    ldc,
    strideC: o.c.stride ?? 0,
    cType: gemmType(o.c.buf.dtype, "C"),
    batch,
    stream: o.stream?.handle ?? null,
  });
}
