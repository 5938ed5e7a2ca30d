"""How a model is measured: one config shared by the trial and `sweep measure`, so both report the same thing."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def available_cores() -> int:
    """Cores this process may run on (CPU affinity), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class MeasureConfig(BaseModel):
    """Settings of one measurement.

    Latency is repeated after `warmup` until the median of the first and second half of the timings
    agree within `rel_tol`, or `max_repeats` / `max_seconds` is hit (the stop reason is recorded).
    `threads=None` means every core of the measuring process (`available_cores()`); the number actually
    used is recorded in the tags. Emissions use CodeCarbon's *offline* tracker with the grid carbon
    intensity of `country_iso_code` (default "USA", CodeCarbon's own default region; set it to where
    the machine really is, e.g. "IND"). `emissions_tracking_mode="process"` attributes CPU/RAM power to
    this process only, so trials running side by side do not charge each other.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1, description="configured batch size (latency/throughput at this and at 1)")
    seq_len: int = Field(128, ge=1, description="fixed sequence length of the synthetic latency input")
    warmup: int = Field(3, ge=0)
    min_repeats: int = Field(10, ge=2)
    max_repeats: int = Field(100, ge=2)
    rel_tol: float = Field(0.02, gt=0, lt=1, description="max relative gap between the two halves' medians")
    max_seconds: float = Field(60.0, gt=0, description="cap on timed repeats per (batch size) setting")
    threads: int | None = Field(None, ge=1, description="CPU torch threads; None = all cores of this process")
    country_iso_code: str = "USA"
    measure_power_secs: float = Field(1.0, gt=0)
    emissions_tracking_mode: Literal["process", "machine"] = "process"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    memory_sample_interval_s: float = Field(0.002, gt=0, le=1.0)
    seed: int = 0

    @field_validator("country_iso_code")
    @classmethod
    def _known_country(cls, code: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ValueError(f"country_iso_code must be a 3-letter upper-case ISO code like 'USA', got {code!r}")
        try:
            from codecarbon.input import DataSource

            known = DataSource().get_global_energy_mix_data()
        except Exception:  # CodeCarbon unusable: emissions will report the error, not the config
            return code
        if code not in known:
            raise ValueError(f"country_iso_code {code!r} is not in CodeCarbon's global energy mix table")
        return code

    @model_validator(mode="after")
    def _repeats_ordered(self) -> "MeasureConfig":
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be >= min_repeats ({self.min_repeats})")
        return self

    def resolved_threads(self) -> int:
        return self.threads if self.threads is not None else available_cores()
