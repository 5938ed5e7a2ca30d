"""The metric vocabulary: every metric name the project logs or decides on, defined once.

A metric name carries its unit (`_ms`, `_mb`, `_kwh`, ...) and, for quality metrics, its split:
`val_*` is measured on the validation split and is what every decision reads (objectives,
constraints, Pareto front, export pick, early stopping); `test_*` is measured on the test split and
is only ever reported. Measurement (`trainers/`) produces these names; the spec, Pareto logic,
reports and export (`orchestrator/`) read them through this module, so a typo is an error at
validation time rather than a trial that fails after hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]

# --- quality, per split ------------------------------------------------------------------------
VAL_ACCURACY = "val_accuracy"
VAL_MACRO_F1 = "val_macro_f1"
TEST_ACCURACY = "test_accuracy"
TEST_MACRO_F1 = "test_macro_f1"
VAL_EXAMPLES = "val_examples"  # rows of the validation split the val_* scores were measured on
TEST_EXAMPLES = "test_examples"
# The quality metrics measured once per training seed (their mean is logged under the plain name).
SEEDED = (VAL_ACCURACY, VAL_MACRO_F1, TEST_ACCURACY, TEST_MACRO_F1)

# --- speed -------------------------------------------------------------------------------------
LATENCY_P50_BS1 = "latency_ms_p50_bs1"
LATENCY_P90_BS1 = "latency_ms_p90_bs1"
LATENCY_P99_BS1 = "latency_ms_p99_bs1"

# --- memory and size ---------------------------------------------------------------------------
MEMORY_MODEL = "memory_model_mb"  # weights at the deployed precision + peak activation/workspace of the measured batch
MEMORY_WEIGHTS = "memory_weights_mb"  # bytes of the deployed weights (int8 weights count 1 byte)
MEMORY_ACTIVATIONS = "memory_activations_peak_mb"  # peak memory above the loaded model during the measured forwards
MEMORY_PROCESS_PEAK = "memory_process_peak_mb_infer"  # whole measuring process peak RSS (interpreter + torch included)
MEASURE_LOAD = "measure_load_per_core"  # 1-min load average per core while latency was timed (other work on the machine)
MODEL_DISK = "model_disk_mb"  # weight files on disk, at the stored precision
PARAMS_TOTAL = "params_total"
PARAMS_ENCODER = "params_encoder"

# --- energy ------------------------------------------------------------------------------------
ENERGY_TRAIN = "energy_kwh_train"
TRAININGS_RUN = "student_trainings_run"  # seed trainings this trial ran itself (not reused from the shared cache)
TRAIN_STEPS = "train_steps"  # optimiser steps the student's trainings ran, all seeds (fewer when stopped early)
TRAIN_SECONDS = "train_seconds"
TRAIN_STEPS_PLANNED = "train_steps_planned"  # the steps of every seed's training run to the end
EMISSIONS_TRAIN = "emissions_kg_co2e_train"
ENERGY_PER_1K = "energy_kwh_per_1k_predictions"
EMISSIONS_PER_1K = "emissions_kg_co2e_per_1k_predictions"

# --- one-off costs of a sweep (logged on the parent run, shown once, charged to no row) ----------
ONEOFF_PREFIX = "oneoff_"
ONEOFF_TEACHER_FINETUNE_ENERGY = "oneoff_teacher_finetune_energy_kwh"
ONEOFF_TEACHER_FINETUNE_EMISSIONS = "oneoff_teacher_finetune_emissions_kg_co2e"
ONEOFF_TEACHER_LOGITS_ENERGY = "oneoff_teacher_logits_energy_kwh"
ONEOFF_TEACHER_LOGITS_EMISSIONS = "oneoff_teacher_logits_emissions_kg_co2e"
# (phase of the teacher's preparation, CodeCarbon's metric for that phase) -> the one-off name
ONEOFF_NAMES = {
    ("finetune", "energy_kwh"): ONEOFF_TEACHER_FINETUNE_ENERGY,
    ("finetune", "emissions_kg_co2e"): ONEOFF_TEACHER_FINETUNE_EMISSIONS,
    ("logits", "energy_kwh"): ONEOFF_TEACHER_LOGITS_ENERGY,
    ("logits", "emissions_kg_co2e"): ONEOFF_TEACHER_LOGITS_EMISSIONS,
}

# --- pruning and vocabulary --------------------------------------------------------------------
PRUNING_ACHIEVED_RATIO = "pruning_achieved_ratio"
VOCAB_SIZE_BEFORE = "vocab_size_before"
VOCAB_SIZE_AFTER = "vocab_size_after"
VOCAB_PARAMS_SAVED = "vocab_params_saved"
VOCAB_WEIGHTS_SAVED = "vocab_weights_saved_mb"
VAL_VOCAB_LOST_RATE = "val_vocab_lost_rate"  # split prefix first: test_* stays out of every decision
TEST_VOCAB_LOST_RATE = "test_vocab_lost_rate"
VAL_VOCAB_UNK_RATE = "val_vocab_unk_rate"
TEST_VOCAB_UNK_RATE = "test_vocab_unk_rate"

# --- compared with the teacher (computed by the orchestrator from the baseline) ----------------
DELTA_VAL_ACCURACY = "delta_val_accuracy_points"
# Intervals computed by the orchestrator from the per-row predictions (orchestrator/stats.py):
VAL_ACCURACY_CI_LOW = "val_accuracy_ci_low"  # pooled 95 % interval of the accuracy: rows and seeds (fractions)
VAL_ACCURACY_CI_HIGH = "val_accuracy_ci_high"
TEST_ACCURACY_CI_LOW = "test_accuracy_ci_low"
TEST_ACCURACY_CI_HIGH = "test_accuracy_ci_high"
DELTA_VAL_ACCURACY_CI_LOW = "delta_val_accuracy_points_ci_low"  # paired 95 % interval of student - teacher (points)
DELTA_VAL_ACCURACY_CI_HIGH = "delta_val_accuracy_points_ci_high"
DELTA_TEST_ACCURACY_CI_LOW = "delta_test_accuracy_points_ci_low"
DELTA_TEST_ACCURACY_CI_HIGH = "delta_test_accuracy_points_ci_high"
SPEEDUP_BS1 = "speedup_p50_bs1"

# Seeds: a metric measured once per training seed is logged as its mean under the plain name, plus
# `<name>_std`, `<name>_ci95` (half-width of the 95 % t-interval of the mean) and `<name>_seed<i>`.
SEED_SUFFIXES = ("_std", "_ci95")
STD_SUFFIX, CI95_SUFFIX = SEED_SUFFIXES


def seed_name(metric: str, seed_index: int) -> str:
    return f"{metric}_seed{seed_index}"


def std_name(metric: str) -> str:
    return metric + STD_SUFFIX


def ci95_name(metric: str) -> str:
    return metric + CI95_SUFFIX


@dataclass(frozen=True)
class MetricInfo:
    name: str
    unit: str
    meaning: str
    better: Direction


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(VAL_ACCURACY, "fraction 0-1", "accuracy on the validation split (decides)", "maximize"),
        MetricInfo(VAL_MACRO_F1, "fraction 0-1", "macro-averaged F1 on the validation split (decides)", "maximize"),
        MetricInfo(TEST_ACCURACY, "fraction 0-1", "accuracy on the held-out test split (reported only)", "maximize"),
        MetricInfo(TEST_MACRO_F1, "fraction 0-1", "macro-averaged F1 on the test split (reported only)", "maximize"),
        MetricInfo(VAL_EXAMPLES, "rows", "validation rows the val_* scores were measured on", "maximize"),
        MetricInfo(TEST_EXAMPLES, "rows", "test rows the test_* scores were measured on", "maximize"),
        MetricInfo(LATENCY_P50_BS1, "ms", "median wall time of one forward pass at batch 1", "minimize"),
        MetricInfo(LATENCY_P90_BS1, "ms", "90th percentile forward-pass time at batch 1", "minimize"),
        MetricInfo(LATENCY_P99_BS1, "ms", "99th percentile forward-pass time at batch 1", "minimize"),
        MetricInfo(MEMORY_MODEL, "MiB", "deployed weights + peak activation memory of the measured batch (activations: "
                   "torch's allocator peak for torch, the RSS increase for ONNX Runtime; compare within one runtime)",
                   "minimize"),
        MetricInfo(MEMORY_WEIGHTS, "MiB", "bytes of the weights at the deployed precision (the same method for every "
                   "runtime: the one memory number that compares runtimes)", "minimize"),
        MetricInfo(MEMORY_ACTIVATIONS, "MiB", "peak memory of the forward passes above the loaded model", "minimize"),
        MetricInfo(MEMORY_PROCESS_PEAK, "MiB", "peak RSS of the whole measuring process (includes torch itself)", "minimize"),
        MetricInfo(MEASURE_LOAD, "load/core", "1-minute load average per logical core, mean of before and after the "
                   "timed forwards: a speed-up whose two sides differ here was timed under different load", "minimize"),
        MetricInfo(MODEL_DISK, "MiB", "weight files of the saved model at their stored precision", "minimize"),
        MetricInfo(PARAMS_TOTAL, "count", "all parameters of the model", "minimize"),
        MetricInfo(PARAMS_ENCODER, "count", "weights of the encoder's attention and FFN Linear layers", "minimize"),
        MetricInfo(TRAIN_STEPS, "steps", "optimiser steps of the student's trainings with their hybrid-filled retraining, "
                   "all seeds summed (fewer when pruned early)", "minimize"),
        MetricInfo(TRAININGS_RUN, "count", "student trainings (one per seed) this trial ran itself, not reused from "
                   "an identical training another trial ran", "minimize"),
        MetricInfo(TRAIN_STEPS_PLANNED, "steps", "optimiser steps of all seeds' trainings (retraining included) run to "
                   "the end", "minimize"),
        MetricInfo(TRAIN_SECONDS, "s", "wall time of the student's training loops with their hybrid-filled retraining, "
                   "all seeds summed", "minimize"),
        MetricInfo(ENERGY_TRAIN, "kWh", "energy of the student's trainings, all seeds summed (CodeCarbon)", "minimize"),
        MetricInfo(EMISSIONS_TRAIN, "kg CO2e", "emissions of the student's trainings, all seeds summed (CodeCarbon)",
                   "minimize"),
        MetricInfo(ENERGY_PER_1K, "kWh", "inference energy per 1,000 predictions (CodeCarbon)", "minimize"),
        MetricInfo(EMISSIONS_PER_1K, "kg CO2e", "inference emissions per 1,000 predictions (CodeCarbon)", "minimize"),
        MetricInfo(ONEOFF_TEACHER_FINETUNE_ENERGY, "kWh", "the teacher's fine-tune, paid once per sweep (CodeCarbon)", "minimize"),
        MetricInfo(ONEOFF_TEACHER_FINETUNE_EMISSIONS, "kg CO2e", "the teacher's fine-tune, paid once per sweep (CodeCarbon)", "minimize"),
        MetricInfo(ONEOFF_TEACHER_LOGITS_ENERGY, "kWh", "the teacher's logits on the training split, paid once (CodeCarbon)", "minimize"),
        MetricInfo(ONEOFF_TEACHER_LOGITS_EMISSIONS, "kg CO2e", "the teacher's logits on the training split, paid once (CodeCarbon)", "minimize"),
        MetricInfo(PRUNING_ACHIEVED_RATIO, "fraction 0-1", "encoder attention+FFN weights physically removed", "maximize"),
        MetricInfo(VOCAB_SIZE_BEFORE, "tokens", "tokenizer vocabulary before trimming", "minimize"),
        MetricInfo(VOCAB_SIZE_AFTER, "tokens", "tokenizer vocabulary after trimming", "minimize"),
        MetricInfo(VOCAB_PARAMS_SAVED, "count", "parameters removed by vocabulary trimming (embeddings, tied head)", "maximize"),
        MetricInfo(VOCAB_WEIGHTS_SAVED, "MiB", "weight bytes (at the model's dtype) removed by vocabulary trimming", "maximize"),
        MetricInfo(VAL_VOCAB_LOST_RATE, "fraction 0-1",
                   "validation tokens (untrimmed tokenizer) missing from the trimmed vocabulary", "minimize"),
        MetricInfo(TEST_VOCAB_LOST_RATE, "fraction 0-1",
                   "test tokens (untrimmed tokenizer) missing from the trimmed vocabulary (reported only)", "minimize"),
        MetricInfo(VAL_VOCAB_UNK_RATE, "fraction 0-1",
                   "validation tokens that became unknown by trimming (share of the untrimmed tokens)",
                   "minimize"),
        MetricInfo(TEST_VOCAB_UNK_RATE, "fraction 0-1",
                   "test tokens that became unknown by trimming (share of the untrimmed tokens; reported only)", "minimize"),
        MetricInfo(DELTA_VAL_ACCURACY, "points", "validation accuracy minus the teacher's, x100", "maximize"),
        MetricInfo(SPEEDUP_BS1, "x", "teacher p50 latency at batch 1 / this model's", "maximize"),
        MetricInfo(VAL_ACCURACY_CI_LOW, "fraction 0-1", "lower end of the 95 % interval of val accuracy (rows and "
                   "seeds, two-level bootstrap)", "maximize"),
        MetricInfo(VAL_ACCURACY_CI_HIGH, "fraction 0-1", "upper end of the 95 % interval of val accuracy", "maximize"),
        MetricInfo(TEST_ACCURACY_CI_LOW, "fraction 0-1", "lower end of the 95 % interval of test accuracy (reported only)",
                   "maximize"),
        MetricInfo(TEST_ACCURACY_CI_HIGH, "fraction 0-1", "upper end of the 95 % interval of test accuracy (reported only)",
                   "maximize"),
        MetricInfo(DELTA_VAL_ACCURACY_CI_LOW, "points", "lower end of the paired 95 % interval of val accuracy minus the "
                   "teacher's (shared rows)", "maximize"),
        MetricInfo(DELTA_VAL_ACCURACY_CI_HIGH, "points", "upper end of the paired 95 % interval of val accuracy minus "
                   "the teacher's", "maximize"),
    )
}

# Friendly names users write in objectives, constraints and pick rules -> the metric they read.
ALIASES: dict[str, str] = {
    "accuracy": VAL_ACCURACY,
    "f1": VAL_MACRO_F1,
    "latency": LATENCY_P50_BS1,
    "latency_ms": LATENCY_P50_BS1,
    "memory": MEMORY_MODEL,
    "memory_mb": MEMORY_MODEL,
    "size": MODEL_DISK,
    "params": PARAMS_TOTAL,
    "energy": ENERGY_PER_1K,
    "emissions": EMISSIONS_PER_1K,
}

# Metrics whose names match these prefixes are logged by measurement but not listed one by one
# (per-layer pruning shapes, per-batch-size latencies, per-seed values, ...). A name in none of
# these is unknown.
FAMILY_PREFIXES = ("latency_ms_", "throughput_samples_per_s_", "memory_", "energy_kwh", "emissions_kg_co2e",
                   "pruning_", "params_", "val_", "test_", "train_", "vocab_", "ratio_", "speedup", "delta_",
                   "onnx_", "runtime_")

# Metrics that describe the test split: never allowed in anything that chooses.
TEST_PREFIX = "test_"


class UnknownMetric(ValueError):
    pass


def resolve(name: str) -> str:
    """The logged metric a user-facing name refers to (an alias or a full metric name)."""
    metric = ALIASES.get(name, name)
    if metric in METRICS or any(metric.startswith(p) for p in FAMILY_PREFIXES):
        return metric
    raise UnknownMetric(f"unknown metric {name!r}; expected an alias ({', '.join(sorted(ALIASES))}) "
                        f"or a metric name ({', '.join(sorted(METRICS))})")


def is_test_metric(name: str) -> bool:
    return name.startswith(TEST_PREFIX)


def describe(name: str) -> str:
    """'<meaning> [<unit>]' for a known metric, the bare name otherwise (for captions and model cards)."""
    info = METRICS.get(name)
    return f"{info.meaning} [{info.unit}]" if info else name
