// safetensors (Hugging Face's tensor file format), read and written the way the reference Rust/Python
// implementation does, so files round-trip with `safetensors.torch.save_file` / `load_file`:
//
//   8 bytes   N, unsigned little-endian 64-bit: the header's length
//   N bytes   UTF-8 JSON object: {"__metadata__": {str: str}?, NAME: {"dtype", "shape", "data_offsets": [b, e]}}
//             written compact, padded with spaces (0x20) to a multiple of 8 so every tensor starts aligned
//   rest      the data buffer; offsets are relative to its start, tensors are contiguous, little-endian, C order
//
// Readers validate everything the reference validates (header size ≤ 100 MB, UTF-8, JSON, known dtype,
// offsets contiguous from 0 and covering the buffer exactly, byte length = elements × dtype size) and say
// which tensor is wrong and how. `SafetensorsReader` reads one tensor at a time with positioned reads, so
// multi-GB checkpoints never need to fit in memory.
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { endianness } from "node:os";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../half.ts";

/** Element types of the format, in the reference's order (ascending alignment; the writer sorts by it). */
export const DTYPES = [
  "BOOL",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "C64",
  "F64",
  "I64",
  "U64",
] as const;
export type Dtype = (typeof DTYPES)[number];

const BITS: Record<Dtype, number> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
};

/** The reference rejects larger headers (a guard against hostile files). */
export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  override readonly name = "SafetensorsError";
}

export interface TensorInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** [begin, end) relative to the data buffer. */
  readonly dataOffsets: readonly [number, number];
}

export interface Header {
  /** In data-offset order. */
  readonly tensors: readonly TensorInfo[];
  readonly metadata?: Readonly<Record<string, string>>;
  /** Absolute file offset of the data buffer: 8 + header length. */
  readonly dataStart: number;
}

/** A tensor's raw little-endian bytes. `data` starts at a fresh, aligned ArrayBuffer when read. */
export interface RawTensor {
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

export function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && (DTYPES as readonly string[]).includes(s);
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes of `shape` elements of `dtype`; sub-byte types must fill whole bytes (as the reference demands). */
export function byteLength(dtype: Dtype, shape: readonly number[]): number {
  const bits = elementCount(shape) * BITS[dtype];
  if (!Number.isSafeInteger(bits)) throw new SafetensorsError(`shape [${shape}] of ${dtype} is too large`);
  if (bits % 8)
    throw new SafetensorsError(`${elementCount(shape)} elements of ${dtype} do not fill whole bytes`);
  return bits / 8;
}

/**
 * Parses and validates a header. `prefix` holds at least the first 8 + N bytes of the file;
 * `fileSize` is the whole file's length (the data must end exactly there). `source` names the file in errors.
 */
export function parseHeader(prefix: Uint8Array, fileSize: number, source = "<buffer>"): Header {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${source}: ${msg}`);
  };
  if (prefix.length < 8 || fileSize < 8)
    fail(`${fileSize} bytes is too short for a safetensors file (8-byte header length missing)`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  const n64 = view.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES))
    fail(
      `header length ${n64} exceeds the format's ${MAX_HEADER_BYTES}-byte limit: not a safetensors file, or corrupt`,
    );
  const n = Number(n64);
  if (8 + n > fileSize)
    fail(`header length ${n} runs past the end of the file (${fileSize} bytes): the file is truncated`);
  if (prefix.length < 8 + n) fail(`internal: ${prefix.length} prefix bytes given, header needs ${8 + n}`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(prefix.subarray(8, 8 + n));
  } catch {
    return fail("header is not valid UTF-8");
  }
  if (!text.startsWith("{")) fail(`header must start with '{', found ${JSON.stringify(text.slice(0, 16))}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    return fail("header is not a JSON object");
  let metadata: Record<string, string> | undefined;
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry))
        fail(`__metadata__ must be an object of string values`);
      for (const [k, v] of Object.entries(entry as object))
        if (typeof v !== "string") fail(`__metadata__["${k}"] must be a string, found ${JSON.stringify(v)}`);
      metadata = entry as Record<string, string>;
      continue;
    }
    tensors.push(tensorInfo(name, entry, fail));
  }
  tensors.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let at = 0;
  for (const t of tensors) {
    const [begin, end] = t.dataOffsets;
    if (begin !== at)
      fail(
        `tensor "${t.name}" starts at data offset ${begin}, expected ${at}: tensors must be contiguous from 0 without gaps or overlap`,
      );
    const want = byteLength(t.dtype, t.shape);
    if (end - begin !== want)
      fail(
        `tensor "${t.name}": data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${t.dtype} [${t.shape.join(", ")}] needs ${want}`,
      );
    at = end;
  }
  if (8 + n + at !== fileSize)
    fail(
      `the tensors cover ${at} data bytes but the file has ${fileSize - 8 - n} after the header: ${
        8 + n + at > fileSize ? "the file is truncated" : "trailing bytes not covered by any tensor"
      }`,
    );
  return { tensors, metadata, dataStart: 8 + n };
}

function tensorInfo(name: string, entry: unknown, fail: (msg: string) => never): TensorInfo {
  if (typeof entry !== "object" || entry === null) return fail(`tensor "${name}" must be an object`);
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (!isDtype(dtype))
    fail(`tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}; known: ${DTYPES.join(", ")}`);
  const natural = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  if (!Array.isArray(shape) || !shape.every(natural))
    fail(`tensor "${name}": shape must be an array of non-negative integers, found ${JSON.stringify(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(natural) || offsets[1] < offsets[0])
    fail(
      `tensor "${name}": data_offsets must be [begin, end] with 0 ≤ begin ≤ end, found ${JSON.stringify(offsets)}`,
    );
  return { name, dtype: dtype as Dtype, shape: shape as number[], dataOffsets: [offsets![0], offsets![1]] };
}

export interface SafetensorsFile {
  readonly tensors: Map<string, RawTensor>;
  readonly metadata?: Readonly<Record<string, string>>;
}

/** A whole file already in memory; each tensor's bytes are copied out (aligned). */
export function parseSafetensors(bytes: Uint8Array, source = "<buffer>"): SafetensorsFile {
  const header = parseHeader(bytes, bytes.length, source);
  const tensors = new Map<string, RawTensor>();
  for (const t of header.tensors) {
    const [b, e] = t.dataOffsets;
    const data = bytes.slice(header.dataStart + b, header.dataStart + e);
    tensors.set(t.name, { dtype: t.dtype, shape: t.shape, data });
  }
  return { tensors, metadata: header.metadata };
}

/** Every tensor of a file (read tensor by tensor). */
export function loadSafetensors(path: string): SafetensorsFile {
  const reader = SafetensorsReader.open(path);
  try {
    return { tensors: new Map(reader.names().map((n) => [n, reader.read(n)])), metadata: reader.metadata };
  } finally {
    reader.close();
  }
}

// One readSync call is capped below 2 GiB on some platforms; read large tensors in pieces.
const READ_CHUNK = 1 << 30;

/** Reads tensors of a file one at a time with positioned reads (no mmap, no whole-file buffer). */
export class SafetensorsReader {
  private fd: number | undefined;
  private readonly byName: Map<string, TensorInfo>;

  private constructor(
    fd: number,
    readonly path: string,
    readonly header: Header,
  ) {
    this.fd = fd;
    this.byName = new Map(header.tensors.map((t) => [t.name, t]));
  }

  static open(path: string): SafetensorsReader {
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      let prefix = new Uint8Array(Math.min(8, size));
      readFully(fd, prefix, 0);
      // parseHeader rejects a bad length field before it needs the JSON, so read that only when it fits.
      const n = size >= 8 ? new DataView(prefix.buffer).getBigUint64(0, true) : 0n;
      if (size >= 8 && n <= BigInt(MAX_HEADER_BYTES) && 8 + Number(n) <= size) {
        prefix = new Uint8Array(8 + Number(n));
        readFully(fd, prefix, 0);
      }
      return new SafetensorsReader(fd, path, parseHeader(prefix, size, path));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  get metadata(): Readonly<Record<string, string>> | undefined {
    return this.header.metadata;
  }

  names(): string[] {
    return this.header.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.byName.get(name);
    if (!t) {
      const near = this.names()
        .filter((n) => n.includes(name.split(".").pop() ?? name))
        .slice(0, 5);
      throw new SafetensorsError(
        `${this.path}: no tensor "${name}"${near.length ? `; similar: ${near.join(", ")}` : ""} (${this.header.tensors.length} tensors in the file)`,
      );
    }
    return t;
  }

  /** The tensor's raw bytes in a fresh ArrayBuffer (aligned for any typed array). */
  read(name: string): RawTensor {
    if (this.fd === undefined) throw new SafetensorsError(`${this.path}: reader is closed`);
    const t = this.info(name);
    const [b, e] = t.dataOffsets;
    const data = new Uint8Array(e - b);
    readFully(this.fd, data, this.header.dataStart + b);
    return { dtype: t.dtype, shape: t.shape, data };
  }

  readFloat32(name: string): Float32Array {
    return toFloat32(this.read(name));
  }

  readFloat64(name: string): Float64Array {
    return toFloat64(this.read(name));
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function readFully(fd: number, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.length) {
    const got = readSync(fd, into, done, Math.min(READ_CHUNK, into.length - done), position + done);
    if (got === 0) throw new SafetensorsError(`unexpected end of file at byte ${position + done}`);
    done += got;
  }
}

// Typed arrays use the host's byte order and the format is little-endian.
const littleEndianHost = endianness() === "LE";

/** The tensor's bytes as (buffer, byteOffset) usable by typed arrays of its element size; copies if misaligned. */
function typedSource(t: RawTensor): [ArrayBuffer, number] {
  if (!littleEndianHost) throw new SafetensorsError("typed-array decoding needs a little-endian host");
  const { data } = t;
  const size = Math.max(1, BITS[t.dtype] / 8);
  if (data.byteOffset % size === 0 && data.buffer instanceof ArrayBuffer)
    return [data.buffer, data.byteOffset];
  return [data.slice().buffer as ArrayBuffer, 0];
}

/** Decodes a floating-point or integer tensor to float64 (I64/U64 beyond 2^53 lose precision). F64 tensors
 *  come back as a view of `t.data` (no copy). */
export function toFloat64(t: RawTensor): Float64Array {
  const n = elementCount(t.shape);
  if (t.dtype === "F64") return new Float64Array(...typedSource(t), n);
  const out = new Float64Array(n);
  decodeInto(t, out, n);
  return out;
}

export function toFloat32(t: RawTensor): Float32Array {
  const n = elementCount(t.shape);
  if (t.dtype === "F32") return new Float32Array(...typedSource(t), n);
  const out = new Float32Array(n);
  decodeInto(t, out, n);
  return out;
}

function decodeInto(t: RawTensor, out: Float32Array | Float64Array, n: number): void {
  const [buf, at] = typedSource(t);
  switch (t.dtype) {
    case "BF16":
    case "F16": {
      const bits = new Uint16Array(buf, at, n);
      const conv = t.dtype === "BF16" ? bf16BitsToF32 : f16BitsToF32;
      for (let i = 0; i < n; i++) out[i] = conv(bits[i]!);
      return;
    }
    case "I64":
    case "U64": {
      const ints = t.dtype === "I64" ? new BigInt64Array(buf, at, n) : new BigUint64Array(buf, at, n);
      for (let i = 0; i < n; i++) out[i] = Number(ints[i]!);
      return;
    }
    default: {
      const Ctor = PLAIN[t.dtype];
      if (!Ctor) throw new SafetensorsError(`decoding ${t.dtype} to floats is not supported`);
      out.set(new Ctor(buf, at, n));
    }
  }
}

type PlainArray = new (b: ArrayBuffer, o: number, n: number) => ArrayLike<number>;
const PLAIN: Partial<Record<Dtype, PlainArray>> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  I16: Int16Array,
  U16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  F64: Float64Array,
};

/** Encodes numbers as a tensor of a float dtype (BF16/F16 rounded to nearest even). */
export function fromFloats(
  values: ArrayLike<number>,
  shape: readonly number[],
  dtype: "F64" | "F32" | "F16" | "BF16",
): RawTensor {
  const n = elementCount(shape);
  if (values.length !== n)
    throw new SafetensorsError(
      `${values.length} values do not fill shape [${shape.join(", ")}] (${n} elements)`,
    );
  if (!littleEndianHost) throw new SafetensorsError("typed-array encoding needs a little-endian host");
  let data: Uint8Array;
  if (dtype === "F64") data = new Uint8Array(Float64Array.from(values).buffer);
  else if (dtype === "F32") data = new Uint8Array(Float32Array.from(values).buffer);
  else {
    const conv = dtype === "BF16" ? f32ToBf16Bits : f32ToF16Bits;
    const bits = new Uint16Array(n);
    for (let i = 0; i < n; i++) bits[i] = conv(values[i]!);
    data = new Uint8Array(bits.buffer);
  }
  return { dtype, shape: [...shape], data };
}

export type TensorMap = ReadonlyMap<string, RawTensor> | Readonly<Record<string, RawTensor>>;

interface Prepared {
  readonly header: Uint8Array;
  readonly order: readonly [string, RawTensor][];
}

// As the reference's `prepare`: descending dtype alignment (the DTYPES order), then name; compact JSON
// with __metadata__ first (keys sorted here, so the bytes are deterministic); spaces to a multiple of 8.
function prepare(tensors: TensorMap, metadata?: Readonly<Record<string, string>>): Prepared {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const rank = (d: Dtype) => DTYPES.indexOf(d);
  entries.sort(([an, a], [bn, b]) => rank(b.dtype) - rank(a.dtype) || (an < bn ? -1 : an > bn ? 1 : 0));
  const json: Record<string, unknown> = {};
  if (metadata) {
    const sorted: Record<string, string> = {};
    for (const k of Object.keys(metadata).sort()) {
      if (typeof metadata[k] !== "string") throw new SafetensorsError(`metadata "${k}" must be a string`);
      sorted[k] = metadata[k]!;
    }
    json.__metadata__ = sorted;
  }
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === "__metadata__")
      throw new SafetensorsError(`"__metadata__" is reserved and cannot name a tensor`);
    if (!isDtype(t.dtype)) throw new SafetensorsError(`tensor "${name}": unknown dtype ${String(t.dtype)}`);
    const want = byteLength(t.dtype, t.shape);
    if (t.data.byteLength !== want)
      throw new SafetensorsError(
        `tensor "${name}": ${t.data.byteLength} bytes given, ${t.dtype} [${t.shape.join(", ")}] needs ${want}`,
      );
    // Key order matters for byte-compatibility with the reference writer: dtype, shape, data_offsets.
    json[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + want] };
    offset += want;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(text.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES)
    throw new SafetensorsError(`header of ${padded} bytes exceeds the format's limit`);
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + text.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(text, 8);
  return { header, order: entries };
}

/** The whole file as bytes (for small files and tests). */
export function serializeSafetensors(
  tensors: TensorMap,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const { header, order } = prepare(tensors, metadata);
  const out = new Uint8Array(header.length + order.reduce((s, [, t]) => s + t.data.byteLength, 0));
  out.set(header, 0);
  let at = header.length;
  for (const [, t] of order) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

/** Writes tensor by tensor (no whole-file buffer). */
export function writeSafetensors(
  path: string,
  tensors: TensorMap,
  metadata?: Readonly<Record<string, string>>,
): void {
  const { header, order } = prepare(tensors, metadata);
  const fd = openSync(path, "w");
  try {
    writeAll(fd, header);
    for (const [, t] of order) writeAll(fd, t.data);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, Math.min(READ_CHUNK, bytes.length - done));
}
