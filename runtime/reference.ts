// The float64 CPU reference every backend is tested against:
//   out = softmax(Q Kᵀ · scale + mask) V, with masked scores = −∞; fully masked rows give 0, lse = −∞.
// Tensors are [batch, seq, heads, headDim] (the kernels' default layout), GQA by head grouping.
// O(batch · heads · seq² · headDim): for small shapes in tests, not for benchmarks.
export interface AttentionShape {
  readonly batch: number;
  readonly seqLen: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

export type Numbers = Float64Array | Float32Array | number[];

export interface ReferenceResult {
  /** [batch, seq, heads, headDim] */
  readonly out: Float64Array;
  /** [batch, heads, seq], natural log of the row sum of exp(score) */
  readonly lse: Float64Array;
}

export function referenceAttention(
  q: Numbers,
  k: Numbers,
  v: Numbers,
  shape: AttentionShape,
  allowed: (qi: number, ki: number) => boolean,
  scale = 1 / Math.sqrt(shape.headDim),
  /** Only these query rows (all when omitted): lets tests check long sequences on a sample. */
  rows?: readonly number[],
): ReferenceResult {
  const { batch, seqLen: n, heads, kvHeads, headDim: d } = shape;
  if (heads % kvHeads !== 0) throw new RangeError(`kvHeads (${kvHeads}) must divide heads (${heads})`);
  const group = heads / kvHeads;
  const out = new Float64Array(batch * n * heads * d);
  const lse = new Float64Array(batch * heads * n);
  const scores = new Float64Array(n);
  const acc = new Float64Array(d);
  const qi = (b: number, s: number, h: number) => ((b * n + s) * heads + h) * d;
  const ki = (b: number, s: number, h: number) => ((b * n + s) * kvHeads + h) * d;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const hk = Math.floor(h / group);
      for (const i of rows ?? allRows(n)) {
        let max = -Infinity;
        const qo = qi(b, i, h);
        for (let j = 0; j < n; j++) {
          if (!allowed(i, j)) {
            scores[j] = -Infinity;
            continue;
          }
          const ko = ki(b, j, hk);
          let s = 0;
          for (let x = 0; x < d; x++) s += q[qo + x]! * k[ko + x]!;
          s *= scale;
          scores[j] = s;
          if (s > max) max = s;
        }
        const oo = qi(b, i, h);
        if (max === -Infinity) {
          lse[(b * heads + h) * n + i] = -Infinity; // out stays 0
          continue;
        }
        acc.fill(0);
        let sum = 0;
        for (let j = 0; j < n; j++) {
          if (scores[j] === -Infinity) continue;
          const p = Math.exp(scores[j]! - max);
          sum += p;
          const vo = ki(b, j, hk);
          for (let x = 0; x < d; x++) acc[x]! += p * v[vo + x]!;
        }
        for (let x = 0; x < d; x++) out[oo + x] = acc[x]! / sum;
        lse[(b * heads + h) * n + i] = max + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

function* allRows(n: number): Generator<number> {
  for (let i = 0; i < n; i++) yield i;
}

/** ‖a − b‖₂ / ‖b‖₂ over finite values; NaN anywhere in `a` makes the error NaN (never a pass). */
export function relativeError(a: Numbers, b: Numbers): number {
  if (a.length !== b.length) throw new RangeError(`length mismatch: ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (Number.isNaN(x)) return NaN;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Deterministic uniform random numbers in [-1, 1) (mulberry32): tests reproduce from a seed. */
export function randomArray(length: number, seed: number): Float64Array {
  const out = new Float64Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

export interface RowComparison {
  /** ‖got − ref‖ / ‖ref‖ over the compared rows; NaN when any output was left unwritten. */
  readonly relError: number;
  /** Largest |lse − reference| over rows with an allowed key. */
  readonly lseError: number;
  /** Outputs still NaN (never written: outputs are poisoned before a run). */
  readonly unwritten: number;
  readonly nonFinite: number;
  /** Rows without any allowed key gave out = 0 and lse = −inf. */
  readonly maskedRowsOk: boolean;
  readonly maskedRows: number;
  readonly rows: number;
}

/**
 * Compares a kernel's output ([batch, seq, heads, dim]) and LSE ([batch, heads, seq]) with the
 * reference on the given rows — the one verdict every backend's tests and benchmark gates use.
 */
export function compareRows(
  got: Numbers,
  gotLse: Numbers,
  ref: ReferenceResult,
  shape: AttentionShape,
  rows: readonly number[],
): RowComparison {
  const { batch, seqLen: n, heads, headDim: d } = shape;
  let num = 0;
  let den = 0;
  let unwritten = 0;
  let nonFinite = 0;
  let lseError = 0;
  let maskedRows = 0;
  let maskedRowsOk = true;
  for (let b = 0; b < batch; b++)
    for (const i of rows)
      for (let h = 0; h < heads; h++) {
        const want = ref.lse[(b * heads + h) * n + i]!;
        const have = gotLse[(b * heads + h) * n + i]!;
        if (want === -Infinity) {
          maskedRows++;
          if (have !== -Infinity) maskedRowsOk = false;
        } else lseError = Math.max(lseError, Number.isNaN(have) ? Infinity : Math.abs(have - want));
        const o = ((b * n + i) * heads + h) * d;
        for (let x = 0; x < d; x++) {
          const g = got[o + x]!;
          if (Number.isNaN(g)) unwritten++;
          else if (!Number.isFinite(g)) nonFinite++;
          const w = ref.out[o + x]!;
          if (want === -Infinity && g !== 0) maskedRowsOk = false;
          num += (g - w) * (g - w);
          den += w * w;
        }
      }
  const relError = unwritten ? NaN : Math.sqrt(num / Math.max(den, 1e-300));
  return { relError, lseError, unwritten, nonFinite, maskedRowsOk, maskedRows, rows: rows.length };
}

// ---------------------------------------------------------------------------------------------
// Backward pass. With S = scale · Q Kᵀ + mask (masked = −∞) and P = softmax(S) row-wise:
//   delta_i = Σ_x dO[i,x] · O[i,x]          (= Σ_j P_ij · dP_ij)
//   dP = dO Vᵀ,   dS = P ∘ (dP − delta),   dQ = scale · dS K,   dK = scale · dSᵀ Q,   dV = Pᵀ dO.
// dK and dV are [batch, seq, kvHeads, headDim]: each kv head sums over the query heads of its group.
// Fully masked rows have P = 0, so they contribute nothing and their dQ row is exactly 0.
// ---------------------------------------------------------------------------------------------

export interface ReferenceGradients extends ReferenceResult {
  /** [batch, heads, seq]: Σ_x dout · out per query row (0 on fully masked rows). */
  readonly delta: Float64Array;
  /** [batch, seq, heads, headDim] */
  readonly dq: Float64Array;
  /** [batch, seq, kvHeads, headDim] */
  readonly dk: Float64Array;
  /** [batch, seq, kvHeads, headDim] */
  readonly dv: Float64Array;
  /** The shape the gradients were computed for (compareGradients indexes rows with it). */
  readonly shape: AttentionShape;
}

/** Gradients of L = Σ out ∘ dout with respect to q, k and v, in float64 (out and lse as referenceAttention). */
export function referenceAttentionBackward(
  q: Numbers,
  k: Numbers,
  v: Numbers,
  dout: Numbers,
  shape: AttentionShape,
  allowed: (qi: number, ki: number) => boolean,
  scale = 1 / Math.sqrt(shape.headDim),
): ReferenceGradients {
  const { out, lse } = referenceAttention(q, k, v, shape, allowed, scale);
  const { batch, seqLen: n, heads, kvHeads, headDim: d } = shape;
  const group = heads / kvHeads; // referenceAttention checked that kvHeads divides heads
  const delta = new Float64Array(batch * heads * n);
  const dq = new Float64Array(batch * n * heads * d);
  const dk = new Float64Array(batch * n * kvHeads * d);
  const dv = new Float64Array(batch * n * kvHeads * d);
  const qi = (b: number, s: number, h: number) => ((b * n + s) * heads + h) * d;
  const ki = (b: number, s: number, h: number) => ((b * n + s) * kvHeads + h) * d;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < n; i++) {
        const r = (b * heads + h) * n + i;
        const qo = qi(b, i, h);
        let dl = 0;
        for (let x = 0; x < d; x++) dl += dout[qo + x]! * out[qo + x]!;
        delta[r] = dl;
        const rowLse = lse[r]!;
        if (rowLse === -Infinity) continue; // fully masked: P = 0, dq row stays 0
        for (let j = 0; j < n; j++) {
          if (!allowed(i, j)) continue; // P_ij = 0
          const ko = ki(b, j, hk);
          // P_ij recomputed from the row's log-sum-exp, as the kernels do.
          let s = 0;
          for (let x = 0; x < d; x++) s += q[qo + x]! * k[ko + x]!;
          const p = Math.exp(s * scale - rowLse);
          // dP_ij = dO_i · V_j;  dS_ij = P_ij (dP_ij − delta_i)
          let dp = 0;
          for (let x = 0; x < d; x++) dp += dout[qo + x]! * v[ko + x]!;
          const ds = p * (dp - dl) * scale; // scale folded in for dQ and dK
          for (let x = 0; x < d; x++) {
            dq[qo + x]! += ds * k[ko + x]!;
            dk[ko + x]! += ds * q[qo + x]!;
            dv[ko + x]! += p * dout[qo + x]!;
          }
        }
      }
    }
  }
  return { out, lse, delta, dq, dk, dv, shape };
}

export interface GradientComparison {
  /** ‖got − ref‖₂ / ‖ref‖₂ per tensor (relativeError): NaN when any element is NaN. */
  readonly dq: number;
  readonly dk: number;
  readonly dv: number;
  /** NaN elements over dq, dk and dv (never written: outputs are poisoned with NaN before a run). */
  readonly unwritten: number;
  /** ±inf elements over dq, dk and dv. */
  readonly nonFinite: number;
  /** Every dq element of a fully masked query row (ref.lse = −inf) is exactly 0. */
  readonly maskedRowsZero: boolean;
  /** Fully masked (batch, head, query) rows checked by maskedRowsZero. */
  readonly maskedRows: number;
}

/**
 * Compares a kernel's dq ([batch, seq, heads, dim]) and dk, dv ([batch, seq, kvHeads, dim]) with the
 * reference — the one verdict every backend's backward tests use. A pass needs unwritten = 0,
 * nonFinite = 0, maskedRowsZero, and each relative error under the backend's tolerance.
 */
export function compareGradients(
  got: { readonly dq: Numbers; readonly dk: Numbers; readonly dv: Numbers },
  ref: ReferenceGradients,
): GradientComparison {
  let unwritten = 0;
  let nonFinite = 0;
  for (const t of [got.dq, got.dk, got.dv])
    for (let i = 0; i < t.length; i++) {
      const x = t[i]!;
      if (Number.isNaN(x)) unwritten++;
      else if (!Number.isFinite(x)) nonFinite++;
    }
  const { batch, seqLen: n, heads, headDim: d } = ref.shape;
  let maskedRows = 0;
  let maskedRowsZero = true;
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < n; i++) {
        if (ref.lse[(b * heads + h) * n + i] !== -Infinity) continue;
        maskedRows++;
        const o = ((b * n + i) * heads + h) * d;
        for (let x = 0; x < d; x++) if (got.dq[o + x] !== 0) maskedRowsZero = false;
      }
  return {
    dq: relativeError(got.dq, ref.dq),
    dk: relativeError(got.dk, ref.dk),
    dv: relativeError(got.dv, ref.dv),
    unwritten,
    nonFinite,
    maskedRowsZero,
    maskedRows,
  };
}
