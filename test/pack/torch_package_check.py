"""A `tilec build` package's PyTorch loader on a GPU: forward, backward, autograd and torch.compile.

    node bin/tilec.js build test/pack/torch_check.tile -o build-torch-check --arch sm_90
    python3 test/pack/torch_package_check.py build-torch-check check.json [--flex compiled|eager|off]

Per CUDA kernel of the package, in both layouts ([b, s, h, d] and [b, h, s, d], the latter as a transposed
view, the former as a strided slice of a fused qkv tensor):
  - forward vs a float64 masked softmax (mask from the package's own maskExpr, checked against
    FlexAttention's create_mask of the package's mask_mod), lse included (-inf on rows without keys);
  - dq, dk, dv from loss.backward() vs float64 autograd (rel. L2 < 2e-2) and vs FlexAttention's gradients
    on the same mask in the same process;
  - rows without keys: zero output and dq, never-attended keys: zero dk, dv, no NaN anywhere;
  - deterministic=True twice: bit-identical gradients;
  - gradients reach exactly the inputs that require them;
  - per-call batch and heads different from the spec's.
Once: the model section (layer=/step=), an fp32 kernel without backward (raises when an input requires
grad, runs under no_grad), argument errors, and torch.compile(fullgraph=True) of a small module (eager vs
compiled outputs and gradients). Prints PASS/FAIL/SKIP lines; writes them all as JSON.
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import time
import traceback

import torch

RESULTS = []


def record(name, ok, **info):
    status = "PASS" if ok else "FAIL"
    RESULTS.append({"check": name, "status": status, **info})
    print(f"{status} {name} {json.dumps(info, default=str)}", flush=True)


def skip(name, why):
    RESULTS.append({"check": name, "status": "SKIP", "why": why})
    print(f"SKIP {name} {why}", flush=True)


def guarded(name, fn):
    try:
        fn()
    except Exception as e:  # a check that crashes is a failure with its reason
        record(name, False, error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=6))


def load_package(path, name="tilec_check_pkg"):
    path = pathlib.Path(path).resolve()
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOL = {"bf16": 2e-2, "fp16": 2e-2, "fp32": 2e-3}


# ---- reference and FlexAttention (on [b, h, s, d]) ----


def reference(q, k, v, mask, scale):
    """float64 masked softmax attention; rows without keys give 0 and lse -inf."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, 1)
    v = v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    p = torch.exp(s - m)
    l = p.sum(-1, keepdim=True)
    out = (p @ v) / torch.where(l > 0, l, torch.ones_like(l))
    lse = torch.where(l > 0, torch.log(l) + m, torch.full_like(l, float("-inf"))).squeeze(-1)
    return out, lse


_FLEX = {}


def flex_fn(mode):
    if mode == "off":
        return None
    from torch.nn.attention.flex_attention import flex_attention

    if mode not in _FLEX:
        _FLEX[mode] = torch.compile(flex_attention, dynamic=False) if mode == "compiled" else flex_attention
    return _FLEX[mode]


def to_bhsd(x, layout):
    return x if layout == "bhsd" else x.transpose(1, 2)


def make_inputs(shape, dtype, layout, batch=None, heads=None, kv_heads=None, seed=0):
    """q, k, v in `layout`: bshd as slices of a fused [b, s, 3, h, d] tensor (strided), bhsd as
    transposed views of [b, s, h, d] tensors."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    b = batch or shape["batch"]
    h = heads or shape["heads"]
    kvh = kv_heads or shape["kvHeads"]
    n, d = shape["seqLen"], shape["headDim"]

    def rnd(*size):
        return torch.randn(*size, generator=g, device="cuda", dtype=torch.float32).to(dtype)

    if layout == "bshd" and h == kvh:
        qkv = rnd(b, n, 3, h, d)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k, v = rnd(b, n, h, d), rnd(b, n, kvh, d), rnd(b, n, kvh, d)
    if layout == "bhsd":
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    return q, k, v


# ---- per kernel ----


def check_kernel(pkg, name, layout, flex_mode, dense_masks):
    kern = pkg.package.kernels[name]
    s = kern.shape
    dt = s["dtype"]
    dtype = DTYPES[dt]
    tol = TOL[dt]
    n = s["seqLen"]
    tag = f"{name}[{layout}]"
    mask = dense_masks[name]
    has_rows = mask.any(-1)  # [n] queries with at least one key
    has_cols = mask.any(0)  # keys some query attends
    q0, k0, v0 = make_inputs(s, dtype, layout, seed=1)
    qd, kd, vd = (to_bhsd(t, layout).detach().double().requires_grad_() for t in (q0, k0, v0))
    ref_out, ref_lse = reference(qd, kd, vd, mask, s["scale"])
    g = torch.Generator(device="cuda").manual_seed(7)
    dout_bhsd = torch.randn(ref_out.shape, generator=g, device="cuda").to(dtype)
    ref_out.backward(dout_bhsd.double())
    ref_grads = [qd.grad, kd.grad, vd.grad]
    dout = dout_bhsd if layout == "bhsd" else dout_bhsd.transpose(1, 2)

    # forward
    out, lse = pkg.tilec_attention(q0, k0, v0, kernel=name, layout=layout, return_lse=True)
    torch.cuda.synchronize()
    o = to_bhsd(out, layout)
    finite = torch.isfinite(ref_lse)
    lse_err = (lse[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
    record(
        f"{tag} forward vs float64",
        rel(o, ref_out) < tol and lse_err < 1e-2 and torch.equal(torch.isinf(lse), ~finite) and tuple(out.shape) == tuple(q0.shape),
        rel_l2=rel(o, ref_out), max_abs=(o.double() - ref_out).abs().max().item(), lse_max_abs=lse_err,
    )  # fmt: skip

    if not kern.has_backward:
        return

    # backward through autograd
    q, k, v = (t.detach().clone().requires_grad_() for t in (q0, k0, v0))
    out = pkg.tilec_attention(q, k, v, kernel=name, layout=layout)
    out.backward(dout)
    grads = [to_bhsd(t.grad, layout) for t in (q, k, v)]
    errs = {f"d{x}": rel(a, b) for x, a, b in zip("qkv", grads, ref_grads)}
    record(f"{tag} dq/dk/dv vs float64", all(e < tol for e in errs.values()), **errs)
    nan = any(torch.isnan(t).any().item() for t in (out, *grads))
    dead_rows = (~has_rows).nonzero().flatten()
    dead_cols = (~has_cols).nonzero().flatten()
    zero_rows = bool((to_bhsd(out, layout)[:, :, dead_rows] == 0).all() and (grads[0][:, :, dead_rows] == 0).all())
    zero_cols = bool((grads[1][:, :, dead_cols] == 0).all() and (grads[2][:, :, dead_cols] == 0).all())
    record(
        f"{tag} rows without keys: zero out and dq; unattended keys: zero dk, dv; no NaN",
        not nan and zero_rows and zero_cols,
        rows_without_keys=len(dead_rows), keys_never_attended=len(dead_cols), nan=nan,
    )  # fmt: skip

    # vs FlexAttention on the same mask
    flex = flex_fn(flex_mode)
    if flex is None:
        skip(f"{tag} vs FlexAttention", "--flex off")
    else:
        from torch.nn.attention.flex_attention import create_block_mask

        try:
            bm = create_block_mask(kern.mask_mod(), B=None, H=None, Q_LEN=n, KV_LEN=n, device="cuda")
            fq, fk, fv = (to_bhsd(t, layout).detach().contiguous().requires_grad_() for t in (q0, k0, v0))
            fo = flex(fq, fk, fv, block_mask=bm, scale=s["scale"], enable_gqa=fk.shape[1] != fq.shape[1])
            fo.backward(dout_bhsd)
            torch.cuda.synchronize()
        except Exception as e:
            skip(f"{tag} vs FlexAttention", f"FlexAttention failed here: {type(e).__name__}: {str(e)[:300]}")
        else:
            fgrads = [fq.grad, fk.grad, fv.grad]
            flex_err = {f"flex_d{x}_vs_float64": rel(a, b) for x, a, b in zip("qkv", fgrads, ref_grads)}
            ours_vs_flex = {f"d{x}_vs_flex": rel(a, b) for x, a, b in zip("qkv", grads, fgrads)}
            record(
                f"{tag} gradients vs FlexAttention's",
                all(e < 1.5 * tol for e in ours_vs_flex.values()),
                out_vs_flex=rel(o, fo), flex_out_vs_float64=rel(fo, ref_out), **ours_vs_flex, **flex_err, **errs,
            )  # fmt: skip

    # deterministic: bit-identical twice, and close to the atomic variant
    det = []
    for _ in range(2):
        q, k, v = (t.detach().clone().requires_grad_() for t in (q0, k0, v0))
        pkg.tilec_attention(q, k, v, kernel=name, layout=layout, deterministic=True).backward(dout)
        det.append([q.grad, k.grad, v.grad])
    same = all(torch.equal(a, b) for a, b in zip(*det))
    det_err = {f"d{x}": rel(to_bhsd(a, layout), b) for x, a, b in zip("qkv", det[0], ref_grads)}
    record(f"{tag} deterministic=True twice: bit-identical", same and all(e < tol for e in det_err.values()), **det_err)

    # only the inputs that require grad get one
    q, k, v = q0.detach().clone().requires_grad_(), k0.detach().clone(), v0.detach().clone().requires_grad_()
    pkg.tilec_attention(q, k, v, kernel=name, layout=layout).float().square().sum().backward()
    record(
        f"{tag} loss.backward() reaches exactly the inputs that require grad",
        q.grad is not None and v.grad is not None and k.grad is None and not torch.isnan(q.grad).any().item(),
    )

    # batch and heads of the call differ from the spec's (kv heads keep dividing heads)
    group = s["heads"] // s["kvHeads"]
    b2, kv2 = (1 if s["batch"] > 1 else 2), max(1, s["kvHeads"] // 2)
    q1, k1, v1 = make_inputs(s, dtype, layout, batch=b2, heads=kv2 * group, kv_heads=kv2, seed=3)
    q1, k1, v1 = (t.detach().requires_grad_() for t in (q1, k1, v1))
    out1 = pkg.tilec_attention(q1, k1, v1, kernel=name, layout=layout)
    g1 = torch.randn_like(out1)
    out1.backward(g1)
    qd, kd, vd = (to_bhsd(t, layout).detach().double().requires_grad_() for t in (q1, k1, v1))
    r1, _ = reference(qd, kd, vd, mask, s["scale"])
    r1.backward(to_bhsd(g1, layout).double())
    e1 = {"out": rel(to_bhsd(out1, layout), r1)}
    e1.update({f"d{x}": rel(to_bhsd(t.grad, layout), r.grad) for x, t, r in zip("qkv", (q1, k1, v1), (qd, kd, vd))})
    record(f"{tag} batch {b2}, heads {kv2 * group}/{kv2} per call", all(e < tol for e in e1.values()), **e1)


# ---- once per package ----


def check_masks(pkg, dense_masks):
    from torch.nn.attention.flex_attention import create_mask

    for name, kern in pkg.package.kernels.items():
        n = kern.shape["seqLen"]
        flex_mask = create_mask(kern.mask_mod(), None, None, n, n, device="cuda")[0, 0]
        record(f"{name} mask: package maskExpr == FlexAttention create_mask(mask_mod)", torch.equal(flex_mask, dense_masks[name]),
               density=dense_masks[name].float().mean().item())  # fmt: skip


def check_model(pkg):
    m = pkg.model
    if m is None:
        skip("model section", "the package's spec has none")
        return
    cases = [(layer, step) for layer in range(m.layers) for step in (None, *range(m.steps or 1))]
    names = {c: pkg.kernel_for(*c) for c in cases}
    name = names[(m.layers - 1, (m.steps or 1) - 1)]
    kern = pkg.package.kernels[name]
    q, k, v = make_inputs(kern.shape, DTYPES[kern.shape["dtype"]], "bshd", seed=5)
    a = pkg.tilec_attention(q, k, v, layer=m.layers - 1, step=(m.steps or 1) - 1)
    b = pkg.tilec_attention(q, k, v, kernel=name)
    record("model section: layer=/step= runs the kernel kernel_for names", torch.equal(a, b),
           model=repr(m), table={f"{l}/{s}": n for (l, s), n in names.items()})  # fmt: skip


def check_no_backward(pkg, dense_masks):
    names = [n for n, k in pkg.package.kernels.items() if not k.has_backward]
    if not names:
        skip("kernel without backward", "every kernel of the package has one")
        return
    name = names[0]
    kern = pkg.package.kernels[name]
    q, k, v = make_inputs(kern.shape, DTYPES[kern.shape["dtype"]], "bshd", seed=9)
    try:
        pkg.tilec_attention(q.requires_grad_(), k, v, kernel=name)
        record(f"{name}: an input that requires grad raises (no backward)", False, error="no exception")
    except RuntimeError as e:
        record(f"{name}: an input that requires grad raises (no backward)", "no backward" in str(e), message=str(e))
    with torch.no_grad():
        out = pkg.tilec_attention(q, k, v, kernel=name)
    ref, _ = reference(*(to_bhsd(t, "bshd").double() for t in (q, k, v)), dense_masks[name], kern.shape["scale"])
    record(f"{name}: runs under no_grad", rel(out.transpose(1, 2), ref) < TOL[kern.shape["dtype"]], rel_l2=rel(out.transpose(1, 2), ref))


def check_errors(pkg):
    name = next(n for n, k in pkg.package.kernels.items() if k.has_backward)
    kern = pkg.package.kernels[name]
    s = kern.shape
    q, k, v = make_inputs(s, DTYPES[s["dtype"]], "bshd", seed=11)
    cases = {
        "wrong dtype": (lambda: pkg.tilec_attention(q.float(), k, v, kernel=name), TypeError),
        "wrong sequence length": (lambda: pkg.tilec_attention(q[:, :-1], k[:, :-1], v[:, :-1], kernel=name), ValueError),
        "kv heads not dividing heads": (lambda: pkg.tilec_attention(q[:, :, :3], k, v, kernel=name), ValueError),
        "unknown kernel": (lambda: pkg.tilec_attention(q, k, v, kernel="nope"), KeyError),
        "CPU tensors": (lambda: pkg.tilec_attention(q.cpu(), k.cpu(), v.cpu(), kernel=name), TypeError),
    }
    for what, (fn, exc) in cases.items():
        try:
            fn()
            record(f"error: {what}", False, error="no exception")
        except exc as e:
            record(f"error: {what}", True, message=str(e)[:200])
        except Exception as e:
            record(f"error: {what}", False, error=f"{type(e).__name__}: {e}")


def check_compile(pkg):
    name = next(n for n, k in pkg.package.kernels.items() if k.has_backward)
    kern = pkg.package.kernels[name]
    s = kern.shape
    dtype = DTYPES[s["dtype"]]
    h, kvh, d = s["heads"], s["kvHeads"], s["headDim"]

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q = torch.nn.Linear(h * d, h * d, dtype=dtype)
            self.kv = torch.nn.Linear(h * d, 2 * kvh * d, dtype=dtype)
            self.o = torch.nn.Linear(h * d, h * d, dtype=dtype)

        def forward(self, x):
            b, n, _ = x.shape
            q = self.q(x).view(b, n, h, d)
            k, v = self.kv(x).view(b, n, 2, kvh, d).unbind(2)
            y = pkg.tilec_attention(q, k, v, kernel=name, deterministic=True)
            return self.o(y.reshape(b, n, h * d))

    torch.manual_seed(0)
    block = Block().cuda()
    x = torch.randn(s["batch"], s["seqLen"], h * d, device="cuda", dtype=dtype).requires_grad_()

    def run(module):
        for p in module.parameters():
            p.grad = None
        x.grad = None
        y = module(x)
        y.float().square().mean().backward()
        return y.detach(), x.grad.clone(), [p.grad.clone() for p in module.parameters()]

    eager = run(block)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = torch.compile(block, fullgraph=True)
    got = run(compiled)
    got = run(compiled)  # a second call: no recompilation, same results
    breaks = dict(counters.get("graph_break", {}))
    errs = {"out": rel(got[0], eager[0]), "dx": rel(got[1], eager[1])}
    errs.update({f"dparam{i}": rel(a, b) for i, (a, b) in enumerate(zip(got[2], eager[2]))})
    record(f"torch.compile(fullgraph=True) of a module calling tilec_attention ({name})",
           not breaks and all(e < 1e-2 for e in errs.values()), graph_breaks=breaks, **errs)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("out")
    ap.add_argument("--flex", choices=["compiled", "eager", "off"], default="compiled")
    ap.add_argument("--kernels", help="comma-separated subset of the package's kernels")
    args = ap.parse_args()
    t0 = time.time()
    pkg = load_package(args.package)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, package {args.package}: kernels {', '.join(pkg.KERNELS)}; "
          f"namespace {pkg.package.namespace}", flush=True)  # fmt: skip
    dense_masks = {n: k.dense_mask("cuda") for n, k in pkg.package.kernels.items()}
    names = args.kernels.split(",") if args.kernels else list(pkg.KERNELS)
    guarded("masks", lambda: check_masks(pkg, dense_masks))
    for name in names:
        for layout in ("bshd", "bhsd"):
            guarded(f"{name}[{layout}]", lambda: check_kernel(pkg, name, layout, args.flex, dense_masks))
            torch.cuda.empty_cache()
    guarded("model section", lambda: check_model(pkg))
    guarded("kernel without backward", lambda: check_no_backward(pkg, dense_masks))
    guarded("errors", lambda: check_errors(pkg))
    guarded("torch.compile", lambda: check_compile(pkg))
    summary = {s: sum(r["status"] == s for r in RESULTS) for s in ("PASS", "FAIL", "SKIP")}
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "package": str(pathlib.Path(args.package).resolve()),
        "seconds": round(time.time() - t0, 1),
        "summary": summary,
        "results": RESULTS,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print(f"{summary['PASS']} passed, {summary['FAIL']} failed, {summary['SKIP']} skipped in {report['seconds']} s -> {args.out}")
    sys.exit(1 if summary["FAIL"] else 0)


if __name__ == "__main__":
    main()
