# tilec package loader for PyTorch (copied verbatim into every `tilec build` output).
#
# Launches a packaged kernel's cubin (or PTX) through the CUDA driver API (ctypes, libcuda) on
# torch tensors' device pointers, on torch's current stream. Needs torch and the NVIDIA driver,
# nothing of tilec. q, k, v are [batch, seq, heads, dim] (layout="bshd", default) or
# [batch, heads, seq, dim] (layout="bhsd") views with any strides whose last dimension is
# contiguous; the sequence length, head dim and dtype are the spec's, batch and heads may differ.
#
#     from out import tilec_attention                      # the build's directory, as a package
#     out = tilec_attention(q, k, v, kernel="tile_2_6")  # replaces F.scaled_dot_product_attention
import ctypes
import json
import math
import os
import struct

_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
_STRUCT_CODES = {"ptr": "<Q", "i64": "<q", "i32": "<i", "f32": "<f"}
_TMA_SWIZZLE = {0: 0, 32: 1, 64: 2, 128: 3}  # CU_TENSOR_MAP_SWIZZLE_*


def pack_params(fields, nbytes, values):
    """struct TilecParams (or any manifest-described struct) from a dict of field values."""
    buf = bytearray(nbytes)
    for f in fields:
        struct.pack_into(_STRUCT_CODES[f["type"]], buf, f["offset"], values.get(f["name"], 0))
    return bytes(buf)


def tensor_map_args(m, head_dim, seq_len, heads, batch, strides):
    """cuTensorMapEncodeTiled's dims, byte strides and box for manifest tensor map `m` over a
    2-byte tensor with element strides (batch, seq, head): 4-D over (dim, seq, heads, batch)."""
    sb, ss, sh = strides
    return [head_dim, seq_len, heads, batch], [ss * 2, sh * 2, sb * 2], [m["boxCols"], m["boxRows"], 1, 1]


class _Driver:
    """The few CUDA driver calls a launch needs."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")

    def check(self, result, what):
        if result != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(result, ctypes.byref(name))
            raise RuntimeError(f"{what} failed: {name.value.decode() if name.value else result}")

    def ensure_context(self, ordinal):
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:  # torch made no context current on this thread yet: use the primary one
            dev = ctypes.c_int()
            self.check(self.lib.cuDeviceGet(ctypes.byref(dev), ordinal), "cuDeviceGet")
            self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            self.check(self.lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    def load(self, image, entry, shared_bytes):
        module, fn = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image)), "cuModuleLoadData")
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), module, entry.encode()), "cuModuleGetFunction")
        self.check(
            self.lib.cuFuncSetAttribute(fn, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, ctypes.c_int(shared_bytes)),
            "cuFuncSetAttribute",
        )
        return module, fn

    def encode_tensor_map(self, address, dims, strides_bytes, box, swizzle_bytes):
        """A TMA descriptor (CUtensorMap, 128 bytes; the driver wants it 64-byte aligned)."""
        raw = ctypes.create_string_buffer(128 + 64)
        at = (-ctypes.addressof(raw)) % 64
        n, u64, u32 = len(dims), ctypes.c_uint64, ctypes.c_uint32
        self.check(
            self.lib.cuTensorMapEncodeTiled(
                ctypes.c_void_p(ctypes.addressof(raw) + at), ctypes.c_int(1), u32(n), ctypes.c_void_p(address),
                (u64 * n)(*dims), (u64 * (n - 1))(*strides_bytes), (u32 * n)(*box), (u32 * n)(*([1] * n)),
                ctypes.c_int(0), ctypes.c_int(_TMA_SWIZZLE[swizzle_bytes]), ctypes.c_int(2), ctypes.c_int(0),
            ),
            "cuTensorMapEncodeTiled",
        )
        return raw.raw[at : at + 128]

    def launch(self, fn, grid, block, shared_bytes, stream, *params):
        blobs = [ctypes.create_string_buffer(p, len(p)) for p in params]
        args = (ctypes.c_void_p * len(blobs))(*[ctypes.cast(b, ctypes.c_void_p) for b in blobs])
        u = ctypes.c_uint
        self.check(
            self.lib.cuLaunchKernel(
                fn, u(grid[0]), u(grid[1]), u(grid[2]), u(block[0]), u(block[1]), u(block[2]),
                u(shared_bytes), ctypes.c_void_p(stream), args, None,
            ),
            "cuLaunchKernel",
        )


class Kernel:
    """One packaged kernel, loaded per CUDA device on first use."""

    def __init__(self, package, name, spec):
        self.package, self.name, self.shape, self.cuda = package, name, spec["shape"], spec["cuda"]
        self._loaded = {}

    def _image(self, arch):
        c, d = self.cuda, self.package.dir
        same_gpu = c["compileArch"].rstrip("a") == arch
        if "cubin" in c["files"] and same_gpu:
            return open(os.path.join(d, c["files"]["cubin"]), "rb").read()
        if "ptx" in c["files"] and (same_gpu or not c["compileArch"].endswith("a")):
            return open(os.path.join(d, c["files"]["ptx"]), "rb").read() + b"\0"
        raise RuntimeError(f"kernel {self.name}: no cubin or PTX in this package runs on {arch}; rebuild with nvcc")

    def _on(self, device):
        import torch

        ordinal = device.index if device.index is not None else torch.cuda.current_device()
        if ordinal not in self._loaded:
            with torch.cuda.device(ordinal):
                torch.cuda.init()
                drv = self.package.driver
                drv.ensure_context(ordinal)
                major, minor = torch.cuda.get_device_capability(ordinal)
                module, fn = drv.load(self._image(f"sm_{major}{minor}"), self.cuda["entry"], self.cuda["launch"]["sharedBytes"])
                blob = open(os.path.join(self.package.dir, self.cuda["files"]["plan"]), "rb").read()
                ints = torch.frombuffer(bytearray(blob), dtype=torch.int32)
                plan, at = {}, 0
                for s in self.cuda["plan"]["sections"]:
                    plan[s["name"]] = ints[at : at + s["length"]].to(f"cuda:{ordinal}")
                    at += s["length"]
                self._loaded[ordinal] = (module, fn, plan)
        return self._loaded[ordinal]

    def __call__(self, q, k, v, layout="bshd", out=None, return_lse=False):
        import torch

        s = self.shape
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[s["dtype"]]
        seq_dim, head_dim = (1, 2) if layout == "bshd" else (2, 1)
        ts = []
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.dtype != dtype or not t.is_cuda or t.dim() != 4:
                raise TypeError(f"{name} must be a 4-d CUDA {dtype} tensor, got {t.dtype} {tuple(t.shape)} on {t.device}")
            if t.shape[seq_dim] != s["seqLen"] or t.shape[3] != s["headDim"]:
                raise ValueError(f"{name} has shape {tuple(t.shape)} ({layout}); kernel {self.name} takes seq {s['seqLen']}, dim {s['headDim']}")
            # 16-byte loads: the head dim contiguous, strides and the base 16-byte aligned.
            if t.stride(3) != 1 or any(x % (16 // t.element_size()) for x in t.stride()[:3]) or t.data_ptr() % 16:
                t = t.contiguous()
            ts.append(t)
        q, k, v = ts
        batch, heads, kv_heads = q.shape[0], q.shape[head_dim], k.shape[head_dim]
        if heads % kv_heads or k.shape != v.shape or k.shape[0] != batch:
            raise ValueError(f"k/v {tuple(k.shape)} do not fit q {tuple(q.shape)} (kv heads must divide heads)")
        if out is None:
            out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty(batch, heads, s["seqLen"], device=q.device, dtype=torch.float32) if return_lse else None
        _, fn, plan = self._on(q.device)
        values = {
            "q": q.data_ptr(), "k": k.data_ptr(), "v": v.data_ptr(), "o": out.data_ptr(),
            "lse": lse.data_ptr() if lse is not None else 0,
            "seq_len": s["seqLen"], "num_heads": heads, "num_kv_heads": kv_heads,
            "scale_log2": s["scale"] * math.log2(math.e),
        }
        for name, t in (("q", q), ("k", k), ("v", v), ("o", out)):
            values[f"{name}_batch_stride"] = t.stride(0)
            values[f"{name}_seq_stride"] = t.stride(seq_dim)
            values[f"{name}_head_stride"] = t.stride(head_dim)
        for sec, t in plan.items():
            values[sec] = t.data_ptr() if t.numel() else 0
        p = self.cuda["params"]
        blobs = [pack_params(p["fields"], p["bytes"], values)]
        tm = self.cuda.get("tensorMaps")
        if tm:  # sm_90a kernels: TMA descriptors of q, k, v as the second parameter
            maps = b""
            for m in tm["maps"]:
                t = {"q": q, "k": k, "v": v}[m["tensor"]]
                dims, strides_bytes, box = tensor_map_args(
                    m, s["headDim"], s["seqLen"], t.shape[head_dim], batch, (t.stride(0), t.stride(seq_dim), t.stride(head_dim))
                )
                maps += self.package.driver.encode_tensor_map(t.data_ptr(), dims, strides_bytes, box, m["swizzleBytes"])
            blobs.append(maps)
        launch = self.cuda["launch"]
        grid = (launch["grid"][0], heads, batch)
        stream = torch.cuda.current_stream(q.device).cuda_stream
        self.package.driver.launch(fn, grid, launch["block"], launch["sharedBytes"], stream, *blobs)
        return (out, lse) if return_lse else out


class Package:
    """A `tilec build` output directory: its manifest and kernels."""

    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "manifest.json")) as f:
            self.manifest = json.load(f)
        self._driver = None
        self.kernels = {n: Kernel(self, n, m) for n, m in self.manifest["kernels"].items() if "cuda" in m}

    @property
    def driver(self):
        if self._driver is None:
            self._driver = _Driver()
        return self._driver

    def attention(self, q, k, v, kernel=None, layout="bshd", out=None, return_lse=False):
        """softmax(q kᵀ / √d + mask) v with the spec's mask; `kernel` may be omitted when there is one."""
        if kernel is None:
            if len(self.kernels) != 1:
                raise ValueError(f"pass kernel=… (one of {', '.join(self.kernels)})")
            kernel = next(iter(self.kernels))
        if kernel not in self.kernels:
            raise KeyError(f"no CUDA kernel {kernel!r} in this package; it has {', '.join(self.kernels)}")
        return self.kernels[kernel](q, k, v, layout=layout, out=out, return_lse=return_lse)
