"""Timing shared by the PyTorch-side benchmarks (peers.py, tune-loader-check.py): CUDA events on the
current stream, warm-up first, the median of the timed runs."""
import time

import torch


def timed_ms(fn):
    """One run of fn between two CUDA events on the current stream, in milliseconds."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def median_ms(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = sorted(timed_ms(fn) for _ in range(reps))
    return ts[len(ts) // 2]


def interleaved_medians(entries, rounds=7, per_round=3, warm_s=2.0):
    """Median ms of each (setup, fn) entry, timed in interleaved rounds as bench/cuda-bench.ts does:
    a warm-up of warm_s seconds over all entries, then rounds of setup, one untimed run and
    per_round timed runs of every entry. Attention kernels hold an H100 at its power cap, where the
    clock follows the GPU's temperature; rounds spread that drift over every entry alike."""
    for setup, fn in entries:  # first calls may compile (torch.compile)
        setup()
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < warm_s:
        setup, fn = entries[i % len(entries)]
        setup()
        fn()
        torch.cuda.synchronize()
        i += 1
    times = [[] for _ in entries]
    for _ in range(rounds):
        for (setup, fn), ts in zip(entries, times):
            setup()
            fn()
            ts.extend(timed_ms(fn) for _ in range(per_round))
    return [sorted(ts)[len(ts) // 2] for ts in times]
