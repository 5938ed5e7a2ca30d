"""Where an executor's jobs run: its CPU cores (affinity and thread count) and at most one GPU."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass
class Placement:
    """Where an executor's jobs run: CPU cores (affinity + thread count) and at most one GPU."""

    cores: list[int]
    gpu: str | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(len(self.cores))
        env["MKL_NUM_THREADS"] = str(len(self.cores))
        env["TOKENIZERS_PARALLELISM"] = "false"
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        env["SWEEP_CPU_AFFINITY"] = ",".join(str(c) for c in self.cores)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        return env


def available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def visible_gpus() -> list[str]:
    """GPU ids from CUDA_VISIBLE_DEVICES, else counted with nvidia-smi (no torch import here)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def placements(n_workers: int) -> list[Placement]:
    """Split cores evenly between executors (wrapping when they outnumber cores) and one GPU each."""
    cores, gpus = available_cores(), visible_gpus()
    per = max(1, len(cores) // n_workers)
    out = []
    for i in range(n_workers):
        chunk = [cores[(i * per + j) % len(cores)] for j in range(per)]
        out.append(Placement(cores=chunk, gpu=gpus[i % len(gpus)] if gpus else None))
    return out


def default_workers() -> int:
    return max(1, len(visible_gpus()))
