# tilec package loader for PyTorch (copied verbatim into every `tilec build` output).
#
# Launches a packaged kernel's modules (cubin, PTX, or the CUDA source through NVRTC) with the CUDA
# driver API (ctypes, libcuda) on torch tensors' device pointers, on torch's current stream. Needs torch
# and the NVIDIA driver, nothing of tilec. Every launch — forward and backward — goes through one
# generic routine, pack_launch, from the launch descriptions in manifest.json (the Python twin of
# tilec's runtime/cuda/launch.ts packLaunch), so this file knows no kernel's parameter struct.
#
# q, k, v are [batch, seq, heads, dim] (layout="bshd", default) or [batch, heads, seq, dim]
# (layout="bhsd") with any strides whose last dimension is contiguous (others are copied); sequence
# length, head dim and dtype are the kernel's, batch and heads may differ per call (kv heads must
# divide heads). The package's __init__.py registers a torch.library custom op per package with an
# autograd formula (the packaged backward kernels), so tilec_attention trains and compiles
# (torch.compile(fullgraph=True)) like any torch operator.
#
# The pure-packing helpers (pack_launch, tensor_map_args, contiguous_strides, eval_mask, Model) import
# nothing beyond the standard library; torch is imported inside the functions that need it.
import contextlib
import ctypes
import glob
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import threading
import types

_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
_STRUCT_CODES = {"ptr": "<Q", "i64": "<q", "i32": "<i", "f32": "<f"}
_TMA_SWIZZLE = {0: 0, 32: 1, 64: 2, 128: 3}  # CU_TENSOR_MAP_SWIZZLE_*
_TENSOR_MAP_BYTES = 128
_STRIDE_DIMS = {"batch": 0, "seq": 1, "head": 2}
_DTYPES = ("bf16", "fp16", "fp32")


# ---- launching from a launch description (no torch) ---------------------------------------------


def contiguous_strides(seq_len, heads, head_dim, layout):
    """Element strides (batch, seq, head) of a contiguous [b, s, h, d] ("bshd") or [b, h, s, d] tensor."""
    if layout == "bshd":
        return [seq_len * heads * head_dim, heads * head_dim, head_dim]
    if layout == "bhsd":
        return [heads * seq_len * head_dim, head_dim, seq_len * head_dim]
    raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")


def tensor_map_args(spec, batch, seq_len, heads, head_dim, strides, element_bytes=2):
    """cuTensorMapEncodeTiled's arguments for tensor map `spec` (a manifest tensorMaps entry) over a
    tensor with element strides (batch, seq, head): 4-D over (dim, seq, heads, batch), so a box past the
    sequence end reads zeros. Mirrors backends/cuda/tma.ts tensorMapArgs, including its errors."""
    strides_bytes = [strides[1] * element_bytes, strides[2] * element_bytes, strides[0] * element_bytes]
    for what, s in zip(("sequence", "head", "batch"), strides_bytes):
        if s % 16 != 0 or s <= 0 or s >= 2**40:
            raise ValueError(
                f"{spec['tensor']}: {what} stride {s} bytes is not a positive multiple of 16 below 2^40 (TMA); "
                "make the tensor contiguous"
            )
    if head_dim % spec["boxCols"] != 0:
        raise ValueError(f"{spec['tensor']}: head dim {head_dim} is not a multiple of the {spec['boxCols']}-element box")
    return {
        "dims": [head_dim, seq_len, heads, batch],
        "stridesBytes": strides_bytes,
        "box": [spec["boxCols"], spec["boxRows"], 1, 1],
        "swizzleBytes": spec["swizzleBytes"],
        "elementBytes": element_bytes,
    }


def pack_launch(description, tensors, plan_ptrs, batch, heads, kv_heads, seq_len, head_dim, encode_map):
    """The parameter struct, TMA descriptors and geometry of one launch (runtime/cuda/launch.ts packLaunch).

    tensors: role -> {"ptr": int, "strides": [batch, seq, head] element strides, "heads": int} (strides
    and heads for [batch, seq, heads, dim] tensors; a missing role packs as a null pointer).
    plan_ptrs: plan section name -> device address (0 for an empty section).
    encode_map(address, args) -> 128 bytes: a CUtensorMap for tensor_map_args' `args`.
    Returns {"grid", "block", "sharedBytes", "args": [(bytes, align), ...]}.
    """
    d = description
    entry = d["entry"]
    buf = bytearray(d["params"]["bytes"])
    sizes = {"heads": heads, "kvHeads": kv_heads, "batch": batch}
    for f in d["params"]["fields"]:
        s = f["source"]
        if "tensor" in s:
            value = (tensors.get(s["tensor"]) or {}).get("ptr", 0)
        elif "stride" in s:
            t = tensors.get(s["stride"]) or {}
            value = t["strides"][_STRIDE_DIMS[s["dim"]]] if t.get("strides") is not None else 0
        elif "plan" in s:
            if s["plan"] not in plan_ptrs:
                raise KeyError(f"{entry}: plan section '{s['plan']}' was not uploaded")
            value = plan_ptrs[s["plan"]]
        elif "shape" in s:
            value = sizes[s["shape"]]
        elif "value" in s:
            value = s["value"]
        else:
            raise ValueError(f"{entry}: field {f['name']} has an unresolved source {json.dumps(s)}")
        if f["type"] in ("i32", "i64", "ptr"):
            value = int(value)
        struct.pack_into(_STRUCT_CODES[f["type"]], buf, f["offset"], value)
    args = [(bytes(buf), 8)]
    tm = d.get("tensorMaps")
    if tm:
        maps = bytearray(tm["bytes"])
        for i, m in enumerate(tm["maps"]):
            t = tensors.get(m["tensor"])
            if t is None:
                raise KeyError(f"{entry}: tensor map '{m['name']}' needs tensor '{m['tensor']}', which the call did not pass")
            if t.get("strides") is None or t.get("heads") is None:
                raise ValueError(f"{entry}: '{m['tensor']}' has no strides")
            a = tensor_map_args(m, batch, seq_len, t["heads"], head_dim, t["strides"])
            encoded = encode_map(t["ptr"], a)
            maps[i * _TENSOR_MAP_BYTES : (i + 1) * _TENSOR_MAP_BYTES] = encoded
        args.append((bytes(maps), tm["align"]))

    def dim(g):
        return g if isinstance(g, int) else sizes[g]

    return {
        "grid": [dim(g) for g in d["grid"]],
        "block": list(d["block"]),
        "sharedBytes": d["sharedBytes"],
        "args": args,
    }


# ---- the element mask (a FlexAttention mask_mod, a dense mask; no torch needed for ints) ----------


def _is_py(x):
    return isinstance(x, (bool, int))


def _not(x):
    return (not x) if isinstance(x, bool) else ~x


def _and(xs):
    out = True
    for x in xs:
        if x is False:
            return False
        out = x if out is True else (out & x)
    return out


def _or(xs):
    out = False
    for x in xs:
        if x is True:
            return True
        out = x if out is False else (out | x)
    return out


def _select(c, a, b):
    if isinstance(c, bool):
        return a if c else b
    if isinstance(a, bool) or isinstance(b, bool) or (hasattr(a, "dtype") and str(a.dtype) == "torch.bool"):
        return _or([_and([c, a]), _and([_not(c), b])])
    return b + (a - b) * c  # c is a bool tensor: b where false, a where true


def _min(a, b):
    if _is_py(a) and _is_py(b):
        return min(a, b)
    if _is_py(a):
        return b.clamp(max=a)
    if _is_py(b):
        return a.clamp(max=b)
    return a.minimum(b)


def _max(a, b):
    if _is_py(a) and _is_py(b):
        return max(a, b)
    if _is_py(a):
        return b.clamp(min=a)
    if _is_py(b):
        return a.clamp(min=b)
    return a.maximum(b)


def token_coords(tokens, index):
    """(frame, row, col, text) of token `index` (an int or an integer tensor) in the kernel's layout;
    text tokens have frame = row = col = -1 (compiler/layout.ts tokenCoords)."""
    video = tokens["frames"] * tokens["height"] * tokens["width"]
    start = tokens["textTokens"] if tokens["textPosition"] == "before" else 0
    v = index - start
    text = _or([v < 0, v >= video])
    per_frame = tokens["height"] * tokens["width"]
    frame = v // per_frame
    in_frame = v - frame * per_frame
    row = in_frame // tokens["width"]
    col = in_frame - row * tokens["width"]
    return {
        "frame": _select(text, -1, frame),
        "row": _select(text, -1, row),
        "col": _select(text, -1, col),
        "index": index,
        "text": text,
    }


def eval_mask(mask, tokens, q, k):
    """Whether query token q attends key token k under a manifest `maskExpr`: ints give a bool, integer
    tensors (broadcasting) a bool tensor. Integer / and % are floor division and modulo (Python's)."""
    side = {"q": token_coords(tokens, q), "k": token_coords(tokens, k)}
    vals = []
    for n in mask["nodes"]:
        op = n["op"]
        a = [vals[i] for i in n.get("args", ())]
        if op in ("int", "bool"):
            v = n["value"]
        elif op == "coord":
            v = side[n["side"]][n["coord"]]
        elif op == "text":
            v = side[n["side"]]["text"]
        elif op == "add":
            v = a[0] + a[1]
        elif op == "sub":
            v = a[0] - a[1]
        elif op == "mul":
            v = a[0] * a[1]
        elif op == "div":
            v = a[0] // a[1]
        elif op == "mod":
            v = a[0] % a[1]
        elif op == "neg":
            v = -a[0]
        elif op == "abs":
            v = abs(a[0])
        elif op == "min":
            v = _min(a[0], a[1])
        elif op == "max":
            v = _max(a[0], a[1])
        elif op == "select":
            v = _select(a[0], a[1], a[2])
        elif op == "and":
            v = _and(a)
        elif op == "or":
            v = _or(a)
        elif op == "not":
            v = _not(a[0])
        elif op == "eq":
            v = a[0] == a[1]
        elif op == "ne":
            v = a[0] != a[1]
        elif op == "lt":
            v = a[0] < a[1]
        elif op == "le":
            v = a[0] <= a[1]
        elif op == "gt":
            v = a[0] > a[1]
        elif op == "ge":
            v = a[0] >= a[1]
        else:
            raise ValueError(f"unknown mask operation {op!r}")
        vals.append(v)
    return vals[mask["root"]]


# ---- the spec's model sections -----------------------------------------------------------------


class Model:
    """A spec `model` section: the kernel of each layer, and step rules that override it."""

    def __init__(self, name, m):
        self.name = name
        self.layers = m["layers"]
        self.steps = m.get("steps")
        self.layer_kernels = list(m["layerKernels"])
        self.step_overrides = [dict(o) for o in m["stepOverrides"]]
        self.missing_kernels = list(m.get("missingKernels", ()))

    def kernel_for(self, layer, step=None, steps=None):
        """The kernel layer `layer` runs at step `step`: a step of the model section's own numbering
        (0 .. steps-1), or, with `steps`, step `step` of a sampler of `steps` steps mapped onto it
        proportionally (as tilec's DiT runtime does). Without a step: the layer's kernel."""
        if not isinstance(layer, int) or not 0 <= layer < self.layers:
            raise IndexError(f"model {self.name} has layers 0..{self.layers - 1}, not {layer!r}")
        if step is not None and steps is not None:
            step = None if self.steps is None else min(self.steps - 1, (step * self.steps) // steps)
        if step is not None:
            for o in self.step_overrides:
                if o["steps"][0] <= step <= o["steps"][1] and o["layers"][0] <= layer <= o["layers"][1]:
                    return o["kernel"]
        return self.layer_kernels[layer]

    def kernels(self):
        """Every kernel the section uses."""
        return list(dict.fromkeys(self.layer_kernels + [o["kernel"] for o in self.step_overrides]))

    def __repr__(self):
        return f"Model({self.name!r}, layers={self.layers}, steps={self.steps}, kernels={self.kernels()})"


# ---- the CUDA driver and NVRTC through ctypes ----------------------------------------------------


class _Driver:
    """The few CUDA driver calls a launch needs; each device's primary context (the one torch uses)."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        self._primary = {}
        self.check(self.lib.cuInit(ctypes.c_uint(0)), "cuInit")

    def check(self, result, what):
        if result != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(result, ctypes.byref(name))
            raise RuntimeError(f"{what} failed: {name.value.decode() if name.value else result}")

    @contextlib.contextmanager
    def on(self, ordinal):
        """Runs the block with device `ordinal`'s primary context current on this thread."""
        ctx = self._primary.get(ordinal)
        if ctx is None:
            dev, ctx = ctypes.c_int(), ctypes.c_void_p()
            self.check(self.lib.cuDeviceGet(ctypes.byref(dev), ctypes.c_int(ordinal)), "cuDeviceGet")
            self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            self._primary[ordinal] = ctx
        self.check(self.lib.cuCtxPushCurrent_v2(ctx), "cuCtxPushCurrent")
        try:
            yield
        finally:
            popped = ctypes.c_void_p()
            self.lib.cuCtxPopCurrent_v2(ctypes.byref(popped))

    def load(self, image):
        module = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image)), "cuModuleLoadData")
        return module

    def function(self, module, entry):
        fn = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), module, entry.encode()), f"cuModuleGetFunction({entry})")
        return fn

    def set_shared(self, fn, shared_bytes):
        self.check(
            self.lib.cuFuncSetAttribute(fn, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, ctypes.c_int(shared_bytes)),
            "cuFuncSetAttribute",
        )

    def encode_tensor_map(self, address, args):
        """A TMA descriptor (CUtensorMap, 128 bytes; the driver wants it 64-byte aligned)."""
        raw = ctypes.create_string_buffer(_TENSOR_MAP_BYTES + 64)
        at = (-ctypes.addressof(raw)) % 64
        dims, strides_bytes, box = args["dims"], args["stridesBytes"], args["box"]
        n, u64, u32 = len(dims), ctypes.c_uint64, ctypes.c_uint32
        data_type = {2: 1, 4: 2}[args["elementBytes"]]  # CU_TENSOR_MAP_DATA_TYPE_UINT16 / UINT32, as tilec's runtime
        self.check(
            self.lib.cuTensorMapEncodeTiled(
                ctypes.c_void_p(ctypes.addressof(raw) + at), ctypes.c_int(data_type), u32(n), ctypes.c_void_p(address),
                (u64 * n)(*dims), (u64 * (n - 1))(*strides_bytes), (u32 * n)(*box), (u32 * n)(*([1] * n)),
                ctypes.c_int(0), ctypes.c_int(_TMA_SWIZZLE[args["swizzleBytes"]]), ctypes.c_int(2), ctypes.c_int(0),
            ),
            "cuTensorMapEncodeTiled",
        )  # fmt: skip
        return raw.raw[at : at + _TENSOR_MAP_BYTES]

    def launch(self, fn, grid, block, shared_bytes, stream, params):
        blobs = [ctypes.create_string_buffer(p, len(p)) for p in params]
        args = (ctypes.c_void_p * len(blobs))(*[ctypes.cast(b, ctypes.c_void_p) for b in blobs])
        u = ctypes.c_uint
        self.check(
            self.lib.cuLaunchKernel(
                fn, u(grid[0]), u(grid[1]), u(grid[2]), u(block[0]), u(block[1]), u(block[2]),
                u(shared_bytes), ctypes.c_void_p(stream), args, None,
            ),
            "cuLaunchKernel",
        )  # fmt: skip


def _find_nvrtc():
    names = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"]
    for base in [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]:
        if base:
            names += sorted(glob.glob(os.path.join(base, "lib64", "libnvrtc.so*")), reverse=True)
    for p in sys.path:  # the pip wheels torch installs (nvidia-cuda-nvrtc-cu12, ...)
        names += sorted(glob.glob(os.path.join(p, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")), reverse=True)
        names += sorted(glob.glob(os.path.join(p, "nvidia", "cu*", "lib", "libnvrtc.so*")), reverse=True)
    for n in names:
        if "builtins" in n or n.endswith(".alt"):
            continue
        try:
            return ctypes.CDLL(n)
        except OSError:
            continue
    return None


def _nvrtc_compile(source, name, arch, options):
    """A cubin of `source` for `arch` with NVRTC (cached on disk); None when NVRTC is not found."""
    lib = _find_nvrtc()
    if lib is None:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    opts = [*options, f"-arch={arch}"]
    key = hashlib.sha256(json.dumps([source, opts, major.value, minor.value]).encode()).hexdigest()
    cache = os.environ.get("TILEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tilec")
    path = os.path.join(cache, "nvrtc-py", f"{key}.cubin")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    prog = ctypes.c_void_p()

    def check(r, what):
        if r != 0:
            raise RuntimeError(f"NVRTC {what} failed on {name}: {lib.nvrtcGetErrorString(r).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None), "create")
    try:
        copts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        r = lib.nvrtcCompileProgram(prog, len(opts), copts)
        if r != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC could not compile {name} for {arch}:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
        image = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetCUBIN(prog, image), "cubin")
        data = image.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
    return data


# ---- kernels on torch tensors -------------------------------------------------------------------


def _torch_dtype(name):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _dims(layout):
    """(seq dim, head dim) of a 4-d tensor in `layout`."""
    if layout == "bshd":
        return 1, 2
    if layout == "bhsd":
        return 2, 1
    raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")


def _extent(t):
    """[first, last) byte addresses a tensor's elements occupy."""
    span = sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if n > 0) + 1 if t.numel() else 0
    return t.data_ptr(), t.data_ptr() + span * t.element_size()


def _overlaps(a, b):
    a0, a1 = _extent(a)
    b0, b1 = _extent(b)
    return a0 < b1 and b0 < a1


class Kernel:
    """One packaged kernel: its forward and (where the package has it) backward, loaded per CUDA device
    on first use."""

    def __init__(self, package, name, spec):
        self.package, self.name = package, name
        self.shape = spec["shape"]
        self.cuda = spec.get("cuda")
        self.tokens = spec.get("tokens")
        self.mask = spec.get("maskExpr")
        self.mask_source = spec.get("mask")
        ops = (self.cuda or {}).get("operations", {})
        self.has_backward = "backward" in ops and "backwardDeterministic" in ops
        self.backward_why = None if self.has_backward else (self.cuda or {}).get("backwardWhy", "the package has no backward for it")
        self._loaded = {}
        self._lock = threading.Lock()

    def __repr__(self):
        s = self.shape
        return (
            f"Kernel({self.name!r}, mask={self.mask_source!r}, seq {s['seqLen']}, heads {s['heads']}/{s['kvHeads']}, "
            f"dim {s['headDim']}, {s['dtype']}, backward={'yes' if self.has_backward else 'no'})"
        )

    # -- shapes -------------------------------------------------------------------------------------

    def check(self, q, k, v, layout="bshd"):
        """(batch, heads, kv_heads) of a call; raises naming the tensor and the expected shape. Reads
        tensor metadata only (works on torch.compile's fake tensors)."""
        s = self.shape
        dtype = _torch_dtype(s["dtype"])
        seq_dim, head_dim = _dims(layout)
        order = "[batch, seq, heads, dim]" if layout == "bshd" else "[batch, heads, seq, dim]"
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.dim() != 4 or t.dtype != dtype or t.device.type != "cuda":
                raise TypeError(
                    f"kernel {self.name}: {name} must be a 4-d CUDA {dtype} tensor {order} (layout={layout!r}), "
                    f"got {t.dtype} {tuple(t.shape)} on {t.device}"
                )
            if t.shape[seq_dim] != s["seqLen"] or t.shape[3] != s["headDim"]:
                raise ValueError(
                    f"kernel {self.name}: {name} has shape {tuple(t.shape)}; layout {layout!r} wants {order} with "
                    f"seq {s['seqLen']} and dim {s['headDim']}"
                )
            if t.device != q.device:
                raise ValueError(f"kernel {self.name}: {name} is on {t.device}, q on {q.device}: all tensors must share q's device")
        batch, heads, kv_heads = q.shape[0], q.shape[head_dim], k.shape[head_dim]
        if k.shape != v.shape or k.shape[0] != batch or heads % kv_heads != 0:
            raise ValueError(
                f"kernel {self.name}: k {tuple(k.shape)} and v {tuple(v.shape)} must be equal, with q's batch and "
                f"kv heads dividing q's {heads} heads (q {tuple(q.shape)}, layout {layout!r})"
            )
        return batch, heads, kv_heads

    def _like(self, t, name, want_shape, what, q):
        """Checks a tensor that must have `want_shape`, q's dtype and device."""
        if t.dtype != q.dtype or t.device != q.device or tuple(t.shape) != tuple(want_shape):
            raise ValueError(
                f"kernel {self.name}: {name} must be {what}: {q.dtype} {tuple(want_shape)} on {q.device}, "
                f"got {t.dtype} {tuple(t.shape)} on {t.device}"
            )

    def _lse_shape(self, batch, heads):
        return (batch, heads, self.shape["seqLen"])

    # -- tensors as a launch sees them -------------------------------------------------------------

    @staticmethod
    def _launchable(t, layout):
        """Whether the kernels can read t in place: head dim contiguous, strides and base 16-byte aligned."""
        if t.stride(3) != 1 or t.data_ptr() % 16:
            return False
        per16 = 16 // t.element_size()
        return all(n == 1 or (st > 0 and st % per16 == 0) for n, st in zip(t.shape[:3], t.stride()[:3]))

    def _input(self, t, layout):
        import torch

        if self._launchable(t, layout):
            return t
        return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)

    def _bind(self, t, heads, layout):
        """A tensor as pack_launch takes it: its address, (batch, seq, head) element strides, heads."""
        seq_dim, head_dim = _dims(layout)
        sizes = (t.shape[0], t.shape[seq_dim], t.shape[head_dim])
        strides = (t.stride(0), t.stride(seq_dim), t.stride(head_dim))
        canon = contiguous_strides(self.shape["seqLen"], heads, self.shape["headDim"], layout)
        # A dimension of size 1 is never stepped along: its stride is free, so take one TMA accepts.
        return {"ptr": t.data_ptr(), "strides": [c if n == 1 else st for n, st, c in zip(sizes, strides, canon)], "heads": heads}

    # -- modules and plans per device --------------------------------------------------------------

    def _image(self, module, arch):
        m, d = self.cuda["modules"][module], self.package.dir
        files, compile_arch = m["files"], m["compileArch"]
        same_gpu = compile_arch.rstrip("a") == arch
        if files.get("cubin") and same_gpu and os.path.exists(os.path.join(d, files["cubin"])):
            with open(os.path.join(d, files["cubin"]), "rb") as f:
                return f.read()
        if files.get("ptx") and (same_gpu or not compile_arch.endswith("a")) and os.path.exists(os.path.join(d, files["ptx"])):
            with open(os.path.join(d, files["ptx"]), "rb") as f:
                return f.read() + b"\0"
        if compile_arch.endswith("a") and not same_gpu:
            raise RuntimeError(
                f"kernel {self.name}: its {module} module is {compile_arch} code (runs on {compile_arch.rstrip('a')} only), "
                f"this GPU is {arch}: rebuild the package with --arch for this GPU"
            )
        with open(os.path.join(d, files["source"]), encoding="utf8") as f:
            source = f.read()
        target = compile_arch if compile_arch.endswith("a") else arch
        image = _nvrtc_compile(source, files["source"], target, m.get("nvrtcOptions", []))
        if image is None:
            raise RuntimeError(
                f"kernel {self.name}: no cubin or PTX of its {module} module runs on {arch}, and NVRTC (libnvrtc) "
                "was not found; rebuild the package where nvcc is installed, or install NVRTC"
            )
        return image

    def _state(self, device):
        import torch

        ordinal = device.index if device.index is not None else torch.cuda.current_device()
        with self._lock:
            st = self._loaded.get(ordinal)
            if st is None:
                torch.cuda.init()
                major, minor = torch.cuda.get_device_capability(ordinal)
                st = {"ordinal": ordinal, "arch": f"sm_{major}{minor}", "modules": {}, "functions": {}, "plans": {}}
                self._loaded[ordinal] = st
        return st

    def _plan(self, st, module):
        """Device addresses of module `module`'s plan sections (uploaded once per device)."""
        import torch

        if module not in st["plans"]:
            p = self.cuda["plans"][module]
            with open(os.path.join(self.package.dir, p["file"]), "rb") as f:
                ints = torch.frombuffer(bytearray(f.read()), dtype=torch.int32)
            tensors, ptrs, at = [], {}, 0
            for s in p["sections"]:
                t = ints[at : at + s["length"]].to(f"cuda:{st['ordinal']}")
                tensors.append(t)
                ptrs[s["name"]] = t.data_ptr() if s["length"] else 0
                at += s["length"]
            st["plans"][module] = (tensors, ptrs)
        return st["plans"][module][1]

    def _function(self, st, launch):
        drv = self.package.driver
        module = launch["module"]
        if module not in st["modules"]:
            st["modules"][module] = drv.load(self._image(module, st["arch"]))
        key = (module, launch["entry"])
        fn = st["functions"].get(key)
        if fn is None:
            fn = st["functions"][key] = [drv.function(st["modules"][module], launch["entry"]), 0]
        if launch["sharedBytes"] > fn[1]:
            drv.set_shared(fn[0], launch["sharedBytes"])
            fn[1] = launch["sharedBytes"]
        return fn[0]

    def _run(self, operation, tensors, batch, heads, kv_heads, device):
        """Every launch of `operation` on torch's current stream of `device`."""
        import torch

        op = self.cuda["operations"][operation]
        st = self._state(device)
        drv = self.package.driver
        s = self.shape
        workspace = []
        for w in op["workspace"]:
            buf = torch.empty(batch * heads * w["elementsPerHead"], dtype=torch.float32, device=device)
            workspace.append(buf)  # stream-ordered: the caching allocator reuses it only after these launches
            tensors[w["tensor"]] = {"ptr": buf.data_ptr()}
        stream = torch.cuda.current_stream(device).cuda_stream
        with drv.on(st["ordinal"]):
            for launch in op["launches"]:
                fn = self._function(st, launch)
                plan = self._plan(st, launch["module"])
                packed = pack_launch(
                    launch, tensors, plan, batch, heads, kv_heads, s["seqLen"], s["headDim"], drv.encode_tensor_map
                )
                drv.launch(fn, packed["grid"], packed["block"], packed["sharedBytes"], stream, [a for a, _ in packed["args"]])

    # -- the operations ----------------------------------------------------------------------------

    def forward(self, q, k, v, layout="bshd", out=None, return_lse=False):
        """softmax(q kᵀ·scale + mask) v. out: like q (written in place when given; then it must be
        launchable as is); lse: float32 [batch, heads, seq], natural log, -inf for rows without keys."""
        import torch

        if self.cuda is None:
            raise RuntimeError(f"kernel {self.name} has no CUDA build in this package")
        batch, heads, kv_heads = self.check(q, k, v, layout)
        q, k, v = (self._input(t, layout) for t in (q, k, v))
        if out is None:
            out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        else:
            self._like(out, "out", q.shape, "like q", q)
            if not self._launchable(out, layout):
                raise ValueError(f"kernel {self.name}: out needs a contiguous head dim and 16-byte aligned strides and base")
            for name, t in (("q", q), ("k", k), ("v", v)):
                if _overlaps(out, t):
                    raise ValueError(f"kernel {self.name}: out overlaps {name}: the output needs memory of its own")
        lse = torch.empty(self._lse_shape(batch, heads), dtype=torch.float32, device=q.device) if return_lse else None
        tensors = {
            "q": self._bind(q, heads, layout),
            "k": self._bind(k, kv_heads, layout),
            "v": self._bind(v, kv_heads, layout),
            "o": self._bind(out, heads, layout),
        }
        if lse is not None:
            tensors["lse"] = {"ptr": lse.data_ptr()}
        self._run("forward", tensors, batch, heads, kv_heads, q.device)
        return (out, lse) if return_lse else out

    def backward(self, q, k, v, out, lse, dout, layout="bshd", deterministic=False):
        """(dq, dk, dv) of the attention given the forward's q, k, v, out and lse and the loss gradient
        dout (like out). dk, dv sum over each kv head's query heads; rows without keys get zeros.
        deterministic: dQ by its own pass instead of fp32 atomics (bit-identical run to run)."""
        import torch

        if not self.has_backward:
            raise RuntimeError(f"kernel {self.name} has no backward in this package: {self.backward_why}")
        batch, heads, kv_heads = self.check(q, k, v, layout)
        self._like(out, "out", q.shape, "the forward's output (like q)", q)
        self._like(dout, "dout", q.shape, "the gradient of the output (like q)", q)
        want = self._lse_shape(batch, heads)
        if lse.dtype != torch.float32 or tuple(lse.shape) != want or lse.device != q.device:
            raise ValueError(
                f"kernel {self.name}: lse must be the forward's float32 {want} log-sum-exp on {q.device}, "
                f"got {lse.dtype} {tuple(lse.shape)} on {lse.device}"
            )
        q, k, v, out, dout = (self._input(t, layout) for t in (q, k, v, out, dout))
        lse = lse.contiguous()
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=q.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=q.device)
        tensors = {
            "q": self._bind(q, heads, layout),
            "k": self._bind(k, kv_heads, layout),
            "v": self._bind(v, kv_heads, layout),
            "o": self._bind(out, heads, layout),
            "do": self._bind(dout, heads, layout),
            "dq": self._bind(dq, heads, layout),
            "dk": self._bind(dk, kv_heads, layout),
            "dv": self._bind(dv, kv_heads, layout),
            "lse": {"ptr": lse.data_ptr()},
        }
        self._run("backwardDeterministic" if deterministic else "backward", tensors, batch, heads, kv_heads, q.device)
        return dq, dk, dv

    __call__ = forward

    # -- the mask as torch sees it -----------------------------------------------------------------

    def mask_mod(self):
        """The kernel's element mask as a FlexAttention mask_mod(b, h, q_idx, kv_idx)."""
        mask, tokens = self.mask, self.tokens

        def mask_mod(b, h, q_idx, kv_idx):
            r = eval_mask(mask, tokens, q_idx, kv_idx)
            if isinstance(r, bool):
                return (q_idx == q_idx) if r else (q_idx != q_idx)
            return r

        return mask_mod

    def dense_mask(self, device=None):
        """The element mask as a [seq, seq] bool tensor (query rows, key columns)."""
        import torch

        n = self.shape["seqLen"]
        idx = torch.arange(n, device=device)
        r = eval_mask(self.mask, self.tokens, idx.view(n, 1), idx.view(1, n))
        if isinstance(r, bool):
            return torch.full((n, n), r, dtype=torch.bool, device=device)
        return r.expand(n, n)


# ---- the package and its torch operators ---------------------------------------------------------

_REGISTRY = "_tilec_torch_operators"


def _registry():
    """Process-wide: the package behind each registered operator namespace (a package imported twice
    under different module names registers its operators once)."""
    m = sys.modules.get(_REGISTRY)
    if m is None:
        m = types.ModuleType(_REGISTRY)
        m.packages, m.ops = {}, {}
        sys.modules[_REGISTRY] = m
    return m


def op_namespace(directory, spec_hash):
    """tilec_<directory name>_<spec hash prefix>, as a C identifier (torch.library namespaces are)."""
    base = re.sub(r"[^0-9A-Za-z]+", "_", os.path.basename(os.path.normpath(directory))).strip("_").lower() or "pkg"
    return f"tilec_{base}_{(spec_hash or '0' * 8)[:8]}"


def _register(ns):
    """Registers `ns`::attention (-> out, lse) and `ns`::attention_backward (-> dq, dk, dv) with fake
    (shape-only) implementations and the forward's autograd formula."""
    import torch

    def kernel_of(name):
        return _registry().packages[ns].kernels[name]

    # Parameter names match the schemas'.

    @torch.library.custom_op(
        f"{ns}::attention",
        mutates_args=(),
        schema="(Tensor q, Tensor k, Tensor v, str kernel, str layout, bool deterministic) -> (Tensor, Tensor)",
    )
    def attention(q, k, v, kernel, layout, deterministic):
        return kernel_of(kernel).forward(q, k, v, layout=layout, return_lse=True)

    @attention.register_fake
    def _attention_fake(q, k, v, kernel, layout, deterministic):
        kern = kernel_of(kernel)
        batch, heads, _ = kern.check(q, k, v, layout)
        return q.new_empty(q.shape), q.new_empty(kern._lse_shape(batch, heads), dtype=torch.float32)

    @torch.library.custom_op(
        f"{ns}::attention_backward",
        mutates_args=(),
        schema="(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, str kernel, str layout, "
        "bool deterministic) -> (Tensor, Tensor, Tensor)",
    )
    def attention_backward(q, k, v, out, lse, dout, kernel, layout, deterministic):
        return kernel_of(kernel).backward(q, k, v, out, lse, dout, layout=layout, deterministic=deterministic)

    @attention_backward.register_fake
    def _attention_backward_fake(q, k, v, out, lse, dout, kernel, layout, deterministic):
        kern = kernel_of(kernel)
        if not kern.has_backward:
            raise RuntimeError(f"kernel {kern.name} has no backward in this package: {kern.backward_why}")
        kern.check(q, k, v, layout)
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        q, k, v, kernel, layout, deterministic = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.kernel, ctx.layout, ctx.deterministic = kernel, layout, deterministic
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, grad_lse):
        kern = kernel_of(ctx.kernel)
        if not kern.has_backward:  # tilec_attention refuses this case up front; direct op calls land here
            raise RuntimeError(f"kernel {kern.name} has no backward in this package: {kern.backward_why}")
        q, k, v, out, lse = ctx.saved_tensors
        if grad_out is None:
            return None, None, None, None, None, None
        ops = getattr(torch.ops, ns)
        dq, dk, dv = ops.attention_backward(q, k, v, out, lse, grad_out, ctx.kernel, ctx.layout, ctx.deterministic)
        need = ctx.needs_input_grad
        return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None, None, None)

    attention.register_autograd(backward, setup_context=setup_context)
    return attention, attention_backward


class Package:
    """A `tilec build` output directory: its manifest, kernels, model sections and torch operators."""

    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "manifest.json")) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != 2:
            raise RuntimeError(
                f"{directory}: package format {self.manifest.get('format')}, this loader reads format 2; rebuild with tilec build"
            )
        self._driver = None
        self.kernels = {n: Kernel(self, n, m) for n, m in self.manifest["kernels"].items() if "cuda" in m}
        self.models = {n: Model(n, m) for n, m in self.manifest.get("models", {}).items()}
        self.namespace = op_namespace(directory, self.manifest.get("specHash"))
        self._ops_error = None
        self._ops = None

    @property
    def model(self):
        """The spec's model section (the first declared when it has several; None without one)."""
        return next(iter(self.models.values()), None)

    @property
    def driver(self):
        if self._driver is None:
            self._driver = _Driver()
        return self._driver

    def register_ops(self):
        """Registers this package's torch operators (torch.ops.<namespace>.attention / attention_backward)."""
        if self._ops is not None:
            return self._ops
        import torch

        if not hasattr(torch.library, "custom_op"):
            self._ops_error = f"torch {torch.__version__} has no torch.library.custom_op (PyTorch 2.4 or newer)"
            return None
        reg = _registry()
        reg.packages[self.namespace] = self
        if self.namespace not in reg.ops:
            reg.ops[self.namespace] = _register(self.namespace)
        self._ops = getattr(torch.ops, self.namespace)
        return self._ops

    def kernel_for(self, layer, step=None, steps=None, model=None):
        """The kernel name the model section assigns to `layer` (at `step`; see Model.kernel_for)."""
        m = self.models.get(model) if model is not None else self.model
        if m is None:
            raise KeyError(
                f"this package has no model section {model!r}; it has {', '.join(self.models) or 'none'}"
                if model is not None
                else "this package's spec has no model section: pass kernel=..."
            )
        name = m.kernel_for(layer, step, steps)
        if name not in self.kernels:
            raise KeyError(f"model {m.name} runs kernel {name!r} at layer {layer}, which this package does not have (not built for CUDA)")
        return name

    def resolve(self, kernel=None, layer=None, step=None, steps=None, model=None):
        """A kernel name from kernel=, or from layer/step through the model section."""
        if kernel is not None and layer is not None:
            raise ValueError("pass kernel= or layer= (the model section's choice), not both")
        if kernel is None and layer is not None:
            return self.kernel_for(layer, step, steps, model)
        if kernel is None:
            if len(self.kernels) != 1:
                raise ValueError(f"pass kernel=... (one of {', '.join(self.kernels)}) or layer=... (the model section)")
            return next(iter(self.kernels))
        if kernel not in self.kernels:
            raise KeyError(f"no CUDA kernel {kernel!r} in this package; it has {', '.join(self.kernels)}")
        return kernel

    def attention(self, q, k, v, kernel=None, layout="bshd", deterministic=False, layer=None, step=None, steps=None,
                  model=None, return_lse=False):  # fmt: skip
        """Differentiable block-sparse attention (see the package's tilec_attention)."""
        import torch

        name = self.resolve(kernel, layer, step, steps, model)
        kern = self.kernels[name]
        if layout not in ("bshd", "bhsd"):
            raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        if needs_grad and not kern.has_backward:
            raise RuntimeError(
                f"kernel {name} has no backward in this package ({kern.backward_why}), but an input requires grad: "
                "run it under torch.no_grad() or detach the inputs"
            )
        ops = self.register_ops()
        if ops is None:
            if needs_grad:
                raise RuntimeError(f"tilec_attention needs torch.library.custom_op for autograd: {self._ops_error}")
            out, lse = kern.forward(q, k, v, layout=layout, return_lse=True)
        else:
            out, lse = ops.attention(q, k, v, name, layout, bool(deterministic))
        return (out, lse) if return_lse else out
