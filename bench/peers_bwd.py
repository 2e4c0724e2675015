# Times the peers' attention BACKWARD in the same run as tilec's (bench/cuda-bwd-bench.ts): FlexAttention
# (torch.compile'd, the Efficient-vDiT masks with global frames held in a tensor so changing the mask
# does not recompile) and PyTorch SDPA's cuDNN and flash backends (dense). A timed run is
# torch.autograd.grad of a saved forward (dq, dk, dv; no accumulation into .grad), medians of
# interleaved rounds with CUDA events after a warm-up (bench/torch_timing.py).
#   python3 bench/peers_bwd.py OUT.json [osp29,osp93,osp29-d64,osp29-d128]
import json, os, sys
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch
from torch_timing import interleaved_medians
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention, create_block_mask

torch.manual_seed(0)
dev = "cuda"
H = 24
FRAME = 45 * 80
flex = torch.compile(flex_attention, dynamic=False)
CASES = {
    "osp29": (8, 96, [0, 4, 3, 2, 1]),
    "osp93": (24, 96, [0, 12, 8, 6, 4, 3]),
    "osp29-d64": (8, 64, [0, 4, 3, 2, 1]),
    "osp29-d128": (8, 128, [0, 4, 3, 2, 1]),
}
wanted = (sys.argv[2] if len(sys.argv) > 2 else "osp29,osp93").split(",")
rounds = int(os.environ.get("PEERS_ROUNDS", "7"))

rows = []
for label in wanted:
    T, D, ks = CASES[label]
    S = T * FRAME
    q, k, v = (torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16)
    is_global = torch.zeros(T, dtype=torch.bool, device=dev)

    def mask_mod(b, h, qi, ki):
        fq, fk = qi // FRAME, ki // FRAME
        return (fq == fk) | is_global[fq] | is_global[fk]

    entries, names = [], []
    for kk in ks:
        name = "full" if kk == 0 else f"tile_{kk}_{T - kk}"
        frames = torch.zeros(T, dtype=torch.bool, device=dev)
        frames.fill_(kk == 0)
        for i in range(kk):
            frames[i * T // kk] = True
        is_global.copy_(frames)
        bm = create_block_mask(mask_mod, 1, 1, S, S, device=dev, BLOCK_SIZE=128, _compile=True)
        out = flex(q, k, v, block_mask=bm)
        setup = lambda frames=frames: is_global.copy_(frames)
        entries.append((setup, lambda out=out: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)))
        names.append((name, "flex-bwd"))
        if kk == 0:
            for impl, backend in [("sdpa-cudnn-bwd", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash-bwd", SDPBackend.FLASH_ATTENTION)]:
                with sdpa_kernel(backend):
                    o2 = torch.nn.functional.scaled_dot_product_attention(q, k, v)

                def bwd(o2=o2, backend=backend):
                    with sdpa_kernel(backend):
                        return torch.autograd.grad(o2, (q, k, v), dout, retain_graph=True)

                entries.append((lambda: None, bwd))
                names.append(("full", impl))
    groups = [[i for i, (_, impl) in enumerate(names) if (impl == "flex-bwd") == g] for g in (True, False)]
    medians = {}
    for g in groups:
        medians.update(zip(g, interleaved_medians([entries[i] for i in g], rounds=rounds)))
    for i, (name, impl) in enumerate(names):
        rows.append({"case": label, "mask": name, "impl": impl, "headDim": D, "ms": medians[i]})
        print(label, name, impl, f"{medians[i]:.3f} ms", flush=True)
    del q, k, v, dout, entries, out
    torch.cuda.empty_cache()
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, open(sys.argv[1], "w"), indent=2)
