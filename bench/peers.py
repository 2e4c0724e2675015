# Times the peers in the same run as tilec: FlexAttention (torch.compile'd, the Efficient-vDiT masks
# with global frames held in a tensor so changing the mask does not recompile) and PyTorch SDPA
# (cuDNN and flash backends, dense). Median of repeated runs with CUDA events after warm-up.
#   python3 bench/peers.py OUT.json
import json, sys, torch
from torch_timing import median_ms  # bench/ is the script's directory, first on sys.path
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
    is_global = torch.zeros(T, dtype=torch.bool, device=dev)
    def mask_mod(b, h, qi, ki):
        fq, fk = qi // FRAME, ki // FRAME
        return (fq == fk) | is_global[fq] | is_global[fk]
    for kk in ks:
        name = "full" if kk == 0 else f"tile_{kk}_{T - kk}"
        is_global.fill_(kk == 0)
        if kk:
            for i in range(kk):
                is_global[i * T // kk] = True
        bm = create_block_mask(mask_mod, 1, 1, S, S, device=dev, BLOCK_SIZE=128)
        ms = median_ms(lambda: flex(q, k, v, block_mask=bm))
        rows.append({"case": label, "mask": name, "impl": "flex", "ms": ms})
        print(label, name, "flex", f"{ms:.3f} ms", flush=True)
        if kk == 0:
            for impl, backend in [("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)]:
                with sdpa_kernel(backend):
                    ms = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
                rows.append({"case": label, "mask": "full", "impl": impl, "ms": ms})
                print(label, "full", impl, f"{ms:.3f} ms", flush=True)
    del q, k, v
    torch.cuda.empty_cache()
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, open(sys.argv[1], "w"), indent=2)
