"""Measurements a sweep can trust: each number says what it measured, in which unit, where, and how often.

Names load on first use (PEP 562), so `import trainers.measure.config` and the
read-only commands do not import torch."""

from __future__ import annotations

from trainers.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "EmissionsResult": "trainers.measure.emissions",
    "LatencyStats": "trainers.measure.latency",
    "MeasureConfig": "trainers.measure.config",
    "Measurement": "trainers.measure.measure",
    "MemoryStats": "trainers.measure.memory",
    "ModelMemory": "trainers.measure.memory",
    "available_cores": "trainers.measure.config",
    "count_parameters": "trainers.measure.memory",
    "encoder_linear_params": "trainers.measure.memory",
    "evaluate": "trainers.measure.accuracy",
    "hardware_context": "trainers.measure.hardware",
    "measure_inference_energy": "trainers.measure.emissions",
    "measure_latency": "trainers.measure.latency",
    "measure_model": "trainers.measure.measure",
    "measure_model_memory": "trainers.measure.memory",
    "model_disk_mb": "trainers.measure.memory",
    "scores_from_confusion": "trainers.measure.accuracy",
    "synthetic_inputs": "trainers.measure.latency",
    "tensor_bytes": "trainers.measure.memory",
    "torch_threads": "trainers.measure.latency",
    "track_emissions": "trainers.measure.emissions",
    "track_memory": "trainers.measure.memory",
    "weight_bytes": "trainers.measure.memory",
})
