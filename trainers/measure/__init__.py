"""Measurements a sweep can trust: each number says what it measured, in which unit, where, and how often."""

from trainers.measure.accuracy import evaluate, scores_from_confusion
from trainers.measure.config import MeasureConfig, available_cores
from trainers.measure.emissions import EmissionsResult, measure_inference_energy, track_emissions
from trainers.measure.hardware import hardware_context
from trainers.measure.latency import LatencyStats, measure_latency, synthetic_inputs, torch_threads
from trainers.measure.measure import Measurement, measure_model
from trainers.measure.memory import (
    MemoryStats,
    ModelMemory,
    count_parameters,
    encoder_linear_params,
    measure_model_memory,
    model_disk_mb,
    tensor_bytes,
    track_memory,
    weight_bytes,
)

__all__ = [
    "EmissionsResult",
    "LatencyStats",
    "MeasureConfig",
    "Measurement",
    "MemoryStats",
    "ModelMemory",
    "available_cores",
    "count_parameters",
    "encoder_linear_params",
    "evaluate",
    "hardware_context",
    "measure_inference_energy",
    "measure_latency",
    "measure_model",
    "measure_model_memory",
    "model_disk_mb",
    "scores_from_confusion",
    "synthetic_inputs",
    "tensor_bytes",
    "torch_threads",
    "track_emissions",
    "track_memory",
    "weight_bytes",
]
