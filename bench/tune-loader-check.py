# The PyTorch half of the package loader check (bench/tune-bench.sh): the package's Python loader
# (ctypes + CUDA driver, cubin of the package) on the q/k/v written by bench/tune-loader-check.ts,
# compared with the TypeScript loader's and the runtime's outputs for the same inputs; then the
# Python loader timed beside FlexAttention in this one process (FlexAttention set up as in
# bench/peers.py: torch.compile'd, the Attention Tile's global frames in a tensor).
#   python3 bench/tune-loader-check.py PKG_DIR IO_DIR OUT.json
import importlib.util, json, os, sys, time
import torch
from torch_timing import median_ms  # bench/ is the script's directory, first on sys.path
from torch.nn.attention.flex_attention import flex_attention, create_block_mask

pkg_dir, io_dir, out_path = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("tilec_pkg", os.path.join(pkg_dir, "__init__.py"), submodule_search_locations=[pkg_dir])
pkg = importlib.util.module_from_spec(spec)
sys.modules["tilec_pkg"] = pkg
spec.loader.exec_module(pkg)
meta = json.load(open(os.path.join(io_dir, "meta.json")))
b, n, h, d = meta["shape"]
dev = "cuda"


def load(name):
    raw = bytearray(open(os.path.join(io_dir, name), "rb").read())
    return torch.frombuffer(raw, dtype=torch.bfloat16).view(b, n, h, d).to(dev)




q, k, v = load("q.bin"), load("k.bin"), load("v.bin")
checks = []
for row in meta["rows"]:
    name = row["kernel"]
    got = pkg.tilec_attention(q, k, v, kernel=name)
    torch.cuda.synchronize()
    ts_pkg, ts_rt = load(f"{name}.package.bin"), load(f"{name}.runtime.bin")
    # [b, h, s, d] views of the same tensors: the bhsd path (CogVideoX-style callers) must agree too
    got_bhsd = pkg.tilec_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), kernel=name, layout="bhsd").transpose(1, 2)
    c = {
        "kernel": name,
        "python_vs_ts_package_identical": bool(torch.equal(got, ts_pkg)),
        "python_vs_ts_package_max_abs": float((got.float() - ts_pkg.float()).abs().max()),
        "python_vs_runtime_max_abs": float((got.float() - ts_rt.float()).abs().max()),
        "python_vs_runtime_identical_fraction": float((got == ts_rt).float().mean()),
        "python_bhsd_view_identical": bool(torch.equal(got_bhsd, got)),
        "finite": bool(torch.isfinite(got.float()).all()),
    }
    checks.append(c)
    print(json.dumps(c), flush=True)

# Timing: the Python loader (bshd tensors, and bhsd contiguous tensors as an attention processor
# holds them) beside FlexAttention on the same [b, h, s, d] tensors, osp29 masks.
FRAME, T = 45 * 80, 8
qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))
is_global = torch.zeros(T, dtype=torch.bool, device=dev)


def mask_mod(bb, hh, qi, ki):
    fq, fk = qi // FRAME, ki // FRAME
    return (fq == fk) | is_global[fq] | is_global[fk]


flex = torch.compile(flex_attention, dynamic=False)
timing = []
t0 = time.time()
for kk in [0, 4, 3, 2, 1]:
    name = "full" if kk == 0 else f"tile_{kk}_{T - kk}"
    if name not in pkg.KERNELS:
        continue
    is_global.fill_(kk == 0)
    for i in range(kk):
        is_global[i * T // kk] = True
    bm = create_block_mask(mask_mod, 1, 1, n, n, device=dev, BLOCK_SIZE=128)
    flex_ms = median_ms(lambda: flex(qh, kh, vh, block_mask=bm))
    ours = median_ms(lambda: pkg.tilec_attention(q, k, v, kernel=name))
    ours_bhsd = median_ms(lambda: pkg.tilec_attention(qh, kh, vh, kernel=name, layout="bhsd"))
    # agreement with FlexAttention on this mask (bf16 outputs, different summation orders)
    ref = flex(qh, kh, vh, block_mask=bm).transpose(1, 2)
    rel = float((pkg.tilec_attention(q, k, v, kernel=name).float() - ref.float()).norm() / ref.float().norm())
    r = {"mask": name, "tilec_python_ms": ours, "tilec_python_bhsd_ms": ours_bhsd, "flex_ms": flex_ms, "speed_vs_flex": flex_ms / ours, "rel_err_vs_flex": rel}
    timing.append(r)
    print(json.dumps(r), flush=True)
json.dump(
    {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "checks": checks, "timing": timing, "seconds": time.time() - t0},
    open(out_path, "w"),
    indent=2,
)
ok = all(c["python_vs_ts_package_identical"] and c["python_bhsd_view_identical"] and c["finite"] for c in checks)
sys.exit(0 if ok else 1)
