"""`sweep check FILE`: everything that can go wrong before compute is spent, and what the sweep will cost.

Validates the file (and the hardware for every precision), reads the data and prints its report,
counts the grid points, the points folded away (temperature at alpha 0) and the distinct trainings
after sharing, and estimates wall time from a short calibration (a few timed training steps of the
teacher-as-student and of the least and most pruned student). Writes no study, no runs and no cache:
its scratch files live in a temporary folder that is removed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.cost import Estimate, distinct_trainings, estimate, fold_points, human_seconds
from orchestrator.spec import SpecError, SweepSpec

Say = Callable[[str], None]


@dataclass
class CheckReport:
    points: list[dict]  # what the sweep queues (grid) or the budget's worth of samples (other samplers)
    folded: int
    trainings: int
    estimate: Estimate | None
    data_report: str


def grid_summary(spec: SweepSpec) -> tuple[list[dict], str]:
    """The grid points a launch queues (folded, possibly a seeded subset) and a line saying what was counted."""
    from orchestrator.trial_queue import grid_points

    full = spec.search_space.grid()
    kept, folded = fold_points(full)
    points = grid_points(spec)
    line = (f"grid: {len(full)} point(s), {folded} folded (temperature has no effect at distill_alpha 0), "
            f"{len(kept)} distinct point(s) with {distinct_trainings(kept)} distinct training(s) "
            f"(int8 and ONNX Runtime reuse the fp32 PyTorch training); this sweep runs {len(points)} point(s) = "
            f"{distinct_trainings(points)} training(s)"
            + _seeds_note(spec.training.seed_policy))
    return points, line


def _seeds_note(policy) -> str:
    if policy.adaptive:
        cap = f", at most {policy.max_trainings} trainings in all" if policy.max_trainings else ""
        return f" x {policy.min} seed(s), up to {policy.max} for points whose verdict stays uncertain (adaptive{cap})"
    return f" x {policy.min} seeds" if policy.min > 1 else ""


def check_sweep(spec: SweepSpec, *, say: Say, calibrate: bool = True, workers: int = 1,
                teacher_cache: Path | None = None, data_report: bool = True) -> CheckReport:
    """Run the checks and print what they found; raises on any error (bad data, unsupported hardware).

    `data_report=False` reads the data without printing its report (`sweep launch` shows the
    preparation's own report, which also counts truncated texts)."""
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from trainers.data import encode_cached, fingerprint, load_data
    from trainers.models import resolve_model_ref
    from trainers.train import planned_steps

    check_memory_like_for_like(spec)
    model_ref = resolve_model_ref(spec.teacher.model, spec.base_dir)
    check_block_size(spec, model_ref)
    tokenizer = AutoTokenizer.from_pretrained(model_ref)
    loaded = load_data(spec.data, spec.base_dir, max_seq_len=spec.training.max_seq_len, tokenizer=tokenizer)
    report = loaded.report.render()
    if data_report:
        say(report)

    if spec.sampler.type == "grid":
        points, line = grid_summary(spec)
        folded, trainings = fold_points(spec.search_space.grid())[1], distinct_trainings(points)
        say(line)
    else:
        points, folded, trainings = [], 0, spec.n_trials
        say(f"sampler {spec.sampler.type}: {spec.n_trials} trial(s); at most {trainings} distinct training(s)")

    est = None
    if calibrate:
        with tempfile.TemporaryDirectory(prefix="sweep-check-") as tmp:
            encoded = encode_cached(loaded, tokenizer, max_seq_len=spec.training.max_seq_len, cache_dir=Path(tmp))
            teacher_dir, cached = _teacher_for_calibration(spec, model_ref, loaded, fingerprint(loaded), Path(tmp),
                                                           teacher_cache)
            est = _calibrated_estimate(spec, teacher_dir, encoded, points, trainings, cached, workers, say)
        n_train = len(loaded.splits["train"])
        say(f"estimate: {human_seconds(est.wall_s)} wall time with {est.workers} worker(s) = "
            f"{'teacher cached' if cached else 'teacher fine-tune ' + human_seconds(est.teacher_s)} + "
            f"{est.trainings} training(s) x {planned_steps(n_train, spec.training)} steps "
            + (f"(+ {planned_steps(n_train, spec.training.model_copy(update={'epochs': spec.pruning.refill_epochs}))} "
               "of hybrid-filled retraining when pruned) " if spec.pruning.refills(1e-9) else "")
            + f"({human_seconds(est.training_s)}) + measuring ({human_seconds(est.measuring_s)}, assumed)")
    return CheckReport(points=points, folded=folded, trainings=trainings, estimate=est, data_report=report)


def check_memory_like_for_like(spec: SweepSpec) -> None:
    """Refuse deciding on memory_model_mb across runtimes: its activation part is measured two ways (torch: the
    allocator's peak; ONNX Runtime: the process RSS increase), so only memory_weights_mb compares them."""
    from trainers import metrics as M

    if len(set(spec.search_space.runtime)) < 2:
        return
    two_ways = {M.MEMORY_MODEL, M.MEMORY_ACTIVATIONS}
    fields = [f"objectives.{i}.metric" for i, o in enumerate(spec.objectives) if o.key in two_ways]
    fields += [f"constraints.{i}.metric" for i, c in enumerate(spec.constraints) if c.key in two_ways]
    fields += ["export.pick"] if spec.export.pick == "lightest" else []
    if fields:
        raise SpecError(f"{spec.source or 'sweep'}: field {fields[0]}: {M.MEMORY_MODEL} is measured two ways across "
                        f"search_space.runtime {list(spec.search_space.runtime)} (torch: allocator peak; onnxruntime: RSS "
                        f"increase), so it cannot decide between them; use {M.MEMORY_WEIGHTS} (measured the same way for "
                        "both) or a single runtime")


def check_block_size(spec: SweepSpec, model_ref: str) -> None:
    """Refuse a block side the model's heads cannot be cut into (before data or compute)."""
    from transformers import AutoConfig

    from trainers.pruning.config import block_size_problem

    ratios = spec.search_space.pruning_ratio
    prunes = any(r > 0 for r in ratios) if isinstance(ratios, list) else ratios.high > 0
    if spec.pruning.method != "block_movement" or not prunes:
        return
    config = AutoConfig.from_pretrained(model_ref)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if not hidden or not heads:
        return  # not a BERT-like encoder: the pruner names what it expected
    if (problem := block_size_problem(spec.pruning, head_size=hidden // heads, hidden_size=hidden)) is not None:
        raise SpecError(f"{spec.source or 'sweep'}: field {problem}")


def _teacher_for_calibration(spec, model_ref: str, loaded, data_fp: str, tmp: Path, cache: Path | None) -> tuple[Path, bool]:
    """The cached fine-tuned teacher when there is one; else the base encoder with a fresh head (same shapes)."""
    from transformers import AutoModelForSequenceClassification

    from trainers.precision import resolve_device
    from trainers.teacher import DONE, teacher_key

    if cache is not None:
        cached = cache / teacher_key(model_ref, spec.teacher, data_fp, spec.training.for_trial(),
                                     device=resolve_device(spec.training.device))
        if (cached / DONE).exists():
            return cached / "model", True
    labels = loaded.label_names
    model = AutoModelForSequenceClassification.from_pretrained(
        model_ref, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, ignore_mismatched_sizes=True)
    model.save_pretrained(tmp / "teacher", safe_serialization=True)
    return tmp / "teacher", False


def _calibrated_estimate(spec, teacher_dir: Path, encoded, points: list[dict], trainings: int, cached: bool,
                         workers: int, say: Say) -> Estimate:
    from trainers.calibrate import time_training_steps
    from trainers.precision import resolve_device, train_precision
    from trainers.train import planned_steps

    device = resolve_device(spec.training.device)
    ratios = _ratio_range(spec)
    precisions = sorted({train_precision(p) for p in spec.search_space.precision})
    step_seconds: dict[str, dict[float, float]] = {}
    for precision in precisions:
        timings = time_training_steps(teacher_dir, encoded["train"], spec.training, spec.pruning, ratios,
                                      precision=precision, device=device)
        step_seconds[precision] = {t.pruning_ratio: t.seconds_per_step for t in timings}
        say(f"calibration ({precision}, {device}): " + ", ".join(
            f"ratio {t.pruning_ratio:g}: {t.seconds_per_step * 1e3:.0f} ms/step" for t in timings)
            + f" ({timings[0].steps_timed} steps after {timings[0].warmup_steps} warm-up)")
    n_train = encoded["train"]["labels"].shape[0]
    steps = planned_steps(n_train, spec.training)
    if not points:  # sampled spaces: every trial trains, at the middle of the ratio range
        mid = sum(ratios) / len(ratios)
        points = [{"pruning_ratio": mid, "distill_alpha": 0.5, "distill_temperature": float(i),
                   "precision": spec.search_space.precision[i % len(spec.search_space.precision)]}
                  for i in range(1, trainings + 1)]
    teacher_steps = planned_steps(n_train, spec.training.model_copy(
        update={"epochs": spec.teacher.epochs, "batch_size": spec.teacher.batch_size}))
    teacher_s = 0.0 if cached else teacher_steps * step_seconds[precisions[0]][ratios[0]]
    # Measuring: the latency budget plus a fresh process (interpreter, imports, loading): an assumption, said so.
    measure_s = spec.measure.max_seconds + 10.0
    refill = planned_steps(n_train, spec.training.model_copy(update={"epochs": spec.pruning.refill_epochs}))
    return estimate(points, steps_per_trial=steps * spec.training.seed_policy.min, step_seconds=step_seconds, measure_s_per_trial=measure_s,
                    teacher_s=teacher_s, workers=workers,
                    refill_steps_per_trial=lambda r: refill * spec.training.seed_policy.min if spec.pruning.refills(r) else 0)


def _ratio_range(spec) -> list[float]:
    space = spec.search_space.pruning_ratio
    values = list(space) if isinstance(space, list) else [space.low, space.high]
    lo, hi = min(values), max(values)
    return sorted({0.0, float(lo), float(hi)})
