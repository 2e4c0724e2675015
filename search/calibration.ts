// Calibration Q/K/V for the search, in a safetensors file (docs/search.md):
//
//   layers.{i}.q   [batch, seq, heads,    head_dim]   i = 0 .. L−1, every layer present
//   layers.{i}.k   [batch, seq, kv_heads, head_dim]
//   layers.{i}.v   [batch, seq, kv_heads, head_dim]
//
// dtype F32, F16, BF16 or F64; the attention inputs exactly as the attention call sees them (after
// RoPE and any q/k norm), in token order of the spec's layout. Other tensors are ignored (and listed).
// Layers are read one at a time, so files larger than memory work.
import type { AttentionShape } from "../runtime/reference.ts";
import {
  SafetensorsReader,
  writeSafetensors,
  fromFloats,
  type Dtype,
  type RawTensor,
} from "../runtime/io/safetensors.ts";
import { SearchError, type LayerQkv } from "./search.ts";

const NAME = /^layers\.(\d+)\.(q|k|v)$/;
const FLOAT_DTYPES: readonly Dtype[] = ["F32", "F16", "BF16", "F64"];

export interface CalibrationFile {
  readonly path: string;
  readonly layers: number;
  readonly shape: AttentionShape;
  /** Tensor names that are not `layers.{i}.{q,k,v}`. */
  readonly ignored: readonly string[];
  readonly metadata?: Readonly<Record<string, string>>;
  read(layer: number): LayerQkv;
  close(): void;
}

export function openCalibration(path: string): CalibrationFile {
  const reader = SafetensorsReader.open(path);
  try {
    return describe(reader, path);
  } catch (e) {
    reader.close();
    throw e;
  }
}

function describe(reader: SafetensorsReader, path: string): CalibrationFile {
  const fail = (msg: string): never => {
    throw new SearchError(`${path}: ${msg}`);
  };
  const found = new Map<number, Set<string>>();
  const ignored: string[] = [];
  for (const name of reader.names()) {
    const m = NAME.exec(name);
    if (!m) {
      ignored.push(name);
      continue;
    }
    const layer = Number(m[1]);
    if (!found.has(layer)) found.set(layer, new Set());
    found.get(layer)!.add(m[2]!);
  }
  if (!found.size)
    fail(
      `no calibration tensors: expected names layers.{i}.q / .k / .v ([batch, seq, heads, head_dim]); found ${reader.names().slice(0, 6).join(", ") || "no tensors"}`,
    );
  const layers = Math.max(...found.keys()) + 1;
  const missing: string[] = [];
  for (let l = 0; l < layers; l++)
    for (const p of ["q", "k", "v"]) if (!found.get(l)?.has(p)) missing.push(`layers.${l}.${p}`);
  if (missing.length)
    fail(
      `missing ${missing.slice(0, 8).join(", ")}${missing.length > 8 ? ` and ${missing.length - 8} more` : ""}: every layer 0..${layers - 1} needs q, k and v`,
    );
  const q0 = reader.info("layers.0.q");
  const k0 = reader.info("layers.0.k");
  if (q0.shape.length !== 4)
    fail(`layers.0.q has shape [${q0.shape.join(", ")}]; expected [batch, seq, heads, head_dim]`);
  const [batch, seqLen, heads, headDim] = q0.shape as [number, number, number, number];
  const kvHeads = k0.shape[2] ?? 0;
  if (!kvHeads || heads % kvHeads)
    fail(`layers.0.k has shape [${k0.shape.join(", ")}]; kv heads must divide the ${heads} query heads`);
  for (let l = 0; l < layers; l++)
    for (const p of ["q", "k", "v"]) {
      const t = reader.info(`layers.${l}.${p}`);
      const want = [batch, seqLen, p === "q" ? heads : kvHeads, headDim];
      if (t.shape.length !== 4 || t.shape.some((d, i) => d !== want[i]))
        fail(
          `layers.${l}.${p} has shape [${t.shape.join(", ")}], expected [${want.join(", ")}] like layers.0 (all layers share one shape)`,
        );
      if (!FLOAT_DTYPES.includes(t.dtype))
        fail(`layers.${l}.${p} is ${t.dtype}; calibration tensors must be ${FLOAT_DTYPES.join(", ")}`);
    }
  const shape = { batch, seqLen, heads, kvHeads, headDim };
  return {
    path,
    layers,
    shape,
    ignored,
    metadata: reader.metadata,
    read: (layer) => {
      if (!Number.isInteger(layer) || layer < 0 || layer >= layers)
        throw new SearchError(`${path}: no layer ${layer} (the file has layers 0..${layers - 1})`);
      const at = (p: string) => reader.readFloat32(`layers.${layer}.${p}`);
      return { q: at("q"), k: at("k"), v: at("v"), shape };
    },
    close: () => reader.close(),
  };
}

/**
 * Writes calibration Q/K/V in the format above: `layer(i)` for i < layers, stored as `dtype`. For tilec's
 * own DiT runtime (capture Q/K/V at each attention call, then save) and for tests.
 */
export function saveCalibration(
  path: string,
  layers: number,
  layer: (i: number) => LayerQkv,
  dtype: "F32" | "F16" | "BF16" = "F32",
  metadata?: Record<string, string>,
): void {
  const tensors = new Map<string, RawTensor>();
  for (let i = 0; i < layers; i++) {
    const { q, k, v, shape } = layer(i);
    const s = shape;
    for (const [p, x, h] of [
      ["q", q, s.heads],
      ["k", k, s.kvHeads],
      ["v", v, s.kvHeads],
    ] as const) {
      if (!(x instanceof Float32Array || x instanceof Float64Array))
        throw new SearchError("saveCalibration takes host arrays; download device buffers first");
      tensors.set(`layers.${i}.${p}`, fromFloats(x, [s.batch, s.seqLen, h, s.headDim], dtype));
    }
  }
  writeSafetensors(path, tensors, { format: "tilec-calibration", layout: "bshd", ...metadata });
}
