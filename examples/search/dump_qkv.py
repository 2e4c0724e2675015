"""Capture calibration Q/K/V for `tilec search` from a PyTorch video DiT.

The file it writes (safetensors) holds, for every transformer block i, the self-attention inputs exactly
as the attention call sees them (after RoPE and any q/k norm), in the model's token order:

    layers.{i}.q   [batch, seq, heads,    head_dim]
    layers.{i}.k   [batch, seq, kv_heads, head_dim]
    layers.{i}.v   [batch, seq, kv_heads, head_dim]

How: a forward pre-hook on each block's self-attention module (`attn1` in diffusers and Open-Sora-Plan
v1.2) marks which layer is running, and a wrapper around torch.nn.functional.scaled_dot_product_attention
records q/k/v (which SDPA takes as [batch, heads, seq, head_dim]) while a layer is marked. One transformer
forward is enough; `skip` chooses which one (e.g. a middle denoising step).

    import torch
    from dump_qkv import QkvRecorder
    pipe = ...  # an Open-Sora-Plan v1.2 / diffusers video pipeline
    with QkvRecorder(pipe.transformer, skip=10) as rec:   # the 11th transformer forward
        pipe(prompt, num_frames=29, height=720, width=1280, num_inference_steps=20)
    rec.save("qkv.safetensors")

    # then: npx tilec search examples/efficient-vdit/osp29.tile --qkv qkv.safetensors --threshold 0.1

Requirements: the model calls torch.nn.functional.scaled_dot_product_attention through the module
attribute (diffusers' AttnProcessor2_0 does); flash-attn or xformers processors must be switched to SDPA
for the capture (diffusers: `transformer.set_attn_processor(AttnProcessor2_0())`). The token order must
be the .tile layout's: text tokens (if any) where the layout puts them, video tokens frame-major, then row,
then column — the order patchify produces. With classifier-free guidance the batch is 2; `tilec search`
measures every sample.

`python dump_qkv.py --selftest OUT.safetensors [--tile OUT.tile]` runs a small toy DiT through the same
hooks (no model download) and writes a matching .tile, so the whole path can be checked anywhere.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


class QkvRecorder(contextlib.AbstractContextManager):
    def __init__(self, transformer: torch.nn.Module, skip: int = 0, attn_name: str = "attn1",
                 dtype: torch.dtype = torch.bfloat16):
        self.transformer = transformer
        self.skip = skip
        self.dtype = dtype
        self.blocks = [m for name, m in transformer.named_modules() if name.split(".")[-1] == attn_name]
        if not self.blocks:
            raise ValueError(f"no submodules named '{attn_name}' in {type(transformer).__name__}; "
                             "pass attn_name= for your model's self-attention modules")
        self.tensors: dict[str, torch.Tensor] = {}
        self._layer: int | None = None
        self._forwards = 0
        self._handles = []
        self._sdpa = None

    def __enter__(self):
        self._handles.append(self.transformer.register_forward_pre_hook(self._count))
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(self._enter(i)))
            self._handles.append(block.register_forward_hook(self._leave))
        self._sdpa = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self._wrapped
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self._sdpa
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _count(self, module, args):
        self._forwards += 1

    def _enter(self, i: int):
        def hook(module, args):
            self._layer = i
        return hook

    def _leave(self, module, args, output):
        self._layer = None

    def _wrapped(self, q, k, v, *args, **kwargs):
        layer = self._layer
        capturing = layer is not None and self._forwards == self.skip + 1
        # Self-attention only: cross-attention to text has a different key length.
        if capturing and q.shape[-2] == k.shape[-2] and f"layers.{layer}.q" not in self.tensors:
            for name, x in (("q", q), ("k", k), ("v", v)):
                # SDPA takes [batch, heads, seq, dim]; tilec reads [batch, seq, heads, dim].
                self.tensors[f"layers.{layer}.{name}"] = x.detach().transpose(1, 2).to(self.dtype).cpu().contiguous()
        return self._sdpa(q, k, v, *args, **kwargs)

    def save(self, path: str, metadata: dict[str, str] | None = None) -> None:
        layers = len(self.tensors) // 3
        if not layers:
            raise RuntimeError("no self-attention calls were captured: does the model call "
                               "F.scaled_dot_product_attention (not flash-attn/xformers), and did "
                               f"{self.skip + 1} transformer forwards run inside the `with` block?")
        missing = [i for i in range(len(self.blocks)) if f"layers.{i}.q" not in self.tensors]
        if missing:
            raise RuntimeError(f"layers {missing} were not captured (of {len(self.blocks)})")
        save_file(self.tensors, path, metadata={"format": "tilec-calibration", "layout": "bshd",
                                                **(metadata or {})})


# ---- a toy video DiT for --selftest: the same module names and SDPA calls as diffusers blocks ----------


class ToyAttention(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v, self.to_out = (torch.nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, context=None):
        b, s, d = x.shape
        context = x if context is None else context
        split = lambda t: t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)
        o = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out(o.transpose(1, 2).reshape(b, s, d))


class ToyBlock(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn1 = ToyAttention(dim, heads)  # self-attention (captured)
        self.attn2 = ToyAttention(dim, heads)  # cross-attention to "text" (skipped: other key length)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, x, text):
        x = x + self.attn1(self.norm(x))
        return x + self.attn2(self.norm(x), text)


class ToyDiT(torch.nn.Module):
    def __init__(self, layers: int, dim: int, heads: int):
        super().__init__()
        self.transformer_blocks = torch.nn.ModuleList(ToyBlock(dim, heads) for _ in range(layers))

    def forward(self, x, text):
        for block in self.transformer_blocks:
            x = block(x, text)
        return x


def selftest(out: str, tile: str | None) -> None:
    torch.manual_seed(0)
    frames, height, width, heads, head_dim, layers = 4, 8, 8, 2, 64, 4
    dim = heads * head_dim
    model = ToyDiT(layers, dim, heads)
    # Tied query/key projections in the first blocks: same-frame tokens score high there, so the search
    # has frame-local layers to find; the last blocks keep independent projections (diffuse attention).
    with torch.no_grad():
        for block in model.transformer_blocks[: layers // 2]:
            block.attn1.to_k.weight.copy_(block.attn1.to_q.weight)
            block.attn1.to_k.bias.copy_(block.attn1.to_q.bias)
    # Tokens frame-major, then row, then column; a per-frame offset makes attention favour its own frame.
    frame_of = torch.arange(frames).repeat_interleave(height * width)
    x = torch.randn(2, frames * height * width, dim) + 3 * torch.randn(frames, dim)[frame_of]
    text = torch.randn(2, 7, dim)
    with torch.no_grad(), QkvRecorder(model, skip=1, dtype=torch.float32) as rec:
        model(x, text)  # forward 1: skipped
        model(x, text)  # forward 2: captured
    rec.save(out, {"source": "dump_qkv.py --selftest"})
    assert len(rec.tensors) == 3 * layers
    assert rec.tensors["layers.0.q"].shape == (2, frames * height * width, heads, head_dim)
    print(f"wrote {out}: {layers} layers of q/k/v {tuple(rec.tensors['layers.0.q'].shape)}")
    if tile:
        with open(tile, "w") as f:
            f.write(f"""# The toy DiT of examples/search/dump_qkv.py --selftest
layout toy {{ video {frames} x {height} x {width}  heads {heads}  head_dim {head_dim}  dtype bf16 }}
kernel full     {{ layout toy  mask full               block 64 x 64 }}
kernel tile_2_2 {{ layout toy  mask attention_tile(2)  block 64 x 64 }}
kernel tile_1_3 {{ layout toy  mask attention_tile(1)  block 64 x 64 }}
""")
        print(f"wrote {tile}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--selftest", metavar="OUT", required=True, help="run the toy DiT and write its Q/K/V")
    p.add_argument("--tile", metavar="FILE", help="also write a .tile spec for the toy's layout")
    a = p.parse_args()
    selftest(a.selftest, a.tile)
