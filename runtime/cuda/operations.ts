// Running an attention kernel's operations — the forward, the backward in either variant — from their
// launch descriptions (backends/cuda/launch.ts): the call's tensors checked against the kernel
// (dtype, element count for the call's shape, alignment, outputs apart from inputs), the operation's
// fp32 workspace allocated once and reused, every launch packed by packLaunch and issued on the
// call's stream. The runtime's CudaAttention and the packaged TypeScript loader (pack/runtime/cuda.ts,
// which reaches this through the runtime object it is given) both run through it, so a call is
// validated and launched one way whoever makes it.
import type { Operation } from "../../backends/cuda/launch.ts";
import type { TensorRole } from "../../backends/cuda/params.ts";
import type { TensorMapArgs } from "../../backends/cuda/tma.ts";
import { contiguousStrides, packLaunch, type BoundTensor } from "./launch.ts";

/** What this needs of a device buffer (tilec's DeviceBuffer has it). */
export interface OperationBuffer {
  readonly ptr: bigint;
  readonly dtype: string;
  readonly length: number;
  free(): void;
}

/** What this needs of a loaded module (tilec's CudaModule has it; it caches kernels by name). */
export interface OperationModule {
  getKernel(name: string): {
    launch(
      config: {
        grid: [number, number, number];
        block: [number, number, number];
        sharedBytes: number;
        stream: never;
      },
      args: { bytes: Uint8Array; align: number }[],
    ): void;
  };
}

export interface OperationDevice {
  allocElements(dtype: "fp32", length: number): OperationBuffer;
  encodeTensorMap(address: bigint, args: TensorMapArgs): Uint8Array;
}

/** A loaded module of the kernel and the device addresses of its plan's sections. */
export interface LoadedModule {
  readonly module: OperationModule;
  readonly plan: Readonly<Record<string, bigint>>;
}

/** What a kernel fixes: its name (for messages), sequence length, head dim and dtype. */
export interface KernelFacts {
  readonly name: string;
  readonly seqLen: number;
  readonly headDim: number;
  readonly dtype: string;
}

/** The call's batch, heads and kv heads, and how its [batch, seq, heads, dim] tensors are laid out. */
export interface CallShape {
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly layout?: "bshd" | "bhsd";
  readonly stream?: unknown;
}

const ELEMENT_BYTES: Record<string, number> = { bf16: 2, fp16: 2, fp32: 4, i32: 4 };

export class KernelOperations {
  /** Workspace (fp32) by tensor role, grown when a call needs more. */
  private readonly workspace = new Map<TensorRole, OperationBuffer>();
  /** TMA descriptors already encoded, by address and arguments (a driver call each otherwise). */
  private readonly maps = new Map<string, Uint8Array>();

  constructor(
    private readonly kernel: KernelFacts,
    private readonly device: OperationDevice,
    /** The module a launch names ("forward", "backward"), loaded on first use. */
    private readonly module: (name: string) => LoadedModule,
  ) {}

  /** out = attention(q, k, v); lse (fp32 [batch, heads, seq]) too when given. */
  forward(
    op: Operation,
    q: OperationBuffer,
    k: OperationBuffer,
    v: OperationBuffer,
    out: OperationBuffer,
    lse: OperationBuffer | undefined,
    call: CallShape,
  ): void {
    const { heads, kvHeads } = call;
    const tensors = this.bind(call, [
      ["q", "q", q, heads],
      ["k", "k", k, kvHeads],
      ["v", "v", v, kvHeads],
      ["o", "out", out, heads],
    ]);
    const named: [string, OperationBuffer][] = [
      ["q", q],
      ["k", k],
      ["v", v],
      ["out", out],
    ];
    if (lse) {
      this.checkLse(lse, call, "");
      tensors.lse = { ptr: lse.ptr };
      named.push(["lse", lse]);
    }
    KernelOperations.disjoint(lse ? ["out", "lse"] : ["out"], named);
    this.run(op, tensors, call);
  }

  /** dq, dk, dv from the forward's q, k, v, out, lse and the loss gradient dOut. */
  backward(
    op: Operation,
    q: OperationBuffer,
    k: OperationBuffer,
    v: OperationBuffer,
    out: OperationBuffer,
    lse: OperationBuffer,
    dOut: OperationBuffer,
    dq: OperationBuffer,
    dk: OperationBuffer,
    dv: OperationBuffer,
    call: CallShape,
  ): void {
    const { heads, kvHeads } = call;
    const args: [TensorRole, string, OperationBuffer, number][] = [
      ["q", "q", q, heads],
      ["k", "k", k, kvHeads],
      ["v", "v", v, kvHeads],
      ["o", "out", out, heads],
      ["do", "dOut", dOut, heads],
      ["dq", "dq", dq, heads],
      ["dk", "dk", dk, kvHeads],
      ["dv", "dv", dv, kvHeads],
    ];
    const tensors = this.bind(call, args);
    if (!lse)
      throw new RangeError(
        `lse is required: the forward's fp32 [${call.batch}, ${heads}, ${this.kernel.seqLen}]`,
      );
    if (typeof lse.ptr !== "bigint") throw new TypeError("lse must be a device buffer");
    this.checkLse(lse, call, "the forward's ");
    tensors.lse = { ptr: lse.ptr };
    KernelOperations.disjoint(
      ["dq", "dk", "dv"],
      [...args.map(([, n, b]) => [n, b] as [string, OperationBuffer]), ["lse", lse]],
    );
    this.run(op, tensors, call);
  }

  /** Releases the workspace (modules and plans belong to the caller). */
  free(): void {
    for (const b of this.workspace.values()) b.free();
    this.workspace.clear();
  }

  /** The call's [batch, seq, heads, dim] tensors, each checked; throws naming it and its shape. */
  private bind(
    call: CallShape,
    args: [TensorRole, string, OperationBuffer, number][],
  ): Partial<Record<TensorRole, BoundTensor>> {
    const { name, seqLen, headDim, dtype } = this.kernel;
    const layout = call.layout ?? "bshd";
    for (const [what, n] of Object.entries({ batch: call.batch, heads: call.heads, kvHeads: call.kvHeads }))
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`${what} must be a positive integer, got ${n}`);
    if (call.heads % call.kvHeads !== 0)
      throw new RangeError(`kv heads ${call.kvHeads} must divide heads ${call.heads}`);
    const tensors: Partial<Record<TensorRole, BoundTensor>> = {};
    for (const [role, what, b, h] of args) {
      if (typeof b?.ptr !== "bigint") throw new TypeError(`${what} must be a device buffer`);
      if (b.dtype !== dtype) throw new TypeError(`${what} is ${b.dtype}, kernel '${name}' takes ${dtype}`);
      const n = call.batch * seqLen * h * headDim;
      if (b.length < n) {
        const dims = layout === "bshd" ? [call.batch, seqLen, h, headDim] : [call.batch, h, seqLen, headDim];
        throw new RangeError(
          `${what} holds ${b.length} elements, needs ${n} ([${dims.join(", ")}], ${layout})`,
        );
      }
      if (b.ptr % 16n !== 0n) throw new RangeError(`${what} is not 16-byte aligned`);
      tensors[role] = { ptr: b.ptr, heads: h, strides: contiguousStrides(seqLen, h, headDim, layout) };
    }
    return tensors;
  }

  private checkLse(lse: OperationBuffer, call: CallShape, what: string): void {
    const n = call.batch * call.heads * this.kernel.seqLen;
    if (lse.dtype !== "fp32" || lse.length < n)
      throw new RangeError(
        `lse must be ${what}fp32 [${call.batch}, ${call.heads}, ${this.kernel.seqLen}] (${n} floats), got ${lse.dtype} × ${lse.length}`,
      );
  }

  /** The named outputs must not share memory with any other tensor of the call. */
  private static disjoint(outputs: string[], all: [string, OperationBuffer][]): void {
    const end = (b: OperationBuffer) => b.ptr + BigInt(b.length * (ELEMENT_BYTES[b.dtype] ?? 1));
    for (const [on, o] of all)
      if (outputs.includes(on))
        for (const [an, a] of all)
          if (on !== an && o.ptr < end(a) && a.ptr < end(o))
            throw new RangeError(`${on} overlaps ${an}: outputs need memory of their own`);
  }

  private run(op: Operation, tensors: Partial<Record<TensorRole, BoundTensor>>, call: CallShape): void {
    const { batch, heads, kvHeads } = call;
    for (const w of op.workspace)
      tensors[w.tensor] = { ptr: this.workspaceBuffer(w.tensor, batch * heads * w.elementsPerHead).ptr };
    const { seqLen, headDim } = this.kernel;
    for (const d of op.launches) {
      const m = this.module(d.module);
      const packed = packLaunch(
        d,
        { tensors, plan: m.plan, batch, heads, kvHeads, seqLen, headDim },
        (a, x) => this.encode(a, x),
      );
      m.module.getKernel(d.entry).launch(
        {
          grid: packed.grid,
          block: packed.block,
          sharedBytes: packed.sharedBytes,
          stream: (call.stream ?? null) as never,
        },
        packed.args,
      );
    }
  }

  private encode(address: bigint, args: TensorMapArgs): Uint8Array {
    const key = `${address}:${JSON.stringify(args)}`;
    let bytes = this.maps.get(key);
    if (!bytes) {
      if (this.maps.size > 256) this.maps.clear();
      bytes = this.device.encodeTensorMap(address, args);
      this.maps.set(key, bytes);
    }
    return bytes;
  }

  private workspaceBuffer(tensor: TensorRole, length: number): OperationBuffer {
    let b = this.workspace.get(tensor);
    if (!b || b.length < length) {
      b?.free();
      b = this.device.allocElements("fp32", length);
      this.workspace.set(tensor, b);
    }
    return b;
  }
}
