"""A stand-in for the few torch calls tilec_kernels.Kernel makes, with fake device pointers, and a driver
that records launches: test/pack/build.test.ts runs the PyTorch loader's forward and backward through
them on a machine without torch or a GPU and compares every launch with tilec's packLaunch.

    python3 fake_torch.py PACKAGE_DIR KERNEL CASES_JSON  ->  JSON on stdout
"""

import contextlib
import json
import struct
import sys
import types


class DType:
    def __init__(self, name, size):
        self.name, self.size = name, size

    def __repr__(self):
        return f"torch.{self.name}"


class Device:
    def __init__(self, type="cuda", index=0):
        self.type, self.index = type, index

    def __eq__(self, other):
        return (self.type, self.index) == (other.type, other.index)

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return f"{self.type}:{self.index}"


ALLOCS = []
_next = [0x7F0000000000]


def _alloc(nbytes):
    p = _next[0]
    _next[0] += max(0x1000, (nbytes + 0xFFF) & ~0xFFF)
    return p


def _contiguous(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.insert(0, acc)
        acc *= n
    return tuple(strides)


class Tensor:
    def __init__(self, shape, dtype, strides=None, ptr=None, record=True):
        self.shape = tuple(shape)
        self.dtype = dtype
        self._strides = tuple(strides) if strides else _contiguous(self.shape)
        n = self.numel()
        self._ptr = ptr if ptr is not None else (_alloc(n * dtype.size) if n else 0)
        self.device = Device()
        if ptr is None and record:
            ALLOCS.append({"shape": list(self.shape), "dtype": dtype.name, "ptr": self._ptr})

    def stride(self, i=None):
        return self._strides if i is None else self._strides[i]

    def dim(self):
        return len(self.shape)

    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def data_ptr(self):
        return self._ptr

    def element_size(self):
        return self.dtype.size

    def copy_(self, other):
        return self

    def contiguous(self):
        return self if self._strides == _contiguous(self.shape) else Tensor(self.shape, self.dtype)

    def to(self, device):  # a host -> device upload (plans)
        return Tensor(self.shape, self.dtype, record=False)

    def __getitem__(self, s):
        return Tensor((len(range(*s.indices(self.shape[0]))),), self.dtype, record=False)


torch = types.ModuleType("torch")
torch.bfloat16, torch.float16, torch.float32, torch.int32 = (
    DType("bfloat16", 2), DType("float16", 2), DType("float32", 4), DType("int32", 4))  # fmt: skip
torch.empty = lambda shape, dtype=None, device=None: Tensor((shape,) if isinstance(shape, int) else shape, dtype)
torch.frombuffer = lambda buf, dtype: Tensor((len(buf) // dtype.size,), dtype, record=False)
torch.cuda = types.SimpleNamespace(
    init=lambda: None,
    current_device=lambda: 0,
    get_device_capability=lambda ordinal: (9, 0),
    current_stream=lambda device: types.SimpleNamespace(cuda_stream=0x5151),
)
sys.modules["torch"] = torch


def fake_map(address, a):
    words = [address, *a["dims"], *a["stridesBytes"], *a["box"], a["swizzleBytes"], a["elementBytes"]]
    return struct.pack(f"<{len(words)}Q", *words).ljust(128, b"\0")


class Driver:
    def __init__(self):
        self.launches = []

    @contextlib.contextmanager
    def on(self, ordinal):
        yield

    def load(self, image):
        return "module"

    def function(self, module, entry):
        return entry

    def set_shared(self, fn, n):
        pass

    def encode_tensor_map(self, address, args):
        return fake_map(address, args)

    def launch(self, fn, grid, block, shared, stream, params):
        self.launches.append({"entry": fn, "grid": list(grid), "block": list(block), "shared": shared,
                              "stream": stream, "args": [p.hex() for p in params]})  # fmt: skip


def main():
    directory, name, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path.insert(0, directory)
    import tilec_kernels

    tilec_kernels.Kernel._image = lambda self, module, arch: b"image"
    pkg = tilec_kernels.Package(directory)
    pkg._driver = Driver()
    kern = pkg.kernels[name]
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[kern.shape["dtype"]]
    out = []
    for c in cases:
        ALLOCS.clear()
        pkg._driver.launches.clear()
        t = {r: Tensor(x["shape"], dt, x["strides"], x["ptr"]) for r, x in c["inputs"].items()}
        o, lse = kern.forward(t["q"], t["k"], t["v"], layout=c["layout"], return_lse=True)
        kern.backward(t["q"], t["k"], t["v"], o, lse, t["do"], layout=c["layout"], deterministic=c["deterministic"])
        plans = {m: p[1] for m, p in kern._loaded[0]["plans"].items()}
        out.append({"launches": pkg._driver.launches[:], "allocs": ALLOCS[:], "plans": plans})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
