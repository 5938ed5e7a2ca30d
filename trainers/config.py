"""The typed configuration of one trial: everything `run_trial` needs, nothing about how it was chosen.

A trial config is self-contained (teacher, data, budget, compression settings, measurement
settings, output folder), so `sweep trial config.yaml` reproduces a trial without any study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from trainers.data.config import DataConfig
from trainers.measure.config import MeasureConfig
from trainers.pruning.config import PruningConfig
from trainers.strict import Strict


class TrainingConfig(Strict):
    """The student's training budget (the teacher's fine-tune has its own, under `teacher:`)."""

    epochs: float = Field(3, gt=0, description="passes over the training split (fractions allowed)")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="linear LR warm-up, fraction of steps")
    max_seq_len: int = Field(128, ge=8, le=4096, description="tokens per text; longer texts are truncated")
    eval_batch_size: int = Field(64, ge=1)
    eval_every_steps: int | None = Field(
        None, ge=1, description="validation accuracy every N optimiser steps (early stopping reads it); None: every epoch"
    )
    seed: int = 0
    seeds: int = Field(1, ge=1, le=20, description="train each point this many times (seeds seed, seed+1, ...); "
                       "quality is logged as the mean with _std, _ci95 and per-seed values")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    freeze_word_embeddings: bool = Field(
        False, description="keep the token embedding table as the teacher has it (no gradient, no optimiser state): "
        "on a small data set it changes little and it is often half the model's weights, so each step costs less")
    distill_hidden_weight: float = Field(
        0.0, ge=0, description="weight of the hidden-state distillation term (TinyBERT / MiniLM style: MSE between the "
        "student's and the teacher's per-layer hidden states, `trainers.distill.hidden_state_loss`), added to the "
        "logit loss; needs the teacher model (a live forward per batch). 0: off")


class TrialConfig(Strict):
    """One point of the compression space, ready to run."""

    name: str = "trial"
    teacher_dir: str = Field(description="the prepared teacher classifier (a model folder or hub id)")
    teacher_logits: Path | None = Field(
        None, description="cached fp32 teacher logits on the training split; live teacher forward when absent"
    )
    data: DataConfig
    data_base_dir: Path = Field(Path("."), description="relative data paths resolve against this folder")
    cache_dir: Path = Field(Path("mlruns/cache"), description="tokenised-data cache shared by trials")
    training: TrainingConfig = TrainingConfig()
    pruning: PruningConfig = PruningConfig()
    measure: MeasureConfig = MeasureConfig()
    pruning_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    distill_temperature: float = Field(1.0, gt=0.0)
    distill_alpha: float = Field(0.0, ge=0.0, le=1.0, description="0 = no distillation (no teacher forward)")
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    runtime: Literal["torch", "onnxruntime"] = Field(
        "torch", description="what serves the saved student when it is measured (onnxruntime: its CPU execution provider)"
    )
    output_dir: Path = Path("trial-output")
    measure_lock: Path | None = Field(
        None, description="a lock file shared by the workers of one machine: CPU measurements run one at a time"
    )
    save_model: bool = True
    trainings_dir: Path | None = Field(
        None, description="shared trained students by training key (train once, measure many); None: train here, share nothing"
    )
    await_verdict_s: float = Field(
        0.0, ge=0, description="early stopping on: after each evaluation, wait up to this long for the orchestrator's "
        "verdict (0: never wait, e.g. a trial run alone)")
    export_onnx: bool = Field(
        True, description="write model.onnx + model.int8.onnx and their parity check (onnx_parity.json) beside the saved student"
    )
    onnx_variants: bool = Field(
        False, description="the sweep also serves this training through ONNX Runtime: the trial that trains it exports "
        "its graphs once, beside the shared training and under its lock, so every ONNX Runtime variant only links them")
