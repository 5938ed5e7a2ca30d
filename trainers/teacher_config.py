"""`teacher:` of a sweep file, apart from `trainers.teacher` so reading a spec imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TeacherConfig(BaseModel):
    """`teacher:` in a sweep file."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="hub id, local folder, or pkg:package/subdir of a model shipped in a pip package")
    fine_tune: Literal["auto", "always", "never"] = Field(
        "auto",
        description="auto: fine-tune unless the model is already a classifier over the dataset's labels",
    )
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
