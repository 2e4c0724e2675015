// The WGSL forward kernel, embedded as a string (not read from disk) so the emitter also runs in a
// browser. emit.ts prepends the constants, the storage types and the element mask, and fills the
// {{…}} slots that differ with and without the `subgroups` feature.
//
// FlashAttention forward over the plan's CSR lists, one workgroup per (query block, head, batch):
//   for each qt-row sub-tile of the query block (Q kept in workgroup memory, pre-scaled by
//   scale·log2 e so the softmax uses exp2):
//     full kv blocks, then partial ones (element mask); each block in kc-key chunks:
//       K, V chunk → workgroup memory; S = Q Kᵀ in registers (rq × rk per invocation);
//       online softmax in f32 (row max across the tc invocations of a row); P → workgroup memory;
//       O += P V in registers (rq rows × head_dim/4/tc vec4 per invocation).
//     O / l → out; log-sum-exp → lse.
// Loops over an invocation's register tile (i < RQ, j < RK, dd < DV, jj < 4u) are unrolled by the
// emitter (unroll.ts), so private arrays are only ever indexed by constants.
// Masked scores are a large finite negative (NEG), never -inf: WGSL does not promise IEEE
// infinities, and a row with no allowed key yet must give p = 0, not exp2(NEG - NEG) = 1.

/** Row reduction through subgroup shuffles, used when the layout check at entry succeeded. */
export const SUBGROUP_REDUCE = `  if (use_sg) {
    for (var i = 0u; i < RQ; i++) {
      for (var m = 1u; m < TC; m = m << 1u) {
        let y = subgroupShuffleXor(x[i], m);
        x[i] = select(x[i] + y, max(x[i], y), is_max);
      }
    }
    return x;
  }`;

/** Entry-point builtins the subgroup path reads. */
export const SUBGROUP_PARAMS = `, @builtin(subgroup_size) sg_size: u32`;

/**
 * The shuffles assume the tc invocations of a row are lanes lid ^ m of one subgroup. WGSL does not
 * promise that layout (nor a subgroup at least tc wide), so each workgroup checks it once; the
 * result is made workgroup-uniform so both paths may use barriers.
 */
export const SUBGROUP_CHECK = `  var bad = sg_size < TC;
  for (var m = 1u; m < TC; m = m << 1u) {
    let other = subgroupShuffleXor(lid, m);
    bad = bad || other != (lid ^ m);
  }
  if (bad) {
    atomicOr(&sg_bad, 1u);
  }
  workgroupBarrier();
  if (lid == 0u) {
    sg_flag = atomicLoad(&sg_bad);
  }
  let use_sg = workgroupUniformLoad(&sg_flag) == 0u;`;

export const SUBGROUP_VARS = `var<workgroup> sg_bad: atomic<u32>;
var<workgroup> sg_flag: u32;`;

export const KERNEL_TEMPLATE = `const NEG: f32 = -1.0e30;
const NEG_HALF: f32 = -5.0e29;
const LN2: f32 = 0.6931471805599453;

// Strides are in vec4 units of the storage type; lse strides in elements, lse_stride.w != 0 writes lse.
struct Params {
  q_stride: vec4<u32>,
  k_stride: vec4<u32>,
  v_stride: vec4<u32>,
  o_stride: vec4<u32>,
  lse_stride: vec4<u32>,
  plan_base: vec4<u32>,
  seq_len: u32,
  heads: u32,
  kv_heads: u32,
  scale_log2: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q_in: array<sv4>;
@group(0) @binding(2) var<storage, read> k_in: array<sv4>;
@group(0) @binding(3) var<storage, read> v_in: array<sv4>;
@group(0) @binding(4) var<storage, read_write> o_out: array<sv4>;
@group(0) @binding(5) var<storage, read_write> lse_out: array<u32>;
// full offsets, full indices, partial offsets, partial indices at params.plan_base.xyzw.
@group(0) @binding(6) var<storage, read> plan: array<i32>;

var<workgroup> q_s: array<sv4, QT * D4P>;
var<workgroup> k_s: array<sv4, KC * D4P>;
var<workgroup> v_s: array<sv4, KC * D4>;
var<workgroup> p_s: array<vec4<f32>, QT * KCP4>;
var<workgroup> red_s: array<f32, QT * TC>;
{{SUBGROUP_VARS}}

var<private> o_acc: array<vec4<f32>, RQ * DV>;
var<private> m_i: array<f32, RQ>;
var<private> l_i: array<f32, RQ>;

// Combines each of an invocation's RQ row values with those of the other TC invocations of its rows.
// The fallback's red_s is next written only after at least one more barrier, so no trailing one.
fn reduce_rows(v: array<f32, RQ>, r: u32, c: u32, use_sg: bool, is_max: bool) -> array<f32, RQ> {
  var x = v;
{{SUBGROUP_REDUCE}}
  for (var i = 0u; i < RQ; i++) {
    red_s[(r + TR * i) * TC + c] = x[i];
  }
  workgroupBarrier();
  for (var i = 0u; i < RQ; i++) {
    let base = (r + TR * i) * TC;
    var acc = red_s[base];
    for (var cc = 1u; cc < TC; cc++) {
      let y = red_s[base + cc];
      acc = select(acc + y, max(acc, y), is_max);
    }
    x[i] = acc;
  }
  return x;
}

// One kc-key chunk starting at key k0 against the query sub-tile starting at q0.
fn chunk(q0: u32, k0: u32, k_base: u32, v_base: u32, r: u32, c: u32, lid: u32, partial: bool, use_sg: bool) {
  let n = params.seq_len;
  workgroupBarrier(); // the previous chunk's readers of k_s, v_s and p_s are done
  for (var e = lid; e < KC * D4; e += WG) {
    let row = e / D4;
    let d4 = e % D4;
    var kx = sv4();
    var vx = sv4();
    if (k0 + row < n) { // ragged last block: zeros, so P·V never meets garbage
      kx = k_in[k_base + (k0 + row) * params.k_stride.y + d4];
      vx = v_in[v_base + (k0 + row) * params.v_stride.y + d4];
    }
    k_s[row * D4P + d4] = kx;
    v_s[row * D4 + d4] = vx;
  }
  workgroupBarrier();
  var s: array<f32, RQ * RK>;
  for (var d4 = 0u; d4 < D4; d4++) {
    var qv: array<sv4, RQ>;
    for (var i = 0u; i < RQ; i++) {
      qv[i] = q_s[(r + TR * i) * D4P + d4];
    }
    for (var j = 0u; j < RK; j++) {
      let kv = k_s[(c + TC * j) * D4P + d4];
      for (var i = 0u; i < RQ; i++) {
        s[i * RK + j] += f32(dot(qv[i], kv));
      }
    }
  }
  var mx: array<f32, RQ>;
  for (var i = 0u; i < RQ; i++) {
    mx[i] = NEG;
    let qi = i32(q0 + r + TR * i);
    for (var j = 0u; j < RK; j++) {
      let kj = k0 + c + TC * j;
      var ok = kj < n;
      if (partial) {
        ok = ok && tilec_mask(qi, i32(kj));
      }
      let x = select(NEG, s[i * RK + j], ok);
      s[i * RK + j] = x;
      mx[i] = max(mx[i], x);
    }
  }
  mx = reduce_rows(mx, r, c, use_sg, true);
  for (var i = 0u; i < RQ; i++) {
    let m_new = max(m_i[i], mx[i]);
    // A row with no allowed key so far keeps m = NEG; subtracting 0 then leaves every p at 0.
    let m_use = select(m_new, 0.0, m_new <= NEG_HALF);
    let alpha = select(0.0, exp2(m_i[i] - m_use), m_i[i] > NEG_HALF);
    m_i[i] = m_new;
    let row = r + TR * i;
    var sum = 0.0;
    for (var j = 0u; j < RK; j++) {
      let x = s[i * RK + j];
      let p = select(0.0, exp2(x - m_use), x > NEG_HALF);
      sum += p;
      let col = c + TC * j;
      p_s[row * KCP4 + col / 4u][col % 4u] = p;
    }
    // Each invocation keeps a partial row sum over its own keys; finish() adds them up once.
    l_i[i] = l_i[i] * alpha + sum;
    for (var dd = 0u; dd < DV; dd++) {
      o_acc[i * DV + dd] *= alpha;
    }
  }
  workgroupBarrier();
  for (var j4 = 0u; j4 < KC / 4u; j4++) {
    var pv: array<vec4<f32>, RQ>;
    for (var i = 0u; i < RQ; i++) {
      pv[i] = p_s[(r + TR * i) * KCP4 + j4];
    }
    for (var jj = 0u; jj < 4u; jj++) {
      for (var dd = 0u; dd < DV; dd++) {
        let vv = vec4<f32>(v_s[(j4 * 4u + jj) * D4 + c + TC * dd]);
        for (var i = 0u; i < RQ; i++) {
          o_acc[i * DV + dd] = fma(vec4<f32>(pv[i][jj]), vv, o_acc[i * DV + dd]);
        }
      }
    }
  }
}

// O / l and the log-sum-exp (natural log) of the sub-tile's rows; rows without any allowed key
// write 0 and -inf.
fn finish(q0: u32, o_base: u32, b: u32, h: u32, r: u32, c: u32, use_sg: bool) {
  let l = reduce_rows(l_i, r, c, use_sg, false);
  for (var i = 0u; i < RQ; i++) {
    let row = q0 + r + TR * i;
    if (row < params.seq_len) {
      let inv = select(0.0, 1.0 / l[i], l[i] > 0.0);
      for (var dd = 0u; dd < DV; dd++) {
        o_out[o_base + row * params.o_stride.y + c + TC * dd] = sv4(o_acc[i * DV + dd] * inv);
      }
      if (params.lse_stride.w != 0u && c == 0u) {
        let lse = (m_i[i] + log2(l[i])) * LN2;
        let at = b * params.lse_stride.x + h * params.lse_stride.y + row * params.lse_stride.z;
        lse_out[at] = select(0xff800000u, bitcast<u32>(lse), l[i] > 0.0);
      }
    }
  }
}

@compute @workgroup_size(WG)
fn {{ENTRY}}(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>{{SUBGROUP_PARAMS}}) {
  let qb = wid.x;
  let h = wid.y;
  let b = wid.z;
  let n = params.seq_len;
  let hk = h / (params.heads / params.kv_heads); // grouped-query attention
  let r = lid / TC;
  let c = lid % TC;
{{SUBGROUP_CHECK}}
  let q_base = b * params.q_stride.x + h * params.q_stride.z;
  let k_base = b * params.k_stride.x + hk * params.k_stride.z;
  let v_base = b * params.v_stride.x + hk * params.v_stride.z;
  let o_base = b * params.o_stride.x + h * params.o_stride.z;
  for (var qs = 0u; qs < BLOCK_Q; qs += QT) {
    let q0 = qb * BLOCK_Q + qs;
    if (q0 >= n) {
      break;
    }
    workgroupBarrier(); // the previous sub-tile's readers of q_s and red_s are done
    for (var e = lid; e < QT * D4; e += WG) {
      let row = e / D4;
      let d4 = e % D4;
      var x = sv4();
      if (q0 + row < n) {
        x = sv4(vec4<f32>(q_in[q_base + (q0 + row) * params.q_stride.y + d4]) * params.scale_log2);
      }
      q_s[row * D4P + d4] = x;
    }
    for (var i = 0u; i < RQ; i++) {
      m_i[i] = NEG;
      l_i[i] = 0.0;
    }
    for (var i = 0u; i < RQ; i++) {
      for (var dd = 0u; dd < DV; dd++) {
        o_acc[i * DV + dd] = vec4<f32>();
      }
    }
    // List 0 holds the full blocks (no element mask), list 1 the partial ones.
    for (var list = 0u; list < 2u; list++) {
      let offsets = select(params.plan_base.x, params.plan_base.z, list == 1u);
      let indices = select(params.plan_base.y, params.plan_base.w, list == 1u);
      let first = u32(plan[offsets + qb]);
      let last = u32(plan[offsets + qb + 1u]);
      for (var p = first; p < last; p++) {
        let kb = u32(plan[indices + p]);
        for (var c0 = 0u; c0 < BLOCK_KV; c0 += KC) {
          let k0 = kb * BLOCK_KV + c0;
          if (k0 >= n) {
            break;
          }
          chunk(q0, k0, k_base, v_base, r, c, lid, list == 1u, use_sg);
        }
      }
    }
    finish(q0, o_base, b, h, r, c, use_sg);
  }
}
`;
