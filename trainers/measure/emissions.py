"""Energy and CO2e of a phase from CodeCarbon's offline tracker, without ever failing the trial, and
inference energy per 1,000 predictions over a loop long enough for CodeCarbon's sampling."""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping

import torch

from trainers.measure.config import MeasureConfig
from trainers.metrics import EMISSIONS_PER_1K, ENERGY_PER_1K

# What CodeCarbon 3.x's CPU `_mode` means for the trustworthiness of the CPU energy number.
CPU_SOURCES = {
    "intel_rapl": "RAPL energy counters (measured)",
    "windows_emi": "Windows Energy Meter Interface / RAPL (measured)",
    "intel_power_gadget": "Intel Power Gadget (measured)",
    "apple_powermetrics": "powermetrics (measured)",
    "cpu_load": "TDP x CPU load estimate (psutil), not measured",
    "constant": "constant fraction of TDP, not measured",
}


@dataclass
class EmissionsResult:
    """Filled in when the `track_emissions` block exits; energy values are None when CodeCarbon failed."""

    phase: str
    energy_kwh: float | None = None
    emissions_kg_co2e: float | None = None
    cpu_energy_kwh: float | None = None
    gpu_energy_kwh: float | None = None
    ram_energy_kwh: float | None = None
    duration_s: float | None = None
    start_overhead_s: float | None = None
    stop_overhead_s: float | None = None
    error: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Only numbers CodeCarbon actually produced: nothing is logged for a failed tracker."""
        p = self.phase
        out = {f"energy_kwh_{p}": self.energy_kwh, f"emissions_kg_co2e_{p}": self.emissions_kg_co2e}
        return {k: float(v) for k, v in out.items() if v is not None}

    def tags(self) -> dict[str, str]:
        p = self.phase
        tags = {f"emissions_{k}_{p}": v for k, v in self.sources.items()}
        for name in ("start_overhead_s", "stop_overhead_s", "duration_s"):
            value = getattr(self, name)
            if value is not None:
                tags[f"emissions_{name}_{p}"] = f"{value:.4f}"
        for name in ("cpu_energy_kwh", "gpu_energy_kwh", "ram_energy_kwh"):
            value = getattr(self, name)
            if value is not None:
                tags[f"emissions_{name}_{p}"] = f"{value:.3e}"
        if self.error is not None:
            tags[f"emissions_error_{p}"] = self.error
        return tags


def _describe_tracker(tracker: Any, cfg: MeasureConfig) -> dict[str, str]:
    """What CodeCarbon could measure here; it keeps this on private attributes, so read them defensively."""
    import codecarbon

    sources = {
        "codecarbon_version": codecarbon.__version__,
        "country_iso_code": cfg.country_iso_code,
        "tracking_mode": cfg.emissions_tracking_mode,
        "measure_power_secs": f"{cfg.measure_power_secs:g}",
        "cpu_source": "none",
        "gpu_source": "none (no GPU tracked)",
        "ram_source": "unknown",
    }
    for hw in getattr(tracker, "_hardware", []):
        kind = type(hw).__name__
        if kind == "CPU":
            mode = getattr(hw, "_mode", "?")
            desc = CPU_SOURCES.get(mode, mode)
            if mode in ("cpu_load", "constant"):
                generic = " [generic CodeCarbon default]" if getattr(hw, "_is_generic_tdp", False) else ""
                desc += f"; TDP {getattr(hw, '_tdp', '?')} W{generic} for '{getattr(hw, '_model', '?')}'"
            sources["cpu_source"] = desc
        elif kind == "GPU":
            sources["gpu_source"] = "NVML/AMDSMI energy counters (measured)"
        elif kind == "RAM":
            forced = getattr(hw, "_force_ram_power", None)
            sources["ram_source"] = (f"user constant {forced} W" if forced is not None
                                     else "CodeCarbon RAM power model (DIMM count x W, estimate)")
        elif kind in ("AppleSiliconChip", "Raspberry"):
            part = getattr(hw, "chip_part", "?").lower()
            sources[f"{part}_source"] = f"{kind} power interface (measured)"
    return sources


def _new_tracker(cfg: MeasureConfig, output_dir: str | Path | None) -> Any:
    from codecarbon import OfflineEmissionsTracker
    from codecarbon.output_methods.base_output import OutputMethod

    kwargs: dict[str, Any] = dict(
        country_iso_code=cfg.country_iso_code,
        measure_power_secs=cfg.measure_power_secs,
        tracking_mode=cfg.emissions_tracking_mode,
        log_level="error",
        project_name="compression-sweep",
        output_methods=[],
    )
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        kwargs.update(output_dir=str(output_dir), output_methods=[OutputMethod.CSV])
    return OfflineEmissionsTracker(**kwargs)


def warm_hardware_probe(cfg: MeasureConfig | None = None) -> bool:
    """Run CodeCarbon's hardware probe once in this process (a tracker started and stopped), so that the
    processes forked from it find it in CodeCarbon's per-process cache (`codecarbon.core.hardware_cache`)
    instead of paying 1-2 s each (cpuinfo and power-source detection in worker threads, all joined
    before this returns). Skipped on a host with NVIDIA devices: the probe would initialise NVML in the
    process that forks, and every job probes its own GPU instead. True when the probe ran."""
    if glob.glob("/dev/nvidia[0-9]*"):
        return False
    try:
        import codecarbon  # noqa: F401

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = _new_tracker(cfg or MeasureConfig(), None)
        tracker.start()
        tracker.stop()
        return True
    except Exception:  # noqa: BLE001 - a warm-up only: each job then probes for itself
        return False


def _serialise_measurements(tracker: Any) -> bool:
    """Make CodeCarbon's periodic and final measurements mutually exclusive.

    CodeCarbon 3.3.2's stop() does not wait for a scheduled measurement already running; both then read
    the same `_last_measured_time` and charge the same interval twice. Observed here: a 1.0 s phase with
    measure_power_secs=1 intermittently reported 2x the RAM/CPU energy. With a lock the later call sees the
    updated timestamp and adds only the remainder.
    """
    measure = getattr(tracker, "_measure_power_and_energy", None)
    scheduler = getattr(tracker, "_scheduler", None)
    if measure is None or scheduler is None or not hasattr(scheduler, "function"):
        return False
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            measure()

    tracker._measure_power_and_energy = locked
    scheduler.function = locked
    return True


@contextlib.contextmanager
def track_emissions(phase: str, cfg: MeasureConfig | None = None, *,
                    output_dir: str | Path | None = None) -> Iterator[EmissionsResult]:
    """Energy (kWh) and emissions (kg CO2e) of the enclosed block, e.g. `with track_emissions("train", cfg) as em:`.

    Nothing is written to the working directory (CodeCarbon's CSV goes to `output_dir` only when one is
    given). If CodeCarbon fails, the block still runs, the energy values stay None and `error` says why.
    Exceptions of the block itself propagate after the tracker is stopped.
    """
    cfg = cfg or MeasureConfig()
    result = EmissionsResult(phase=phase)
    tracker = None
    try:
        import codecarbon  # noqa: F401 - its import sets the log level to INFO, so quieten afterwards

        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # tracker init logs before honouring log_level
        t0 = time.perf_counter()
        tracker = _new_tracker(cfg, output_dir)
        guarded = _serialise_measurements(tracker)
        tracker.start()
        result.start_overhead_s = time.perf_counter() - t0
        if getattr(tracker, "_start_time", None) is None:
            raise RuntimeError("CodeCarbon tracker did not start (see codecarbon's error log)")
    except Exception as exc:  # noqa: BLE001 - a broken energy meter must not fail a trial
        result.error = f"start failed: {type(exc).__name__}: {exc}"
        tracker = None
    try:
        yield result
    finally:
        if tracker is not None:
            _stop(tracker, result, cfg)
            result.sources["stop_race_guard"] = "on" if guarded else "off (CodeCarbon internals changed)"


def _stop(tracker: Any, result: EmissionsResult, cfg: MeasureConfig) -> None:
    try:
        t0 = time.perf_counter()
        tracker.stop()
        result.stop_overhead_s = time.perf_counter() - t0
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            raise RuntimeError("CodeCarbon stop() produced no emissions data (see codecarbon's error log)")
        result.energy_kwh = float(data.energy_consumed)
        result.emissions_kg_co2e = float(data.emissions)
        result.cpu_energy_kwh = float(data.cpu_energy)
        result.gpu_energy_kwh = float(data.gpu_energy)
        result.ram_energy_kwh = float(data.ram_energy)
        result.duration_s = float(data.duration)
    except Exception as exc:  # noqa: BLE001
        result.error = f"stop failed: {type(exc).__name__}: {exc}"
    try:
        result.sources = _describe_tracker(tracker, cfg)
    except Exception as exc:  # noqa: BLE001
        result.sources = {"describe_error": f"{type(exc).__name__}: {exc}"}
    if result.energy_kwh and result.emissions_kg_co2e is not None:
        result.sources["carbon_intensity_g_per_kwh"] = f"{1000 * result.emissions_kg_co2e / result.energy_kwh:.1f}"


# ------------------------------------------------------------------ inference energy per 1,000 predictions

INFERENCE_ENERGY_MIN_SECONDS = 3.0  # floor on the measured loop, whatever the sampling interval


def measure_inference_energy(model: Any, batches: Iterable[Mapping[str, Any]], cfg: MeasureConfig, *,
                             device: str = "cpu", autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
                             min_seconds: float = INFERENCE_ENERGY_MIN_SECONDS,
                             ) -> tuple[dict[str, float], dict[str, str]]:
    """Inference energy (kWh) and emissions (kg CO2e) per 1,000 predictions, ready to log as (metrics, tags).

    CodeCarbon samples power every `cfg.measure_power_secs`, so one sub-second pass would be mostly
    interpolation. The batches (labels dropped, moved to `device` before the tracker starts) are run in
    a loop, in eval + inference mode under `autocast`, until at least max(3 x measure_power_secs,
    `min_seconds`) have elapsed and at least one full pass is done; every row of every batch run counts
    as one prediction. No metrics (only an error tag) when CodeCarbon failed. (A trial's measuring uses
    `measure_energy_of_run` instead: the forwards of its latency run, no loop of their own.)
    """
    inputs = [{k: v.to(device) for k, v in b.items() if k != "labels"} for b in batches]
    if not inputs:
        raise ValueError("measure_inference_energy: `batches` was empty")
    target_s = max(3 * cfg.measure_power_secs, min_seconds)
    cuda = device.startswith("cuda")
    was_training = model.training
    model.eval()
    predictions = passes = 0
    try:
        with torch.inference_mode(), track_emissions("infer_per_1k", cfg) as em:
            t0 = time.perf_counter()
            for done, batch in enumerate(itertools.cycle(inputs), start=1):
                with autocast():
                    model(**batch)
                predictions += int(batch["input_ids"].shape[0])
                passes = done // len(inputs)
                if passes >= 1 and time.perf_counter() - t0 >= target_s:
                    break
            if cuda:
                torch.cuda.synchronize(device)
            loop_s = time.perf_counter() - t0
    finally:
        model.train(was_training)
    return _per_1k(em, predictions, cfg, loop_s=loop_s, target_s=target_s, min_seconds=min_seconds, tags={
        "energy_per_1k_method": "CodeCarbon offline tracker around a loop over the batches: tracked kWh (kg CO2e) "
                                "x 1000 / predictions made",
        "energy_per_1k_full_passes": str(passes),
        "energy_per_1k_batches": f"{len(inputs)} batches per pass, device {device}",
    })


def _per_1k(em: EmissionsResult, predictions: int, cfg: MeasureConfig, *, loop_s: float, target_s: float,
            min_seconds: float, tags: dict[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of a tracked inference span: kWh and kg CO2e per 1,000 predictions, with what was tracked
    (`tags`: what only the caller knows, e.g. the method and the workload)."""
    metrics: dict[str, float] = {}
    if em.energy_kwh is not None and em.emissions_kg_co2e is not None:
        metrics[ENERGY_PER_1K] = em.energy_kwh * 1000.0 / predictions
        metrics[EMISSIONS_PER_1K] = em.emissions_kg_co2e * 1000.0 / predictions
    out = em.tags()  # emissions_{cpu,gpu,ram}_source_infer_per_1k: RAPL / TDP estimate (which TDP) / NVML
    out.update({
        "energy_per_1k_unit": "kWh (kg CO2e) per 1,000 predictions",
        "energy_per_1k_country": cfg.country_iso_code,
        "energy_per_1k_seconds": f"{loop_s:.3f}",
        "energy_per_1k_tracked_seconds": f"{em.duration_s:.3f}" if em.duration_s is not None else "unknown",
        "energy_per_1k_target_seconds": f"{target_s:g} (max of 3 x measure_power_secs, {min_seconds:g} s)",
        "energy_per_1k_predictions": str(predictions),
        **tags,
    })
    if em.energy_kwh is not None:
        out["energy_per_1k_total_kwh"] = f"{em.energy_kwh:.3e}"
    return metrics, out


def measure_energy_of_run(run: Callable[[], int], top_up: Callable[[], int], cfg: MeasureConfig, *,
                          workload: str, device: str = "cpu", min_seconds: float = INFERENCE_ENERGY_MIN_SECONDS,
                          phases: dict[str, float] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Inference energy (kWh) and emissions (kg CO2e) per 1,000 predictions of forwards that run anyway.

    `run()` makes forwards (the latency run at the measured batch size) and returns how many predictions
    they made; the tracker spans it, so those forwards are not paid twice. If it lasted less than
    max(3 x measure_power_secs, `min_seconds`), `top_up()` (one more forward of the same workload,
    returning its predictions) runs until it has, so CodeCarbon's sampling still sees whole intervals.
    `workload` says in words what the forwards are (a tag). `phases` gets `energy_s`: the top-up and the
    tracker's start and stop, the seconds energy adds to `run`.
    """
    target_s = max(3 * cfg.measure_power_secs, min_seconds)
    t_all = time.perf_counter()
    with track_emissions("infer_per_1k", cfg) as em:
        t0 = time.perf_counter()
        predictions = int(run())
        run_s = time.perf_counter() - t0
        top_ups = 0
        while time.perf_counter() - t0 < target_s:
            predictions += int(top_up())
            top_ups += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        loop_s = time.perf_counter() - t0
    if phases is not None:
        phases["energy_s"] = time.perf_counter() - t_all - run_s
    if predictions <= 0:
        raise ValueError("measure_energy_of_run: the run made no predictions")
    return _per_1k(em, predictions, cfg, loop_s=loop_s, target_s=target_s, min_seconds=min_seconds, tags={
        "energy_per_1k_method": "CodeCarbon offline tracker around forwards the measurement runs anyway (the latency "
                                "run), topped up with the same forwards to the target seconds: tracked kWh (kg CO2e) "
                                "x 1000 / predictions made",
        "energy_per_1k_workload": workload,
        "energy_per_1k_run_seconds": f"{run_s:.3f}",
        "energy_per_1k_top_up_forwards": str(top_ups),
    })
