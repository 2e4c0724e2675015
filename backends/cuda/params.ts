// The parameter structs of tilec's CUDA kernels, declared once as data. The C struct in every
// generated source is rendered from these tables (renderParamStruct), the byte offsets every launcher
// packs at are computed from them (layoutParams), and each field says where its value comes from
// (ParamSource), so a launcher — the runtime, the packaged TypeScript loader, the packaged Python
// loader — fills any kernel's struct with one generic loop (backends/cuda/launch.ts describes a launch).
//
// Natural alignment, 8-byte aligned struct; strides are in elements with the head dim contiguous.

export type ParamType = "ptr" | "i64" | "i32" | "f32";

/** Tensors a kernel reads or writes, by role. */
export type TensorRole =
  | "q"
  | "k"
  | "v"
  | "o"
  | "lse"
  | "do"
  | "dq"
  | "dk"
  | "dv"
  /** Backward workspace (fp32): dQ accumulated over key blocks, [batch, heads, seqPad, headDim]. */
  | "dq_accum"
  /** Backward workspace (fp32): lse·log2(e) per query row, +inf for masked and padding rows, [batch, heads, seqPad]. */
  | "lse_log2"
  /** Backward workspace (fp32): rowsum(dO ∘ O) per query row, [batch, heads, seqPad]. */
  | "delta";

/** [batch, seq, heads, headDim] tensors, whose element strides a struct carries. */
export type StridedRole = "q" | "k" | "v" | "o" | "do" | "dq" | "dk" | "dv";
export type StrideDim = "batch" | "seq" | "head";

/** Where a launcher takes a field's value from. */
export type ParamSource =
  /** The tensor's device address; 0 when the call passes no such tensor (lse, workspace of the other variant). */
  | { readonly tensor: TensorRole }
  /** An element stride of a [batch, seq, heads, headDim] tensor in the call's memory order. */
  | { readonly stride: StridedRole; readonly dim: StrideDim }
  /** The device address of a plan section (backends/cuda/emit.ts planSections); 0 when it is empty. */
  | { readonly plan: string }
  /** The call's number of query heads or kv heads. */
  | { readonly shape: "heads" | "kvHeads" }
  /** A value fixed by the kernel (sequence length, softmax scale): resolved by the emitter … */
  | { readonly constant: "seqLen" | "scaleLog2" | "scale" }
  /** … into this, in a launch description. */
  | { readonly value: number };

export interface ParamSpec {
  readonly name: string;
  readonly type: ParamType;
  /** The C declaration's type (for pointers: constness and pointee). */
  readonly ctype: string;
  readonly source: ParamSource;
}

export interface ParamField extends ParamSpec {
  readonly offset: number;
}

export interface ParamStruct {
  readonly struct: string;
  readonly bytes: number;
  readonly fields: readonly ParamField[];
}

const SIZE: Record<ParamType, number> = { ptr: 8, i64: 8, i32: 4, f32: 4 };

/** Offsets at natural alignment; the struct's size rounded up to 8. */
export function layoutParams(struct: string, specs: readonly ParamSpec[]): ParamStruct {
  let at = 0;
  const fields = specs.map((s) => {
    at = Math.ceil(at / SIZE[s.type]) * SIZE[s.type];
    const f = { ...s, offset: at };
    at += SIZE[s.type];
    return f;
  });
  return { struct, bytes: Math.ceil(at / 8) * 8, fields };
}

const ptr = (name: string, ctype: string, tensor: TensorRole): ParamSpec => ({
  name,
  type: "ptr",
  ctype,
  source: { tensor },
});
const strides = (t: StridedRole): ParamSpec[] =>
  (["batch", "seq", "head"] as const).map((dim) => ({
    name: `${t}_${dim}_stride`,
    type: "i64",
    ctype: "long long",
    source: { stride: t, dim },
  }));
const planPtr = (name: string, ctype = "const int*"): ParamSpec => ({
  name,
  type: "ptr",
  ctype,
  source: { plan: name },
});
const i32 = (name: string, source: ParamSource): ParamSpec => ({ name, type: "i32", ctype: "int", source });
const f32 = (name: string, source: ParamSource): ParamSpec => ({ name, type: "f32", ctype: "float", source });

/**
 * struct TilecParams, every forward kernel's only (sm_80, fp32) or first (sm_90a) parameter.
 * Plan (FlexAttention-style CSR, int32): for query block qb the full kv blocks are
 * full_indices[full_offsets[qb] .. full_offsets[qb+1]) and the partial ones likewise; q_order lists
 * query blocks heaviest first (blockIdx.x is the position); partial_classes holds the 16-row × 8-key
 * sub-tile classes of partial blocks (compiler/subPlan.ts), or is null (every sub-tile partial).
 */
export const FORWARD_PARAMS: ParamStruct = layoutParams("TilecParams", [
  ptr("q", "const void*", "q"),
  ptr("k", "const void*", "k"),
  ptr("v", "const void*", "v"),
  ptr("o", "void*", "o"),
  ptr("lse", "float*", "lse"),
  ...strides("q"),
  ...strides("k"),
  ...strides("v"),
  ...strides("o"),
  i32("seq_len", { constant: "seqLen" }),
  i32("num_heads", { shape: "heads" }),
  i32("num_kv_heads", { shape: "kvHeads" }),
  f32("scale_log2", { constant: "scaleLog2" }),
  planPtr("full_offsets"),
  planPtr("full_indices"),
  planPtr("partial_offsets"),
  planPtr("partial_indices"),
  planPtr("q_order"),
  planPtr("partial_classes", "const unsigned*"),
]);

/**
 * struct TilecBwdParams, shared by the backward kernels (row statistics, dK/dV, dQ, dQ conversion).
 * Two plans travel with it: the query-major lists of the dQ kernel's plan (the forward's fields) and
 * the key-major lists of the dK/dV kernel's plan (…T_offsets / …T_indices, kv_order heaviest first,
 * partialT_classes: 16-key × 8-query sub-tile classes of its partial blocks).
 */
export const BACKWARD_PARAMS: ParamStruct = layoutParams("TilecBwdParams", [
  ptr("q", "const void*", "q"),
  ptr("k", "const void*", "k"),
  ptr("v", "const void*", "v"),
  ptr("o", "const void*", "o"),
  ptr("do_", "const void*", "do"),
  ptr("dq", "void*", "dq"),
  ptr("dk", "void*", "dk"),
  ptr("dv", "void*", "dv"),
  ptr("lse", "const float*", "lse"),
  ptr("dq_accum", "float*", "dq_accum"),
  ptr("lse_log2", "float*", "lse_log2"),
  ptr("delta", "float*", "delta"),
  ...strides("q"),
  ...strides("k"),
  ...strides("v"),
  ...strides("o"),
  ...strides("do"),
  ...strides("dq"),
  ...strides("dk"),
  ...strides("dv"),
  i32("seq_len", { constant: "seqLen" }),
  i32("num_heads", { shape: "heads" }),
  i32("num_kv_heads", { shape: "kvHeads" }),
  f32("scale_log2", { constant: "scaleLog2" }),
  f32("scale", { constant: "scale" }),
  planPtr("full_offsets"),
  planPtr("full_indices"),
  planPtr("partial_offsets"),
  planPtr("partial_indices"),
  planPtr("q_order"),
  planPtr("partial_classes", "const unsigned*"),
  planPtr("fullT_offsets"),
  planPtr("fullT_indices"),
  planPtr("partialT_offsets"),
  planPtr("partialT_indices"),
  planPtr("kv_order"),
  planPtr("partialT_classes", "const unsigned*"),
]);

/** The C definition of a struct, with a static_assert of its size (no #include: NVRTC and nvcc alike). */
export function renderParamStruct(s: ParamStruct): string {
  const lines = s.fields.map((f) => `  ${f.ctype} ${f.name};  // +${f.offset}`);
  return [
    `// Rendered by backends/cuda/params.ts from the same table every launcher packs with.`,
    `struct ${s.struct} {`,
    ...lines,
    `};`,
    `static_assert(sizeof(${s.struct}) == ${s.bytes}, "${s.struct} layout differs from backends/cuda/params.ts");`,
  ].join("\n");
}

/** The values of the `constant` sources: fixed by the kernel. */
export type KernelConstants = Readonly<Record<"seqLen" | "scaleLog2" | "scale", number>>;

/** A struct's fields with the kernel's constants resolved (what a manifest ships). */
export function resolveConstants(s: ParamStruct, constants: KernelConstants): ParamField[] {
  return s.fields.map((f) =>
    "constant" in f.source ? { ...f, source: { value: constants[f.source.constant] } } : f,
  );
}
