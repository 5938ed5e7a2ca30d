"""Where a number was measured: hardware and software versions, logged as tags next to every measurement."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

import psutil
import torch

from trainers.measure.config import available_cores


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _nvidia_driver() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            return driver.decode() if isinstance(driver, bytes) else str(driver)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - missing NVML only loses a tag
        return f"unknown ({type(exc).__name__})"


def hardware_context() -> dict[str, str]:
    """CPU, cores, threads, RAM, GPU/driver/CUDA and library versions, as strings (MLflow tags)."""
    ctx = {
        "cpu_model": _cpu_model(),
        "cpu_physical_cores": str(psutil.cpu_count(logical=False) or "unknown"),
        "cpu_logical_cores": str(psutil.cpu_count(logical=True) or "unknown"),
        "cpu_cores_available": str(available_cores()),
        "torch_threads": str(torch.get_num_threads()),
        "torch_interop_threads": str(torch.get_num_interop_threads()),
        "ram_total_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "codecarbon_version": _version("codecarbon"),
        "cuda_available": str(torch.cuda.is_available()),
    }
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        ctx.update({
            "gpu_name": torch.cuda.get_device_name(idx),
            "gpu_count": str(torch.cuda.device_count()),
            "gpu_memory_gb": f"{props.total_memory / 2**30:.1f}",
            "gpu_driver": _nvidia_driver(),
            "cuda_version": str(torch.version.cuda),
            "cudnn_version": str(torch.backends.cudnn.version()),
        })
    else:
        ctx["gpu_name"] = "none"
    return ctx
