"""Compile the templates the way the TS backend will: one self-contained source
(generated-style prelude + ptx.cuh + kernel file) through NVRTC with no include
paths. Uses cuda-python's nvrtc bindings (or CuPy as a fallback). Prints the
ptxas register/spill report when NVRTC returns one."""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TPL = os.path.join(HERE, "..", "..", "backends", "cuda", "templates")

MASK_2_6 = """
__device__ __forceinline__ bool tilec_mask(int q, int k) {
  const int fq = q / 3600, fk = k / 3600;
  return fq == fk || fq == 0 || fq == 4 || fk == 0 || fk == 4;
}
"""


def source(dtype, d, bq, bkv, warps, stages, kernel_file):
    prelude = (
        f"#define TILEC_HEAD_DIM {d}\n#define TILEC_BLOCK_Q {bq}\n#define TILEC_BLOCK_KV {bkv}\n"
        f"#define TILEC_NUM_WARPS {warps}\n#define TILEC_STAGES {stages}\n#define {dtype} 1\n"
        f"#define TILEC_KERNEL_NAME tilec_attn_tile_2_6\n" + MASK_2_6
    )
    with open(os.path.join(TPL, "ptx.cuh")) as f:
        ptx = f.read()
    with open(os.path.join(TPL, kernel_file)) as f:
        kern = f.read()
    src = prelude + ptx + kern
    assert not re.search(r"^\s*#\s*include", src, re.M), "templates must not #include anything"
    return src


def compile_bindings(src, arch):
    try:
        from cuda.bindings import nvrtc  # cuda-python >= 12.6
    except ImportError:
        from cuda import nvrtc  # older cuda-python
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), b"tilec.cu", 0, [], [])
    opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", b"--ptxas-options=-v"]
    (cerr,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * n
    nvrtc.nvrtcGetProgramLog(prog, log)
    ok = cerr == nvrtc.nvrtcResult.NVRTC_SUCCESS
    return ok, log.decode(errors="replace")


def compile_cupy(src, arch):
    import cupy

    mod = cupy.RawModule(code=src, options=("-std=c++17",), backend="nvrtc")
    mod.get_function("tilec_attn_tile_2_6")
    return True, "(compiled via CuPy; no ptxas report)"


def main():
    arch = os.environ.get("NVRTC_ARCH", "sm_90")
    cases = [
        ("TILEC_DTYPE_BF16", 96, 128, 64, 4, 2, "flash_fwd_sm80.cuh"),
        ("TILEC_DTYPE_BF16", 128, 128, 64, 4, 2, "flash_fwd_sm80.cuh"),
        ("TILEC_DTYPE_FP16", 64, 128, 64, 4, 3, "flash_fwd_sm80.cuh"),
        ("TILEC_DTYPE_BF16", 96, 128, 64, 8, 2, "flash_fwd_sm80.cuh"),
        ("TILEC_DTYPE_FP32", 96, 64, 64, 4, 2, "flash_fwd_f32.cuh"),
    ]
    fails = 0
    for case in cases:
        src = source(*case)
        try:
            ok, log = compile_bindings(src, arch)
            how = "nvrtc"
        except Exception as e:  # no cuda-python: try CuPy
            try:
                ok, log = compile_cupy(src, arch)
                how = "cupy"
            except Exception as e2:
                ok, log, how = False, f"{type(e).__name__}: {e} / {type(e2).__name__}: {e2}", "none"
        regs = re.findall(r"Used \d+ registers", log)
        spill = re.findall(r"\d+ bytes spill stores, \d+ bytes spill loads", log)
        print(f"NVRTC {'OK  ' if ok else 'FAIL'} {case[0][12:]} d={case[1]} {case[2]}x{case[3]} w{case[4]} "
              f"s{case[5]} via {how}: {regs[:1]} {spill[:1]}")
        if not ok:
            fails += 1
            print(log[-3000:])
    print(f"NVRTC failures: {fails}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
