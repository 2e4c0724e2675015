"""Efficient-vDiT stage 3 at toy scale: distill a dense video DiT into a block-sparse student.

    node bin/tilec.js build examples/distill/distill.tile -o build-distill --arch sm_90
    python3 examples/distill/distill.py --package build-distill --steps 300 --out distill.json

The DiT is a small PyTorch twin of tilec's runtime/dit (Open-Sora-Plan v1.2's OpenSoraT2V: 2x2 patch
embedding, 3D RoPE, adaLN-single blocks with self-attention, cross-attention to projected text and a
GELU-tanh MLP, the final modulated norm and projection). The teacher attends densely
(F.scaled_dot_product_attention); the student starts as an exact copy and runs each layer's
self-attention through the package's `tilec_attention` with the kernel the spec's model section assigns
to that layer. Knowledge distillation: noised latents x_t = (1 - s) x0 + s noise at random timesteps,
loss = MSE(student(x_t, t, text), teacher(x_t, t, text)), AdamW on the student only.

Before training, one layer's attention gradients through tilec are compared with FlexAttention's on
the same mask and inputs (and both with a float64 reference). Prints the loss curve; writes it, the
held-out distillation error before and after, and the gradient check as JSON.
"""

import argparse
import copy
import importlib.util
import json
import math
import pathlib
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def load_package(path, name="tilec_distill_kernels"):
    """A `tilec build` directory as a Python package, whatever the directory is called."""
    path = pathlib.Path(path).resolve()
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---- the DiT twin (runtime/dit/cpu.ts, in PyTorch) ------------------------------------------------


def timestep_features(t, channels):
    """diffusers Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0): [cos, sin]."""
    half = channels // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([arg.cos(), arg.sin()], dim=-1)


def rope_tables(grid, head_dim, base=10000.0, device=None):
    """cos/sin [tokens, head_dim] of OSP's RoPE3D: the head vector in thirds (frame, row, column); in a
    third of width P, pairs (j, j + P/2) rotate by position * base^(-2j/P) (rotate_half)."""
    frames, height, width = grid
    n = torch.arange(frames * height * width, device=device)
    pos = torch.stack([n // (height * width), (n // width) % height, n % width], dim=-1).float()
    third = head_dim // 3
    inv = base ** (-2 * torch.arange(third // 2, device=device, dtype=torch.float32) / third)
    # per third: the angles of pairs j, and the same again for their partners j + P/2
    angles = torch.cat([torch.cat([pos[:, a : a + 1] * inv[None]] * 2, dim=-1) for a in range(3)], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x [b, n, h, d]; rotate_half within each third of the head dim."""
    b, n, h, d = x.shape
    third = d // 3
    xs = x.float().view(b, n, h, 3, 2, third // 2)
    rot = torch.stack([-xs[..., 1, :], xs[..., 0, :]], dim=-2).view(b, n, h, d)
    return (x.float() * cos[None, :, None] + rot * sin[None, :, None]).to(x.dtype)


def modulate(x, shift, scale, eps):
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """One adaLN-single transformer block; `attention(q, k, v, layer)` on [b, n, h, d] is swapped in."""

    def __init__(self, c, layer):
        super().__init__()
        hidden, ff = c["hidden"], c["ff"]
        self.layer, self.heads, self.eps = layer, c["heads"], c["eps"]
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden) / hidden**0.5)
        self.to_q, self.to_k, self.to_v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.to_out = nn.Linear(hidden, hidden)
        self.q2, self.k2, self.v2 = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out2 = nn.Linear(hidden, hidden)
        self.fc1, self.fc2 = nn.Linear(hidden, ff), nn.Linear(ff, hidden)

    def forward(self, x, t6, text, rope, attention):
        b, n, hidden = x.shape
        h, d = self.heads, hidden // self.heads
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.scale_shift_table[None] + t6).unbind(1)
        # self-attention with 3D RoPE on q and k
        xn = modulate(x, shift_msa, scale_msa, self.eps)
        q = apply_rope(self.to_q(xn).view(b, n, h, d), *rope)
        k = apply_rope(self.to_k(xn).view(b, n, h, d), *rope)
        v = self.to_v(xn).view(b, n, h, d)
        o = attention(q, k, v, self.layer).reshape(b, n, hidden)
        x = x + gate_msa[:, None] * self.to_out(o)
        # cross-attention to the text (ada_norm_single: on the residual stream, no norm, no gate)
        L = text.shape[1]
        q2 = self.q2(x).view(b, n, h, d).transpose(1, 2)
        k2 = self.k2(text).view(b, L, h, d).transpose(1, 2)
        v2 = self.v2(text).view(b, L, h, d).transpose(1, 2)
        x = x + self.out2(F.scaled_dot_product_attention(q2, k2, v2).transpose(1, 2).reshape(b, n, hidden))
        # MLP
        xm = modulate(x, shift_mlp, scale_mlp, self.eps)
        return x + gate_mlp[:, None] * self.fc2(F.gelu(self.fc1(xm), approximate="tanh"))


class DiT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hidden, p = c["hidden"], c["patch"]
        self.patch_embed = nn.Linear(c["in_channels"] * p * p, hidden)  # Conv2d(k=p, stride=p) on patches
        self.t1, self.t2 = nn.Linear(c["t_channels"], hidden), nn.Linear(hidden, hidden)
        self.adaln = nn.Linear(hidden, 6 * hidden)
        self.cap1, self.cap2 = nn.Linear(c["caption_channels"], hidden), nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(Block(c, i) for i in range(c["layers"]))
        self.final_table = nn.Parameter(torch.randn(2, hidden) / hidden**0.5)
        self.proj_out = nn.Linear(hidden, p * p * c["in_channels"])
        # adaLN-single blocks start near identity in OSP; small gates keep the toy model stable
        for blk in self.blocks:
            for lin in (blk.to_out, blk.out2, blk.fc2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * c["layers"]))

    def forward(self, latent, t, text, attention):
        c, p = self.c, self.c["patch"]
        b, ch, fr, hh, ww = latent.shape
        grid = (fr, hh // p, ww // p)
        # patchify [B, C, T, H, W] -> rows (b, t, y, x), channel-first patch vectors (c, i, j)
        x = latent.view(b, ch, fr, hh // p, p, ww // p, p).permute(0, 2, 3, 5, 1, 4, 6).reshape(b, -1, ch * p * p)
        x = self.patch_embed(x)
        emb = self.t2(F.silu(self.t1(timestep_features(t, c["t_channels"]))))
        t6 = self.adaln(F.silu(emb)).view(b, 6, -1)
        text = self.cap2(F.gelu(self.cap1(text), approximate="tanh"))
        rope = rope_tables(grid, c["hidden"] // c["heads"], device=latent.device)
        for blk in self.blocks:
            x = blk(x, t6, text, rope, attention)
        shift, scale = (self.final_table[None] + emb[:, None]).unbind(1)
        x = self.proj_out(modulate(x, shift, scale, c["eps"]))
        # proj_out's (i, j, c) patch order -> the latent (unpatchify)
        x = x.view(b, fr, hh // p, ww // p, p, p, ch).permute(0, 6, 1, 2, 4, 3, 5)
        return x.reshape(b, ch, fr, hh, ww)


# ---- attention: dense teacher, sparse student ------------------------------------------------------


def dense_attention(q, k, v, layer):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def sparse_attention(pkg):
    def attention(q, k, v, layer):
        # the kernel the spec's model section assigns to this layer; bf16 [b, n, h, d] in, like q out
        return pkg.tilec_attention(q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16), layer=layer)

    return attention


# ---- data --------------------------------------------------------------------------------------------


def smooth_latents(batch, c, generator):
    """Synthetic video latents with structure across frames and space: upsampled low-resolution noise
    plus a drifting pattern, so attention between frames matters."""
    ch, (fr, hh, ww) = c["in_channels"], c["latent"]
    low = torch.randn(batch, ch, fr, hh // 8, ww // 8, generator=generator, device="cuda")
    x = F.interpolate(low, size=(fr, hh, ww), mode="trilinear", align_corners=False)
    phase = torch.rand(batch, ch, 1, 1, 1, generator=generator, device="cuda") * 6.28
    tt = torch.arange(fr, device="cuda").view(1, 1, fr, 1, 1)
    yy = torch.arange(hh, device="cuda").view(1, 1, 1, hh, 1)
    return x + 0.5 * torch.sin(0.3 * yy + 0.7 * tt + phase)


def noised(x0, generator):
    """Flow-matching noising at random timesteps (OSP units, 0..1000)."""
    t = torch.rand(x0.shape[0], generator=generator, device="cuda") * 1000
    s = (t / 1000).view(-1, 1, 1, 1, 1)
    return (1 - s) * x0 + s * torch.randn(x0.shape, generator=generator, device="cuda"), t


# ---- the gradient check ----------------------------------------------------------------------------


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def gradient_check(pkg, model, c, layer, generator):
    """One student layer's attention on its real inputs: dq, dk, dv through tilec vs FlexAttention (same
    mask: the package's mask_mod) vs a float64 reference."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    name = pkg.kernel_for(layer)
    kern = pkg.package.kernels[name]
    captured = {}

    def capture(q, k, v, i):
        if i == layer:
            captured["qkv"] = [t.detach().to(torch.bfloat16) for t in (q, k, v)]
        return dense_attention(q, k, v, i)

    x0 = smooth_latents(c["batch"], c, generator)
    xt, t = noised(x0, generator)
    text = torch.randn(c["batch"], c["text_tokens"], c["caption_channels"], generator=generator, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(xt, t, text, capture)
    q0, k0, v0 = captured["qkv"]
    dout = torch.randn(q0.shape, generator=generator, device="cuda").to(torch.bfloat16)
    n = q0.shape[1]
    # tilec
    q, k, v = (x.clone().requires_grad_() for x in (q0, k0, v0))
    pkg.tilec_attention(q, k, v, kernel=name).backward(dout)
    ours = [x.grad.transpose(1, 2) for x in (q, k, v)]
    # FlexAttention on [b, h, s, d]
    bm = create_block_mask(kern.mask_mod(), B=None, H=None, Q_LEN=n, KV_LEN=n, device="cuda")
    fq, fk, fv = (x.transpose(1, 2).contiguous().requires_grad_() for x in (q0, k0, v0))
    torch.compile(flex_attention, dynamic=False)(fq, fk, fv, block_mask=bm).backward(dout.transpose(1, 2))
    flex = [fq.grad, fk.grad, fv.grad]
    # float64
    mask = kern.dense_mask("cuda")
    rq, rk, rv = (x.transpose(1, 2).double().requires_grad_() for x in (q0, k0, v0))
    s = (rq @ rk.transpose(-1, -2)) / math.sqrt(q0.shape[-1])
    out = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ rv
    out.backward(dout.transpose(1, 2).double())
    ref = [rq.grad, rk.grad, rv.grad]
    return {
        "layer": layer,
        "kernel": name,
        "mask": kern.mask_source,
        "density": mask.float().mean().item(),
        "tilec_vs_flex": {f"d{x}": rel(a, b) for x, a, b in zip("qkv", ours, flex)},
        "tilec_vs_float64": {f"d{x}": rel(a, b) for x, a, b in zip("qkv", ours, ref)},
        "flex_vs_float64": {f"d{x}": rel(a, b) for x, a, b in zip("qkv", flex, ref)},
    }


# ---- distillation ----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", required=True, help="a `tilec build` of examples/distill/distill.tile")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="distill.json")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--check-layer", type=int, default=5, help="the layer whose attention gradients are checked")
    ap.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) the student's blocks")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    pkg = load_package(args.package)
    m = pkg.model
    if m is None:
        sys.exit(f"{args.package} has no model section: build examples/distill/distill.tile")
    kern = pkg.package.kernels[m.kernel_for(0)]
    shape = kern.shape
    tokens = kern.tokens
    c = {
        "layers": m.layers,
        "heads": shape["heads"],
        "hidden": shape["heads"] * shape["headDim"],
        "ff": 4 * shape["heads"] * shape["headDim"],
        "patch": 2,
        "in_channels": 8,
        "latent": (tokens["frames"], 2 * tokens["height"], 2 * tokens["width"]),
        "t_channels": 256,
        "caption_channels": 128,
        "text_tokens": 16,
        "batch": shape["batch"],
        "eps": 1e-6,
    }
    torch.manual_seed(args.seed)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    teacher = DiT(c).cuda().eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    kernels = [m.kernel_for(i) for i in range(m.layers)]
    density = {n: pkg.package.kernels[n].dense_mask("cuda").float().mean().item() for n in set(kernels)}
    print(f"DiT twin: {m.layers} layers, hidden {c['hidden']} ({c['heads']} heads x {shape['headDim']}), "
          f"{shape['seqLen']} video tokens, batch {c['batch']}; student kernels by layer: "
          + ", ".join(f"{i}:{k} ({density[k]:.0%})" for i, k in enumerate(kernels)), flush=True)  # fmt: skip

    check = gradient_check(pkg, student, c, min(args.check_layer, m.layers - 1), gen)
    print("gradient check (rel. L2):", json.dumps(check), flush=True)

    student_attention = sparse_attention(pkg)
    forward = student
    if args.compile:
        forward = torch.compile(student, fullgraph=True)
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)

    def batch():
        x0 = smooth_latents(c["batch"], c, gen)
        xt, t = noised(x0, gen)
        text = torch.randn(c["batch"], c["text_tokens"], c["caption_channels"], generator=gen, device="cuda")
        return xt, t, text

    held_out = [batch() for _ in range(4)]

    def evaluate():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            errs = []
            for xt, t, text in held_out:
                want = teacher(xt, t, text, dense_attention).float()
                got = forward(xt, t, text, student_attention).float()
                errs.append((F.mse_loss(got, want) / want.square().mean()).item())
        return sum(errs) / len(errs)

    before = evaluate()
    print(f"held-out relative MSE, student vs teacher, before: {before:.3e}", flush=True)
    losses = []
    t0 = time.time()
    for step in range(args.steps):
        xt, t, text = batch()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                target = teacher(xt, t, text, dense_attention)
            pred = forward(xt, t, text, student_attention)
            loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.4e}  ({time.time() - t0:.1f} s)", flush=True)
    seconds = time.time() - t0
    after = evaluate()
    print(f"held-out relative MSE, student vs teacher, after {args.steps} steps: {after:.3e} (before {before:.3e})")
    report = {
        "package": str(pathlib.Path(args.package).resolve()),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()},
        "kernels_by_layer": kernels,
        "density": density,
        "gradient_check": check,
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "loss": losses,
        "held_out_relative_mse": {"before": before, "after": after},
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
