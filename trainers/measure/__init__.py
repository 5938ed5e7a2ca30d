"""Measurements a sweep can trust: each number says what it measured, in which unit, where, and how often."""

from trainers.measure.accuracy import evaluate, scores_from_confusion
from trainers.measure.config import MeasureConfig, available_cores
from trainers.measure.emissions import EmissionsResult, track_emissions
from trainers.measure.hardware import hardware_context
from trainers.measure.latency import LatencyStats, measure_latency, synthetic_inputs, torch_threads
from trainers.measure.measure import Measurement, measure_model
from trainers.measure.memory import (
    MemoryStats,
    count_parameters,
    encoder_linear_params,
    model_disk_mb,
    track_memory,
)

__all__ = [
    "EmissionsResult",
    "LatencyStats",
    "MeasureConfig",
    "Measurement",
    "MemoryStats",
    "available_cores",
    "count_parameters",
    "encoder_linear_params",
    "evaluate",
    "hardware_context",
    "measure_latency",
    "measure_model",
    "model_disk_mb",
    "scores_from_confusion",
    "synthetic_inputs",
    "torch_threads",
    "track_emissions",
    "track_memory",
]
