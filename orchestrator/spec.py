"""The sweep file: parsed once, at the edge, into typed and validated models.

Every error names the file, the field and what was expected, and is raised before anything runs,
so a typo never costs a half-finished study.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from orchestrator.early_stopping import PrunerConfig
from trainers import metrics
from trainers.config import TrainingConfig
from trainers.deploy.inference import ORT_PRECISIONS, RUNTIMES, runtime_unsupported_reason
from trainers.strict import Strict
from trainers.data.config import DataConfig
from trainers.measure.config import MeasureConfig
from trainers.measure.context import mixed_devices_problem
from trainers.precision import PRECISIONS, resolve_device, unsupported_reason
from trainers.pruning.config import PruningConfig
from trainers.teacher_config import TeacherConfig
from trainers.vocab.config import VocabularyConfig

DIMENSIONS = ("pruning_ratio", "distill_temperature", "distill_alpha", "precision", "runtime", "vocabulary")
VOCABULARIES = ("full", "trimmed")  # the teacher's vocabulary as shipped, or trimmed per the `vocabulary:` section

# `export.pick` rules -> (the metric each one ranks by, direction); all read validation or model metrics.
PICK_RULES = {
    "fastest": (metrics.LATENCY_P50_BS1, "minimize"),
    "most_accurate": (metrics.VAL_ACCURACY, "maximize"),
    "smallest": (metrics.PARAMS_TOTAL, "minimize"),
    "lightest": (metrics.MEMORY_MODEL, "minimize"),
    "greenest": (metrics.EMISSIONS_PER_1K, "minimize"),
}


CONFIDENCE = 0.95  # the paired interval a constraint's `confidence` reads (orchestrator/stats.py)


class SpecError(ValueError):
    """A sweep file that cannot run; the message says where and what was expected."""


class Range(Strict):
    """A sampled interval; `step` makes it discrete, `log` samples on a log scale."""

    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("log ranges need low > 0")
        return self


Numeric = Union[list[float], Range, float]


class SearchSpace(Strict):
    """Each dimension is a list (grid / categorical), a range (sampled) or one fixed value."""

    pruning_ratio: Numeric = [0.0]
    distill_temperature: Numeric = [1.0]
    distill_alpha: Numeric = [0.0]
    precision: list[str] | str = ["fp32"]
    runtime: list[str] | str = ["torch"]
    vocabulary: list[str] | str = ["full"]

    @field_validator("pruning_ratio", "distill_temperature", "distill_alpha", "precision", "runtime", "vocabulary",
                     mode="after")
    @classmethod
    def _as_list(cls, v):
        if isinstance(v, (int, float, str)):
            return [v]
        if isinstance(v, list) and not v:
            raise ValueError("an empty list leaves nothing to search; give at least one value")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> "SearchSpace":
        bounds = {"pruning_ratio": (0.0, 0.95), "distill_alpha": (0.0, 1.0), "distill_temperature": (1e-3, 100.0)}
        for name, (lo, hi) in bounds.items():
            value = getattr(self, name)
            values = [value.low, value.high] if isinstance(value, Range) else value
            bad = [v for v in values if not lo <= v <= hi]
            if bad:
                raise ValueError(f"{name}: {bad} outside the allowed [{lo}, {hi}]")
        for name, known in (("precision", PRECISIONS), ("runtime", RUNTIMES), ("vocabulary", VOCABULARIES)):
            unknown = [v for v in getattr(self, name) if v not in known]
            if unknown:
                raise ValueError(f"{name}: {unknown} unknown; expected any of {list(known)}")
        return self

    def is_grid(self) -> bool:
        return all(isinstance(getattr(self, d), list) for d in DIMENSIONS)

    def grid(self) -> list[dict]:
        """Every combination a runtime can serve, in a stable order (the order grid points are run):
        onnxruntime serves fp32 and int8 only, so its bf16/fp16 combinations are left out."""
        values = [getattr(self, d) for d in DIMENSIONS]
        points = [dict(zip(DIMENSIONS, combo)) for combo in itertools.product(*values)]
        return [p for p in points if runtime_unsupported_reason(p["runtime"], p["precision"]) is None]


def _decision_metric(name: str) -> str:
    """A metric something chooses on: known to the vocabulary, and never a test-split metric."""
    try:
        key = metrics.resolve(name)
    except metrics.UnknownMetric as exc:
        raise ValueError(str(exc)) from None
    if metrics.is_test_metric(key):
        raise ValueError(f"{name!r} is measured on the test split: test reports, never chooses; "
                         f"use the validation metric {key.replace(metrics.TEST_PREFIX, 'val_', 1)!r}")
    return name


class OnMetric(Strict):
    """Something that chooses on a metric: `metric` is an alias or a vocabulary name, never a test metric."""

    metric: str

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return _decision_metric(v)

    @property
    def key(self) -> str:
        """The logged metric it reads (`accuracy` -> `val_accuracy`)."""
        return metrics.resolve(self.metric)


class Objective(OnMetric):
    direction: Literal["maximize", "minimize"]


class Constraint(OnMetric):
    """A bound on a metric, absolute or relative to the teacher (the baseline run)."""

    max_drop: float | None = Field(None, description="teacher - trial <= max_drop (e.g. accuracy 0.01 = 1 point); "
                                   ">= 0 (to ask for better than the teacher, use min)")
    max_ratio: float | None = Field(None, gt=0, description="trial / teacher <= max_ratio (e.g. latency 0.5)")
    max: float | None = None
    min: float | None = None
    confidence: float | None = Field(None, description="accuracy max_drop only: hold when the lower end of the paired "
                                     "95 % interval of (trial - teacher) is >= -max_drop (default: the point estimate)")

    @field_validator("max_drop")
    @classmethod
    def _drop_not_negative(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("max_drop is how much worse than the teacher a trial may be, so it must be >= 0 "
                             "(to ask for better than the teacher, give min: the value)")
        return v

    @model_validator(mode="after")
    def _one_bound(self) -> "Constraint":
        given = [k for k in ("max_drop", "max_ratio", "max", "min") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of max_drop, max_ratio, max, min (got {given or 'none'})")
        if self.confidence is not None:
            if self.key != metrics.VAL_ACCURACY or self.max_drop is None:
                raise ValueError(f"confidence: {self.confidence} needs metric accuracy with max_drop (the paired "
                                 f"interval is measured for validation accuracy vs the teacher); got metric "
                                 f"{self.metric!r} with {given[0]}")
            if self.confidence != CONFIDENCE:
                raise ValueError(f"confidence: {self.confidence} is not measured; expected {CONFIDENCE} (the paired "
                                 "95 % interval of the difference with the teacher)")
        return self

    @property
    def label(self) -> str:
        kind = next(k for k in ("max_drop", "max_ratio", "max", "min") if getattr(self, k) is not None)
        return f"{self.metric}_{kind}" + (f"_c{round(100 * self.confidence)}" if self.confidence is not None else "")


class Sampler(Strict):
    type: Literal["grid", "random", "tpe", "nsga2"] = "grid"
    seed: int = 0
    population_size: int | None = Field(None, ge=2, description="nsga2 only")


class Budget(Strict):
    n_trials: int | None = Field(None, ge=1, description="default: the grid's size (grid) or 20")
    timeout_minutes: float | None = Field(None, gt=0, description="stop asking for new trials after this")
    trial_timeout_minutes: float | None = Field(None, gt=0, description="a trial running longer is killed (FAILED)")
    max_retries: int = Field(1, ge=0, description="re-runs of a failed trial (dead worker, crash) before it is left")
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="how often a running trial is stamped alive; after 3 missed beats (at least "
        "heartbeat + 5 s) another worker fails and retries it")


class Tracking(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under mlruns/")
    experiment: str | None = Field(None, description="default: the sweep's name")


class ExportConfig(Strict):
    pick: str = Field("fastest", description="fastest | most_accurate | smallest | greenest | trial:N")
    dir: str | None = Field(None, description="default: exports/<study>")

    @field_validator("pick")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        check_pick(v)
        return v


def check_pick(rule: str) -> None:
    """A pick rule is a PICK_RULES name or trial:N."""
    if rule.startswith("trial:"):
        if not rule.split(":", 1)[1].isdigit():
            raise ValueError(f"pick {rule!r}: expected trial:N with N a trial number")
        return
    if rule not in PICK_RULES:
        raise ValueError(f"pick {rule!r}: expected one of {sorted(PICK_RULES)} or trial:N")


class SeedPolicy(Strict):
    """`training.seeds: {min: 1, max: 3}`: every point trains `min` seeds; then, round by round, points whose
    verdict is still uncertain (on the front or not, ~teacher or worse) get one more, up to `max`, until
    none is uncertain or `max_trainings` student trainings have run (orchestrator/adaptive_seeds.py)."""

    min: int = Field(1, ge=1, le=20, description="seeds every point trains")
    max: int = Field(3, ge=1, le=20, description="the most seeds an uncertain point gets")
    max_trainings: int | None = Field(
        None, ge=1, description="student trainings the whole sweep may run, all seeds and top-ups counted (a training "
        "shared by several points counts once); None: until no verdict is uncertain")

    @model_validator(mode="after")
    def _ordered(self) -> "SeedPolicy":
        if self.max < self.min:
            raise ValueError(f"seeds: max {self.max} is below min {self.min}")
        return self

    @property
    def adaptive(self) -> bool:
        return self.max > self.min


class SweepTraining(TrainingConfig):
    """The sweep file's `training:` section: a trial's TrainingConfig, whose `seeds` may be adaptive."""

    seeds: Union[int, SeedPolicy] = Field(  # type: ignore[assignment]
        1, description="train each point this many times (seeds seed, seed+1, ...), or {min, max, max_trainings}: "
        "adaptive, extra seeds only for points whose verdict is still uncertain")

    @field_validator("seeds")
    @classmethod
    def _seed_count(cls, v):
        if isinstance(v, int) and not 1 <= v <= 20:
            raise ValueError(f"seeds: expected 1 to 20 (or {{min, max}}), got {v}")
        return v

    @property
    def seed_policy(self) -> SeedPolicy:
        return self.seeds if isinstance(self.seeds, SeedPolicy) else SeedPolicy(min=self.seeds, max=self.seeds)

    def for_trial(self, seeds: int | None = None) -> TrainingConfig:
        """The TrainingConfig one trial runs: `seeds` of them (default: the policy's min)."""
        n = self.seed_policy.min if seeds is None else seeds
        return TrainingConfig.model_validate({**self.model_dump(exclude={"seeds"}), "seeds": n})


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="study and experiment name")
    description: str = ""
    teacher: TeacherConfig
    data: DataConfig
    training: SweepTraining = SweepTraining()
    pruning: PruningConfig = PruningConfig()
    measure: MeasureConfig = MeasureConfig()
    vocabulary: VocabularyConfig = VocabularyConfig()
    search_space: SearchSpace = SearchSpace()
    sampler: Sampler = Sampler()
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="accuracy", direction="maximize"), Objective(metric="latency", direction="minimize")],
        min_length=1,
    )
    constraints: list[Constraint] = []
    budget: Budget = Budget()
    pruner: PrunerConfig = PrunerConfig()
    storage: str | None = Field(None, description="Optuna storage URL; default a journal file under mlruns/")
    tracking: Tracking = Tracking()
    export: ExportConfig = ExportConfig()

    # Filled by load_sweep, not by the user.
    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> "SweepSpec":
        if self.sampler.type == "grid" and not self.search_space.is_grid():
            ranged = [d for d in DIMENSIONS if not isinstance(getattr(self.search_space, d), list)]
            raise ValueError(f"sampler grid needs a list of values for every dimension; {ranged} are ranges")
        names = [o.key for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives: duplicate metric in {names}")
        space = self.search_space
        unservable = sorted(set(space.precision) - set(ORT_PRECISIONS))
        if self.sampler.type != "grid" and "onnxruntime" in space.runtime and unservable:
            raise ValueError(f"search_space: runtime onnxruntime serves {' and '.join(ORT_PRECISIONS)} only, and sampler "
                             f"{self.sampler.type} could pair it with {unservable}; "
                             "use the grid sampler (it leaves those pairs out) or drop them")
        if not space.grid():
            raise ValueError("search_space: no combination of precision and runtime can run")
        trimmed = "trimmed" in self.search_space.vocabulary
        if trimmed and self.vocabulary.trim == "none":
            raise ValueError("search_space.vocabulary lists 'trimmed' but vocabulary.trim is 'none'; "
                             "set vocabulary.trim to 'corpus' or 'top_k'")
        if not trimmed and self.vocabulary.trim != "none":
            raise ValueError(f"vocabulary.trim is {self.vocabulary.trim!r} but search_space.vocabulary has no "
                             "'trimmed' value, so no student would use it; add 'trimmed' (e.g. [full, trimmed])")
        if self.pruner.enabled and self.data.path and self.data.split.validation <= 0:
            raise ValueError(f"pruner {self.pruner.type} stops trials on validation accuracy; "
                             "data.split.validation is 0, so there is none to read")
        return self

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def n_trials(self) -> int:
        if self.budget.n_trials is not None:
            return self.budget.n_trials
        return len(self.search_space.grid()) if self.sampler.type == "grid" else 20

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_sweep(path: str | Path, *, check_hardware: bool = True, check_model: bool = True) -> SweepSpec:
    """Read and validate a sweep file; raise SpecError naming file, field and expectation.

    `check_model`: refuse a teacher whose family no adapter handles (read from its config.json only)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of sections (name, teacher, data, ...), got {type(raw).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: field {_where(e['loc'])}: {e['msg']}" + _got(e) for e in exc.errors()]
        raise SpecError("\n".join(lines)) from None
    spec.source = path.resolve()
    try:
        spec.vocabulary.corpus_path(spec.base_dir)
    except ValueError as exc:
        raise SpecError(f"{path}: field {exc}") from None
    if check_hardware:
        check_precisions(spec, path)
    if check_model:
        check_teacher_family(spec, path)
    return spec


def check_teacher_family(spec: SweepSpec, path: Path | str = "sweep") -> None:
    """An unsupported encoder family is refused here, in seconds, before the teacher trains."""
    from orchestrator.model_family import family_refusal
    from trainers.models import resolve_model_ref

    try:
        ref = resolve_model_ref(spec.teacher.model, spec.base_dir)
    except ValueError:
        return  # a missing folder or package is reported where the teacher is loaded
    if why := family_refusal(ref):
        raise SpecError(f"{path}: field teacher.model: {spec.teacher.model!r}: {why}")


def _got(error: dict) -> str:
    if error["type"] in {"missing"}:
        return ""
    value = error.get("input")
    text = repr(value)
    return f" (got {text[:80]})" if not isinstance(value, dict) else ""


def check_precisions(spec: SweepSpec, path: Path | str = "sweep") -> None:
    """Refuse precisions the hardware cannot run, before any trial starts."""
    try:
        device = resolve_device(spec.training.device)
    except ValueError as exc:
        raise SpecError(f"{path}: field training.device: {exc}") from None
    problems = [f"{p}: {r}" for p in spec.search_space.precision if (r := unsupported_reason(p, device))]
    if problems:
        raise SpecError(
            f"{path}: field search_space.precision: cannot run on this machine ({device}): " + "; ".join(problems)
        )
    try:
        measure_device = resolve_device(spec.measure.device)
    except ValueError as exc:
        raise SpecError(f"{path}: field measure.device: {exc}") from None
    check_one_measuring_device(spec, path, measure_device=measure_device)


def check_one_measuring_device(spec: SweepSpec, path: Path | str, *, measure_device: str) -> None:
    """Refuse points measured on two devices (on a CUDA host int8 and ONNX Runtime measure on the CPU)."""
    space = spec.search_space
    points = space.grid() if space.is_grid() else [{"precision": p, "runtime": r} for p in space.precision
                                                   for r in space.runtime]
    if (problem := mixed_devices_problem(points, measure_device)) is not None:
        raise SpecError(f"{path}: field measure.device: {problem}")


def stored_spec(record, name: str, *, check_hardware: bool = False) -> SweepSpec:
    """The spec a study was launched with, from its record (no file, no MLflow)."""
    spec = SweepSpec.model_validate(record.spec)
    spec.source = Path(record.spec_source) if record.spec_source else None
    if check_hardware:
        check_precisions(spec, record.spec_source or name)
    return spec
