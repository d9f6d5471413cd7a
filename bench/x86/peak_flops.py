"""Peak float32 FLOP/s of one core, measured: the arithmetic floor's denominator."""
from __future__ import annotations

import time
from typing import Any

METHOD = ("best of {reps} single-threaded torch.matmul calls on {n}x{n} float32 matrices "
          "(MKL/oneDNN GEMM), 2·n³ FLOPs each")


def measure(n: int = 2048, reps: int = 10) -> dict[str, Any]:
    """GFLOP/s of the best of `reps` n×n×n GEMMs with one thread."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * n**3 / best / 1e9, "method": METHOD.format(reps=reps, n=n)}
