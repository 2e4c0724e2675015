// safetensors reader/writer: byte layout checked against the reference implementation's own test vectors,
// round trips of every decodable dtype, the streaming reader, each malformed-file error, and (where Python's
// `safetensors` and numpy are installed) files exchanged with Python in both directions.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  fromFloats,
  parseSafetensors,
  SafetensorsReader,
  serializeSafetensors,
  toFloat32,
  toFloat64,
  writeSafetensors,
  type RawTensor,
} from "../../runtime/io/safetensors.ts";

const dir = mkdtempSync(join(tmpdir(), "tilec-safetensors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));
const u64 = (n: number) => [n, 0, 0, 0, 0, 0, 0, 0];
const f32Bytes = (xs: number[]) => [...new Uint8Array(Float32Array.from(xs).buffer)];

/** A file from a raw header string and data bytes (for malformed inputs). */
function rawFile(header: string, data: number[] = [], declared?: number): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declared ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

describe("safetensors layout (the reference implementation's test vectors)", () => {
  it("one F32 tensor: compact JSON whose length is already a multiple of 8, no padding", () => {
    const t = fromFloats([0, 1, 2, 3, 4, 5], [1, 2, 3], "F32");
    const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    expect(header.length).toBe(64);
    const want = [...u64(64), ...ascii(header), ...f32Bytes([0, 1, 2, 3, 4, 5])];
    expect([...serializeSafetensors({ "attn.0": t })]).toEqual(want);
  });

  it("pads the header with spaces to a multiple of 8 so data starts aligned", () => {
    const t = fromFloats([0, 1, 2, 3, 4, 5], [1, 1, 2, 3], "F32");
    const header = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
    expect(header.length).toBe(65);
    const want = [...u64(72), ...ascii(header + " ".repeat(7)), ...f32Bytes([0, 1, 2, 3, 4, 5])];
    expect([...serializeSafetensors({ attn0: t })]).toEqual(want);
  });

  it("empty file, and __metadata__ first", () => {
    expect([...serializeSafetensors({})]).toEqual([...u64(8), ...ascii("{}      ")]);
    expect([...serializeSafetensors({}, { framework: "pt" })]).toEqual([
      ...u64(40),
      ...ascii('{"__metadata__":{"framework":"pt"}}     '),
    ]);
  });

  it("orders tensors by descending dtype alignment, then name (as Python's save_file)", () => {
    const bytes = serializeSafetensors({
      b: fromFloats([1], [1], "BF16"),
      a: fromFloats([1], [1], "BF16"),
      z: fromFloats([1], [1], "F64"),
      m: fromFloats([1, 2], [2], "F32"),
    });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const json = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(Object.keys(json)).toEqual(["z", "m", "a", "b"]);
    expect(json.z.data_offsets).toEqual([0, 8]);
    expect(json.b.data_offsets).toEqual([18, 20]);
    expect(serializeSafetensors({ a: fromFloats([1], [1], "F32") }, { b: "2", a: "1" })).toEqual(
      serializeSafetensors({ a: fromFloats([1], [1], "F32") }, { a: "1", b: "2" }),
    );
  });
});

describe("safetensors round trip", () => {
  const values = [0, 1, -2.5, 3.140625, 65504, -1e-3, 7];
  const cases: [RawTensor["dtype"], RawTensor][] = [
    ["F64", fromFloats(values, [7], "F64")],
    ["F32", fromFloats(values, [7, 1], "F32")],
    ["F16", fromFloats(values, [1, 7], "F16")],
    ["BF16", fromFloats(values, [7], "BF16")],
    [
      "I64",
      { dtype: "I64", shape: [3], data: new Uint8Array(BigInt64Array.from([-5n, 0n, 1n << 40n]).buffer) },
    ],
    ["I32", { dtype: "I32", shape: [2], data: new Uint8Array(Int32Array.from([-7, 9]).buffer) }],
    ["U8", { dtype: "U8", shape: [2, 2], data: Uint8Array.from([1, 2, 3, 255]) }],
    ["BOOL", { dtype: "BOOL", shape: [2], data: Uint8Array.from([0, 1]) }],
  ];

  it("through bytes and through a file with the streaming reader", () => {
    const tensors = Object.fromEntries(cases.map(([d, t]) => [`t.${d}`, t]));
    tensors["scalar"] = fromFloats([42], [], "F32");
    tensors["empty"] = fromFloats([], [0, 3], "F32");
    const meta = { format: "pt", note: 'ünïcode "quoted"\n' };
    const parsed = parseSafetensors(serializeSafetensors(tensors, meta));
    expect(parsed.metadata).toEqual(meta);
    const path = join(dir, "round.safetensors");
    writeSafetensors(path, tensors, meta);
    expect(readFileSync(path)).toEqual(Buffer.from(serializeSafetensors(tensors, meta)));
    const reader = SafetensorsReader.open(path);
    try {
      expect(reader.names().sort()).toEqual(Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        for (const got of [parsed.tensors.get(name)!, reader.read(name)]) {
          expect(got.dtype).toBe(t.dtype);
          expect(got.shape).toEqual(t.shape);
          expect([...got.data]).toEqual([...t.data]);
        }
      }
      expect([...reader.readFloat64("t.I64")]).toEqual([-5, 0, 2 ** 40]);
      expect([...reader.readFloat32("scalar")]).toEqual([42]);
      expect(reader.readFloat32("empty").length).toBe(0);
      expect(() => reader.read("t.F33")).toThrow(/no tensor "t\.F33"/);
    } finally {
      reader.close();
    }
  });

  it("decodes half types with round to nearest even", () => {
    expect([...toFloat64(fromFloats(values, [7], "F16"))]).toEqual([
      0, 1, -2.5, 3.140625, 65504, -0.0010004043579101562, 7,
    ]);
    expect([...toFloat32(fromFloats([1 + 2 ** -8, 1 + 3 * 2 ** -8], [2], "BF16"))]).toEqual([1, 1 + 2 ** -6]);
  });

  it("decodes tensors whose bytes sit at an odd offset (copying them)", () => {
    const t = fromFloats([1.5, -2], [2], "F32");
    const shifted = new Uint8Array(9);
    shifted.set(t.data, 1);
    expect([...toFloat32({ ...t, data: shifted.subarray(1) })]).toEqual([1.5, -2]);
  });
});

describe("malformed safetensors files", () => {
  const good = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const cases: [string, Uint8Array, RegExp][] = [
    ["shorter than 8 bytes", Uint8Array.from([1, 2, 3]), /too short/],
    ["header length past the file", rawFile(good, [], 1000), /runs past the end of the file/],
    ["header over 100 MB", rawFile(good, [], 200_000_000), /exceeds the format's 100000000-byte limit/],
    ["not UTF-8", rawFile('{"\xff"}').map((b, i) => (i === 10 ? 0xff : b)), /not valid UTF-8/],
    ["not JSON", rawFile('{"x": [1,'), /not valid JSON/],
    ["not an object", rawFile("[1, 2]  "), /must start with '\{'/],
    [
      "unknown dtype",
      rawFile('{"x":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', new Array(16).fill(0)),
      /unknown dtype "F128"/,
    ],
    [
      "negative shape",
      rawFile('{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', [0, 0, 0, 0]),
      /non-negative integers/,
    ],
    [
      "bytes don't match shape",
      rawFile('{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', new Array(8).fill(0)),
      /hold 8 bytes, but F32 \[3\] needs 12/,
    ],
    [
      "gap between tensors",
      rawFile(
        '{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"y":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}',
        [0, 0, 0],
      ),
      /"y" starts at data offset 2, expected 1/,
    ],
    ["truncated data", rawFile(good, [0, 0, 0, 0]), /file is truncated/],
    ["trailing bytes", rawFile(good, new Array(12).fill(0)), /trailing bytes/],
    ["non-string metadata", rawFile('{"__metadata__":{"n":1}}'), /__metadata__\["n"\] must be a string/],
  ];
  for (const [what, bytes, message] of cases)
    it(what, () => {
      expect(() => parseSafetensors(bytes, "bad.safetensors")).toThrow(message);
      const path = join(dir, "bad.safetensors");
      writeFileSync(path, bytes);
      expect(() => SafetensorsReader.open(path)).toThrow(message);
    });

  it("writer refuses data that does not match dtype × shape, and the reserved name", () => {
    expect(() => serializeSafetensors({ x: { dtype: "F32", shape: [3], data: new Uint8Array(8) } })).toThrow(
      /8 bytes given, F32 \[3\] needs 12/,
    );
    expect(() => serializeSafetensors({ __metadata__: fromFloats([1], [1], "F32") })).toThrow(/reserved/);
  });
});

const python = spawnSync("python3", ["-c", "import safetensors.numpy, numpy"], { encoding: "utf8" });
const pyNote = python.status === 0 ? "" : " (skipped: python3 with safetensors and numpy not installed)";

describe.skipIf(python.status !== 0)(`files exchanged with Python's safetensors${pyNote}`, () => {
  it("reads what Python writes, and Python reads what tilec writes", () => {
    const fromPy = join(dir, "py.safetensors");
    const fromTs = join(dir, "ts.safetensors");
    writeSafetensors(
      fromTs,
      {
        "layers.0.q": fromFloats([1, 2, 3, 4, 5, 6], [1, 3, 1, 2], "F32"),
        h: fromFloats([0.5, -1.25], [2], "F16"),
        d: fromFloats([Math.PI], [1], "F64"),
        i: { dtype: "I64", shape: [2], data: new Uint8Array(BigInt64Array.from([3n, -4n]).buffer) },
      },
      { framework: "tilec" },
    );
    const script = String.raw`
import sys, numpy as np
from safetensors.numpy import save_file, load_file, save
from safetensors import safe_open
src, dst = sys.argv[1], sys.argv[2]
t = load_file(src)
assert t["layers.0.q"].shape == (1, 3, 1, 2) and t["layers.0.q"].dtype == np.float32, t["layers.0.q"]
assert t["layers.0.q"].ravel().tolist() == [1, 2, 3, 4, 5, 6]
assert t["h"].dtype == np.float16 and t["h"].tolist() == [0.5, -1.25]
assert t["d"].tolist() == [np.pi] and t["i"].tolist() == [3, -4]
with safe_open(src, "np") as f: assert f.metadata() == {"framework": "tilec"}
out = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5, -2], dtype=np.float16), "z": np.array([7], dtype=np.int64)}
save_file(out, dst, metadata={"format": "np"})
sys.stdout.buffer.write(save(out, metadata={"format": "np"}))
`;
    const run = spawnSync("python3", ["-c", script, fromTs, fromPy]);
    expect(run.stderr.toString()).toBe("");
    expect(run.status).toBe(0);
    // Python's bytes for the same tensors equal ours, byte for byte.
    const ours = serializeSafetensors(
      {
        w: fromFloats([0, 1, 2, 3, 4, 5], [2, 3], "F32"),
        b: fromFloats([1.5, -2], [2], "F16"),
        z: { dtype: "I64", shape: [1], data: new Uint8Array(BigInt64Array.from([7n]).buffer) },
      },
      { format: "np" },
    );
    expect(Buffer.from(ours).equals(run.stdout)).toBe(true);
    const reader = SafetensorsReader.open(fromPy);
    try {
      expect(reader.metadata).toEqual({ format: "np" });
      expect([...reader.readFloat32("w")]).toEqual([0, 1, 2, 3, 4, 5]);
      expect(reader.info("w").shape).toEqual([2, 3]);
      expect([...reader.readFloat64("b")]).toEqual([1.5, -2]);
      expect([...reader.readFloat64("z")]).toEqual([7]);
    } finally {
      reader.close();
    }
  });
});
