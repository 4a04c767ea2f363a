"""Timing helpers shared by the benchmarks: interleaved medians, machine facts."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

SETTLE_S = 0.2  # idle time before each timed call, so that spinning worker threads of the
# other framework (ORT's intra-op pool, torch's OpenMP pool) have gone to sleep: without it the
# first torch call after an ORT run (and vice versa) on 2 cores ran up to 3x slower here


def round_robin(fns: dict, repeat: int):
    """Median time of every function, measured in interleaved rounds (one call of each per
    round, after one warm-up call of each) so that a change in machine load during the run
    affects every quantity alike. A function that raises is reported, not timed."""
    live, skipped = {}, {}
    for key, fn in fns.items():
        try:
            time.sleep(SETTLE_S)
            fn()
        except Exception as exc:  # a torch.func variant that does not run here is reported
            skipped[key] = f"{type(exc).__name__}: {exc}"[:200]
        else:
            live[key] = fn
    times: dict[str, list[float]] = {key: [] for key in live}
    for _ in range(repeat):
        for key, fn in live.items():
            time.sleep(SETTLE_S)
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return times, skipped


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def max_rel(got: np.ndarray, want: np.ndarray) -> float:
    """Largest per-slice relative difference along the leading axis."""
    k = len(want)
    g = np.asarray(got, np.float64).reshape(k, -1)
    w = np.asarray(want, np.float64).reshape(k, -1)
    den = np.maximum(np.linalg.norm(w, axis=1), np.finfo(np.float64).tiny)
    return float(np.max(np.linalg.norm(g - w, axis=1) / den))
