# Times the peers in the same run as tilec: FlexAttention (torch.compile'd, the Efficient-vDiT masks
# with global frames held in a tensor so changing the mask does not recompile) and PyTorch SDPA
# (cuDNN and flash backends, dense). Medians of interleaved rounds with CUDA events after a warm-up
# (bench/torch_timing.py), as bench/cuda-bench.ts times tilec.
#   python3 bench/peers.py OUT.json
import json, os, sys
# osp93's create_block_mask materializes the 86,400² element mask and sums it per block: after
# osp29's runs the cached segments are too fragmented for that unless they can grow in place.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch
from torch_timing import interleaved_medians  # bench/ is the script's directory, first on sys.path
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention, create_block_mask

torch.manual_seed(0)
dev = "cuda"
H, D = 24, 96
FRAME = 45 * 80
flex = torch.compile(flex_attention, dynamic=False)


rows = []
for label, T, ks in [("osp29", 8, [0, 4, 3, 2, 1]), ("osp93", 24, [0, 12, 8, 6, 4, 3])]:
    S = T * FRAME
    q, k, v = (torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    # The mask_mod reads the current mask's global frames from one tensor, so every mask shares one
    # compiled kernel; each entry copies its own frames in before it runs (not timed).
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
        bm = create_block_mask(mask_mod, 1, 1, S, S, device=dev, BLOCK_SIZE=128)
        setup = lambda frames=frames: is_global.copy_(frames)
        entries.append((setup, lambda bm=bm: flex(q, k, v, block_mask=bm)))
        names.append((name, "flex"))
        if kk == 0:
            for impl, backend in [("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)]:
                def sdpa(backend=backend):
                    with sdpa_kernel(backend):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
                entries.append((lambda: None, sdpa))
                names.append(("full", impl))
    # Flex's masks are one group, SDPA's two dense backends another: each timed in its own rounds.
    groups = [[i for i, (_, impl) in enumerate(names) if (impl == "flex") == flex_group] for flex_group in (True, False)]
    medians = {}
    for g in groups:
        medians.update(zip(g, interleaved_medians([entries[i] for i in g])))
    for i, (name, impl) in enumerate(names):
        ms = medians[i]
        rows.append({"case": label, "mask": name, "impl": impl, "ms": ms})
        print(label, name, impl, f"{ms:.3f} ms", flush=True)
    del q, k, v, entries
    torch.cuda.empty_cache()
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, open(sys.argv[1], "w"), indent=2)
