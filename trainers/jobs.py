"""Typed job and result documents exchanged between the orchestrator and a worker process (JSON files).

They are the whole contract across the process boundary: the orchestrator writes a job, runs
`python -m trainers.entry KIND JOB RESULT`, and reads the result, whatever happened in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainers.config import TrainingConfig, TrialConfig
from trainers.data.config import DataConfig
from trainers.measure.config import MeasureConfig
from trainers.teacher import TeacherConfig
from trainers.vocab.config import VocabularyConfig


class PrepareJob(BaseModel):
    """Validate the data, tokenise it, build (or find) the teacher, and measure it as the baseline."""

    model_config = ConfigDict(extra="forbid")

    teacher: TeacherConfig
    teacher_ref: str
    data: DataConfig
    data_base_dir: Path
    training: TrainingConfig
    measure: MeasureConfig
    cache_dir: Path
    measure_baseline: bool = True
    output_dir: Path
    vocabulary: VocabularyConfig = VocabularyConfig()
    published_teacher: dict[str, str] | None = Field(
        None, description="{key, data_fingerprint} of the teacher another machine published and this one downloaded "
        "into cache_dir: used as is, never built here")


class PrepareResult(BaseModel):
    ok: bool = True
    error: str | None = None
    label_names: list[str] = []
    data_report: dict[str, Any] = {}
    data_report_text: str = ""
    data_fingerprint: str = ""
    teacher_dir: str = ""
    teacher_logits: str = ""
    teacher_key: str = ""
    teacher_built_now: bool = False
    teacher_meta: dict[str, Any] = {}
    trimmed_teacher_dir: str = Field("", description="the teacher with its vocabulary trimmed ('' when not asked for)")
    trimmed_teacher_logits: str = ""
    vocabulary_metrics: dict[str, float] = Field(default_factory=dict, description="the trim's vocab_* metrics")
    baseline_metrics: dict[str, float] = {}
    baseline_tags: dict[str, str] = {}
    baseline_per_class_f1: dict[str, float] = {}
    baseline_val_per_class_f1: dict[str, float] = {}
    baseline_predictions: str = Field("", description="the teacher's per-row predictions (predictions.npz)")
    oneoff_metrics: dict[str, float] = Field(default_factory=dict, description="the teacher's fine-tune and logits "
                                             "(oneoff_* names): the sweep's one-off costs, charged to no row")
    oneoff_tags: dict[str, str] = {}


class MeasureJob(BaseModel):
    """Measure a saved model folder in a fresh process (`sweep measure`'s code path)."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path
    data: DataConfig
    data_base_dir: Path
    measure: MeasureConfig
    max_seq_len: int
    cache_dir: Path
    batch_size: int = 64
    precision: str | None = None
    runtime: str | None = None
    predictions_out: Path | None = Field(None, description="where to write the per-row predictions (predictions.npz)")


class MeasureResult(BaseModel):
    ok: bool = True
    error: str | None = None
    precision: str = ""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    per_class_f1: dict[str, float] = Field(default_factory=dict, description="per label, on the test split")
    val_per_class_f1: dict[str, float] = Field(default_factory=dict, description="per label, on the validation split")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per measuring phase (load_s, "
                                      "latency_bsN_s, test_score_s, memory_s, val_score_s, energy_s)")


class TrialResult(BaseModel):
    ok: bool = True
    error: str | None = None
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    params: dict[str, Any] = {}
    per_class_f1: dict[str, float] = {}
    val_per_class_f1: dict[str, float] = {}
    pruning: dict[str, Any] = {}
    model_dir: str | None = None
    predictions: str | None = Field(None, description="per-row predictions of every seed (predictions.npz)")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per phase of the worker")
    pruned: bool = Field(False, description="training was stopped early on request: partial cost, nothing measured")
    training_key: str | None = Field(None, description="the shared training this student is (train once, measure many)")
    reused_training_of: str | None = Field(None, description="the trial (config name) that trained it, when not this one")


__all__ = ["PrepareJob", "PrepareResult", "TrialConfig", "TrialResult"]
