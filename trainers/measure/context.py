"""The measurement context: where a latency, memory or energy number was taken, as one comparable key.

Two numbers may only be divided (a speed-up, a `max_ratio` constraint) or put on one Pareto front when
they were measured in the same context: the same host hardware (CPU model, and GPU model for GPU
measurements), the same device kind and the same torch thread count. `measurement_context` builds the
key; every measurement is tagged with it (`MEASUREMENT_CONTEXT_TAG`, written by `measure_model`), the
teacher baselines are kept per key, and per-host baselines on a cluster use the same key.
"""

from __future__ import annotations

CONTEXT_TAG = "measurement_context"
CPU_MEASURED_PRECISIONS = ("int8",)  # dynamic quantisation: a CPU inference path
CPU_MEASURED_RUNTIMES = ("onnxruntime",)  # served by its CPU execution provider


def measurement_context(*, device: str, threads: int | str, cpu_model: str, gpu_model: str | None = None) -> str:
    """`cpu|threads=4|cpu=<model>` or `cuda|threads=4|cpu=<model>|gpu=<model>` (the GPU index is not part of
    it: two GPUs of one model are one context)."""
    kind = device.split(":", 1)[0]
    key = f"{kind}|threads={threads}|cpu={cpu_model}"
    return key + (f"|gpu={gpu_model or 'unknown'}" if kind == "cuda" else "")


def context_of(tags: dict[str, str]) -> str | None:
    """The context a measurement's tags describe (its own tag, else rebuilt from the hardware tags)."""
    if tags.get(CONTEXT_TAG):
        return tags[CONTEXT_TAG]
    if "measure_device" not in tags or "measure_threads" not in tags:
        return None
    return measurement_context(device=tags["measure_device"], threads=tags["measure_threads"],
                               cpu_model=tags.get("hw_cpu_model", "unknown"), gpu_model=tags.get("hw_gpu_name"))


def context_device(context: str) -> str:
    return context.split("|", 1)[0]


def measured_device(precision: str, runtime: str, measure_device: str) -> str:
    """The device a trial of (precision, runtime) is measured on when `measure.device` resolves to
    `measure_device` (trainers.measuring: int8 and ONNX Runtime measure on the CPU)."""
    if precision in CPU_MEASURED_PRECISIONS or runtime in CPU_MEASURED_RUNTIMES:
        return "cpu"
    return measure_device


def mixed_devices(points: list[dict], measure_device: str) -> dict[str, list[str]]:
    """{device: ['precision/runtime', ...]} of the grid points; more than one key = one front would mix devices."""
    out: dict[str, list[str]] = {}
    for p in points:
        device = measured_device(p["precision"], p.get("runtime", "torch"), measure_device).split(":", 1)[0]
        label = f"{p['precision']}/{p.get('runtime', 'torch')}"
        if label not in out.setdefault(device, []):
            out[device].append(label)
    return out


def mixed_devices_problem(points: list[dict], measure_device: str) -> str | None:
    """Why these points cannot share one front (None when they are all measured on one device)."""
    devices = mixed_devices(points, measure_device)
    if len(devices) <= 1:
        return None
    where = "; ".join(f"{d}: {', '.join(labels)}" for d, labels in sorted(devices.items()))
    return (f"{measure_device!r} measures these points on different devices ({where}), and one front cannot "
            "compare them; set measure.device: cpu to measure every point on the CPU, or run the CPU-only points "
            "(int8, onnxruntime) as a sweep of their own")
